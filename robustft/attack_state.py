"""The training attacks' randomness and checkpointed state, for the engine's training context.

Every training attack (one per norm) gets its own generator on the run's device, seeded from the run's seed, the
norm and the process's rank: runs are reproducible, norms and processes draw independent streams, and an attack
that draws from it (FGSM-RS's random start) does not disturb torch's global generator, which the data
augmentation uses. Checkpoints keep each attack's :meth:`robustft.contracts.Attack.state_dict` with the random
states of the process, so a resumed run continues every stream where it stopped (docs/reliability.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from robustft.contracts import Attack
from robustft.norms import Norm


def attack_generator(seed: int, norm: Norm, device: torch.device, rank: int = 0) -> torch.Generator:
    """The generator of ``norm``'s training attack in a run seeded ``seed``, on ``device``, in process ``rank``."""
    digest = hashlib.sha256(f"robustft training attack|{int(seed)}|{norm.value}|{int(rank)}".encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little"))


def attack_states(attacks: Mapping[Norm, Attack]) -> dict[str, Any]:
    """Each built attack's state, by norm (``"inf"``, ``"2"``, ``"1"``), for a checkpoint."""
    return {norm.value: attack.state_dict() for norm, attack in attacks.items()}


def load_attack_states(states: Mapping[str, Any], attack_for: Callable[[Norm], Attack]) -> None:
    """Give back each norm's attack (built by ``attack_for`` if need be) the state :func:`attack_states` saved."""
    for key, state in states.items():
        attack_for(Norm.parse(key)).load_state_dict(state)
