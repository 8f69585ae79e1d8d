"""Single-norm adversarial training (``lp-at``) and natural training (``clean``).

``lp-at`` is the adversarial training of Madry et al. (2018) in one lp norm: the loss of a batch is the
cross-entropy at the adversarial point of the training attack. Fine-tuning a model robust in lp with
``lp-at`` in another norm lq is Sec. 4 of the E-AT paper (Croce & Hein 2022). ``clean`` minimises the
cross-entropy on the unperturbed batch.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn import functional as F

from robustft.contracts import Scheme, TrainContext
from robustft.errors import BadInputError
from robustft.hookspecs import hookimpl
from robustft.norms import Norm


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
        return ctx.adversarial_loss(model, x, attack.x_adv, y).mean(), {"norm": norm.value, f"rerr_{norm.value}": float(attack.success.float().mean())}


class Clean(Scheme):
    name = "clean"
    aliases = ("natural",)
    description = "natural training on unperturbed images (no attack)"
    default_norms = ()
    min_norms = 0

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, Any]]:
        logits = model(x)
        return F.cross_entropy(logits, y), {"err": float((logits.argmax(1) != y).float().mean())}


@hookimpl
def register_schemes(register) -> None:
    register(LpAT)
    register(Clean)
