"""Counting the passes through a model, for attacks that wrap code which does not count its own.

An attack reports its passes in :class:`robustft.contracts.AttackResult` (``forward_passes``, ``backward_passes``:
per image, a pass over part of the batch counting one). An attack that runs another library's code (pyautoattack
in ``plugins/robustft_plugins/suites/autoattack.py``) cannot count them itself; :func:`counted_passes` measures them with hooks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn


@dataclass
class Passes:
    """Passes through a model: calls of its forward, and gradient computations that flowed back through them."""

    forward: int = 0
    backward: int = 0


@contextlib.contextmanager
def counted_passes(model: nn.Module) -> Iterator[Passes]:
    """Count the passes through ``model`` inside the block: each call of its ``forward`` is one forward pass, and
    each gradient computation (``backward()``, ``torch.autograd.grad``) that flows back into one of those calls'
    outputs one backward pass, whatever the batch size. A forward hook on ``model`` and a gradient hook on each
    output that requires a gradient do the counting, without reading any tensor; the hooks go with the block."""
    passes = Passes()

    def on_backward(grad: Tensor) -> None:
        passes.backward += 1

    def on_forward(module: nn.Module, args: Any, output: Any) -> None:
        passes.forward += 1
        if isinstance(output, Tensor) and output.requires_grad:
            output.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    try:
        yield passes
    finally:
        handle.remove()
