"""Single-norm adversarial training (``lp-at``) and natural training (``clean``).

``lp-at`` is the adversarial training of Madry et al. (2018) in one lp norm: the loss of a batch is the
cross-entropy at the adversarial point of the training attack. Fine-tuning a model robust in lp with
``lp-at`` in another norm lq is Sec. 4 of the E-AT paper (Croce & Hein 2022). ``clean`` minimises the
cross-entropy on the unperturbed batch.

``linf-at``, ``l2-at`` and ``l1-at`` are ``lp-at`` with the norm fixed (``--scheme l1-at`` rather than
``--scheme lp-at --norms 1``), the "lp-AT" rows of the E-AT paper's tables.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from robustft.plugin import BadInputError, Norm, Scheme, TrainContext, hookimpl


class LpAT(Scheme):
    name = "lp-at"
    description = "adversarial training in a single lp norm (choose it with --norms)"
    default_norms = (Norm.LINF,)

    def __init__(self, norms, **options: Any) -> None:
        super().__init__(norms, **options)
        if len(self.norms) != 1:
            raise BadInputError(
                f"Scheme 'lp-at' trains in exactly one norm, got {','.join(n.value for n in self.norms)}; "
                "use e-at, sat, avg or max for several."
            )

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, Any]]:
        (norm,) = self.norms
        attack = ctx.attack(norm, x, y)
        broken, attacked = ctx.global_sums(attack.success.sum(), x.shape[0])
        return ctx.adversarial_loss(model, x, attack.x_adv, y).mean(), {"norm": norm.value, f"rerr_{norm.value}": broken / attacked}


class _FixedNormAT(LpAT):
    """``lp-at`` in one fixed norm; ``--norms`` may repeat that norm but not name another."""

    fixed: Norm

    def __init__(self, norms, **options: Any) -> None:
        if tuple(norms) != (self.fixed,):
            raise BadInputError(
                f"Scheme {self.name!r} trains in {self.fixed.label} only, got --norms {','.join(n.value for n in norms)}; "
                "use lp-at with --norms to choose the norm."
            )
        super().__init__(norms, **options)


class LinfAT(_FixedNormAT):
    name = "linf-at"
    description = "adversarial training in l-inf (lp-at with the norm fixed)"
    fixed = Norm.LINF
    default_norms = (Norm.LINF,)


class L2AT(_FixedNormAT):
    name = "l2-at"
    description = "adversarial training in l2 (lp-at with the norm fixed)"
    fixed = Norm.L2
    default_norms = (Norm.L2,)


class L1AT(_FixedNormAT):
    name = "l1-at"
    description = "adversarial training in l1 (lp-at with the norm fixed)"
    fixed = Norm.L1
    default_norms = (Norm.L1,)


class Clean(Scheme):
    name = "clean"
    aliases = ("natural",)
    description = "natural training on unperturbed images (no attack)"
    default_norms = ()
    min_norms = 0

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, Any]]:
        logits = model(x)
        wrong, n = ctx.global_sums((logits.argmax(1) != y).sum(), x.shape[0])  # over every process
        return F.cross_entropy(logits, y), {"err": wrong / n}


@hookimpl
def register_schemes(register) -> None:
    register(LpAT)
    register(LinfAT)
    register(L2AT)
    register(L1AT)
    register(Clean)
