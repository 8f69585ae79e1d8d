"""FGSM with a random start (Wong, Rice & Kolter, "Fast is better than free: revisiting adversarial
training", ICLR 2020, Alg. 3), registered as ``fgsm-rs``; l-inf only.

From ``delta ~ U[-eps, eps]^d`` (clipped so that ``x + delta`` is in [0, 1]) it takes one step of size
``alpha`` (default ``1.25 * eps``, the paper's choice) along the sign of the cross-entropy gradient, then
projects onto the l-inf ball and the box. One forward and one backward pass find the step; one more forward
pass gives the loss and the per-point success at the returned point (``success``: misclassified there). It
is the cheap training attack behind fast adversarial training; as a per-norm training attack
(``--attack inf=fgsm-rs --attack 1=apgd``) it serves l-inf while another family serves the other norms.
Steps are ignored (the attack has one). The random start draws from the attack's generator
(:meth:`robustft.plugin.Attack.generator`): in training the one the context seeds from the run's seed and
saves in checkpoints, so a resumed run draws the starts the uninterrupted one would have.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from robustft.plugin import Attack, AttackFactory, AttackResult, BadInputError, Norm, hookimpl, project

DEFAULT_ALPHA = 1.25  # times eps (Wong et al. 2020, Sec. 4)


class FGSMRandomStart(Attack):
    """One signed-gradient step of ``alpha * eps`` from a uniform random start, in the l-inf ball and [0, 1]."""

    norm = Norm.LINF

    def __init__(self, eps: float, alpha: float = DEFAULT_ALPHA) -> None:
        self.eps, self.alpha = float(eps), float(alpha)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        noise = torch.rand(x.shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
        start = (noise * 2 - 1) * self.eps
        delta = project(start, x, Norm.LINF, self.eps).requires_grad_(True)
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
        delta = project(delta.detach() + self.alpha * self.eps * grad.sign(), x, Norm.LINF, self.eps)
        x_adv = x + delta
        with torch.no_grad():
            logits = model(x_adv)
            point_loss = nn.functional.cross_entropy(logits, y, reduction="none")
        # One forward and one backward pass for the step, one forward pass for the loss and success at x_adv.
        return AttackResult(x_adv=x_adv.detach(), loss=point_loss, success=logits.argmax(1) != y, forward_passes=2, backward_passes=1)


class FGSMRandomStartFactory(AttackFactory):
    """Builds :class:`FGSMRandomStart`; option ``alpha`` (the step as a multiple of eps, default 1.25)."""

    name = "fgsm-rs"
    description = "FGSM with a random start (Wong et al. 2020): one l-inf step of 1.25 eps; fast adversarial training"
    norms = (Norm.LINF,)
    options = {"alpha": f"the step as a multiple of eps (a positive number, default {DEFAULT_ALPHA})"}

    def build(self, norm: Norm, eps: float, *, steps: int, purpose: str = "train", **options: Any) -> FGSMRandomStart:
        if Norm.parse(norm) is not Norm.LINF:
            raise BadInputError(f"Attack 'fgsm-rs' is for the l-inf norm only, not {Norm.parse(norm).label}.")
        self.check_options(options)
        alpha = options.get("alpha", DEFAULT_ALPHA)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or alpha <= 0:
            raise BadInputError(f"The fgsm-rs option alpha must be a positive number, got {alpha!r}.")
        return FGSMRandomStart(eps, float(alpha))


@hookimpl
def register_attacks(register: Callable[[Any], None]) -> None:
    register(FGSMRandomStartFactory())
