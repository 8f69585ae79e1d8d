"""Outer losses: what a scheme minimises at the adversarial points its attacks found.

* ``ce``: the cross-entropy at the adversarial point (Madry et al. 2018), per point.
* ``trades``: TRADES (Zhang et al. 2019, Eq. 5 there): ``CE(f(x), y) + beta * KL(p(x) || p(x_adv))`` per
  point, with ``beta`` = ``--trades-beta`` (6 by default). The adversarial points still come from the run's
  attack maximising the cross-entropy, which makes it the "TRADES-XENT" loss of Gowal et al. (2020) that
  the E-AT paper uses to train WideResNet-28-10 from scratch.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from robustft.errors import BadInputError

OUTER_LOSSES = ("ce", "trades")


def trades_kl(logits_clean: Tensor, logits_adv: Tensor) -> Tensor:
    """``KL(p_clean || p_adv)`` per point (summed over classes)."""
    log_p = F.log_softmax(logits_clean, dim=1)
    log_q = F.log_softmax(logits_adv, dim=1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=1)


def outer_loss(kind: str, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor, beta: float = 6.0) -> Tensor:
    """Per-point outer loss of kind ``ce`` or ``trades`` (the model is in train mode)."""
    if kind == "ce":
        return F.cross_entropy(model(x_adv), y, reduction="none")
    if kind == "trades":
        logits_clean = model(x)
        logits_adv = model(x_adv)
        return F.cross_entropy(logits_clean, y, reduction="none") + beta * trades_kl(logits_clean, logits_adv)
    raise BadInputError(f"Unknown outer loss {kind!r}: choose one of {', '.join(OUTER_LOSSES)}.")
