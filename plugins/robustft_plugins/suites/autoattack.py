"""Full standard AutoAttack per norm through ``pyautoattack`` (``--suite autoattack``).

AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks", ICML 2020; l1 from "Mind the box", ICML 2021) in its ``standard`` version runs,
each on the points the earlier ones left robust:

1. APGD-CE (l-inf/l2: 1 restart; l1: 5 restarts and the large-radius schedule 3e, 2e, e),
2. APGD-T, targeted DLR loss (l-inf/l2: 9 target classes; l1: 5, large-radius schedule),
3. FAB-T, targeted minimum-norm attack (9 target classes),
4. Square, score-based black-box attack (5,000 queries).

This suite takes those four attacks from pyautoattack's own ``AutoAttack(model, norm=..., eps=...,
version='standard', seed=...)`` object, so every setting is pyautoattack's, and hands them to robustft's
evaluator one by one. The evaluator does what ``run_standard_evaluation`` does (each attack only on the
points still robust) and in addition checks every returned point against its ball and [0, 1] itself.
pyautoattack's standard version runs all four attacks for l1 too; robustft follows it.

``--steps`` (default 100, AutoAttack's value) sets the iterations of APGD-CE, APGD-T and FAB-T; Square
gets 50 queries per step (5,000 at 100 steps). Fewer steps make a weaker, cheaper evaluation: report it.
With fewer than 4 classes the targeted attacks are skipped (AutoAttack's targeted DLR loss needs the
fourth-largest logit); with fewer than 10 classes they use ``num_classes - 1`` targets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from robustft.plugin import Attack, AttackResult, EvalSuite, Norm, UserError, counted_passes, hookimpl

#: AutoAttack's standard attacks, in its order, with the attribute of ``AutoAttack`` that holds each.
STANDARD = (("apgd-ce", "apgd"), ("apgd-t", "apgd_targeted"), ("fab-t", "fab"), ("square", "square"))
SQUARE_QUERIES_PER_STEP = 50
_TARGETED = {"apgd-t", "fab-t"}


def import_pyautoattack() -> Any:
    try:
        import pyautoattack
    except ImportError:
        raise UserError("The autoattack suite needs the pyautoattack package: pip install 'robustft[autoattack]'.") from None
    return pyautoattack


def set_iterations(attack: Any, steps: int) -> None:
    """Give a pyautoattack APGD attack ``steps`` iterations, with the checkpoints its constructor derives."""
    attack.n_iter = attack.n_iter_orig = steps
    attack.n_iter_2 = max(int(0.22 * steps), 1)
    attack.n_iter_min = max(int(0.06 * steps), 1)
    attack.size_decr = max(int(0.03 * steps), 1)


class AutoAttackComponent(Attack):
    """One of standard AutoAttack's attacks as a robustft :class:`Attack` (built for the model it is called on)."""

    def __init__(self, label: str, norm: Norm, eps: float, *, steps: int, seed: int, num_classes: int) -> None:
        self.label, self.norm, self.eps = label, norm, eps
        self.steps, self.seed, self.num_classes = steps, seed, num_classes
        self._built: tuple[int, str, Any] | None = None

    def _attack_for(self, model: nn.Module, device: torch.device) -> Any:
        key = (id(model), str(device))
        if self._built is None or self._built[:2] != key:
            pyautoattack = import_pyautoattack()
            suite = pyautoattack.AutoAttack(
                model, norm=self.norm.autoattack_name, eps=self.eps, version="standard", device=device, seed=self.seed
            )
            attack = getattr(suite, dict(STANDARD)[self.label])
            targets = min(9, self.num_classes - 1)
            if self.label == "apgd-t":
                attack.n_target_classes = min(attack.n_target_classes, targets)
            if self.label == "fab-t":
                attack.n_target_classes = min(attack.n_target_classes, targets)
                attack.targeted, attack.n_restarts = True, 1  # what run_standard_evaluation sets before FAB-T
                attack.n_iter = self.steps
            elif self.label == "square":
                attack.n_queries = SQUARE_QUERIES_PER_STEP * self.steps
            else:
                set_iterations(attack, self.steps)
            if self.label == "apgd-ce":
                attack.loss = "ce"
            attack.seed = self.seed
            self._built = (*key, attack)
        return self._built[2]

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        attack = self._attack_for(model, x.device)
        with counted_passes(model) as passes:  # pyautoattack does not report its passes: measure them
            with torch.enable_grad():
                x_adv = attack.perturb(x, y).detach()
            with torch.no_grad():
                wrong = model(x_adv).argmax(1) != y
        # AutoAttack optimises different objectives per attack; the evaluator needs only x_adv.
        return AttackResult(
            x_adv=x_adv,
            loss=torch.zeros(x.shape[0], device=x.device),
            success=wrong,
            forward_passes=passes.forward,
            backward_passes=passes.backward,
        )


class AutoAttackSuite(EvalSuite):
    """Standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) per norm, from pyautoattack."""

    name = "autoattack"
    description = "full standard AutoAttack per norm via pyautoattack: APGD-CE, APGD-T, FAB-T, Square"
    aliases = ("aa",)

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        import_pyautoattack()
        norm = Norm.parse(norm)
        labels = [label for label, _ in STANDARD if num_classes >= 4 or label not in _TARGETED]
        return [(label, AutoAttackComponent(label, norm, eps, steps=steps, seed=seed, num_classes=num_classes)) for label in labels]


@hookimpl
def register_suites(register: Callable[[Any], None]) -> None:
    register(AutoAttackSuite())
