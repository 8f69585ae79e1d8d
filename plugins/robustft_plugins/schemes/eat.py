"""E-AT: extreme norms adversarial training (Croce & Hein, ICLR 2022 / ICML 2022, Sec. 3.2).

For each batch E-AT attacks in *one* norm only, so it costs what single-norm adversarial training
costs. With the default norms l1 and l-inf it never attacks in l2: by Thm. 3.1 a (locally affine)
classifier robust in the l1 and l-inf balls is robust in the l2 ball inside their convex hull (see
:mod:`robustft.geometry` and ``robustft geometry``).

The norm of each batch is drawn with probability (Eq. 5)

    P(p) = rerr_p / sum_q rerr_q,

where ``rerr_p`` is the running average of the robust training error (the fraction of points some
attack iterate misclassified) over the batches attacked in p. Two variants of the running average:

* ``sampling=paper`` (default): reset at every epoch, as the paper says. Within an epoch, until every
  norm has been drawn once, the norm is drawn uniformly (there is no error to compare yet).
* ``sampling=cumulative``: the authors' reference code, which never resets the averages; it draws
  uniformly until every norm has been drawn once in the whole run.

When every running error is 0 the draw is uniform. Under torchrun the errors are summed over the
processes (``TrainContext.reduce_sum``) and the draw uses the scheme generator, seeded alike on every
process, so all processes attack in the same norm at every step. ``e-at-uniform`` always draws uniformly ("E-AT unif."
in Table 1 of the paper). Any set of norms may be given (``--norms 1,2,inf``); the loss is the
cross-entropy at the adversarial point.
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from robustft.plugin import BadInputError, Norm, Scheme, SchemeOptions, TrainContext, format_radius, hookimpl, l2_radius_hull, option


class EAT(Scheme):
    name = "e-at"
    aliases = ("eat",)
    description = "extreme norms AT: one attack per batch, l1 or l-inf drawn by robust error (Eq. 5)"
    default_norms = (Norm.LINF, Norm.L1)

    class Options(SchemeOptions):
        sampling: str = option(
            "paper",
            choices=("paper", "cumulative"),
            help="how the running robust errors are kept: 'paper' resets them every epoch, 'cumulative' keeps them for the whole run",
        )

    options: Options

    def __init__(self, norms, **options: Any) -> None:
        super().__init__(norms, **options)
        self.errors = {n: 0.0 for n in self.norms}  # sum over attacked points of "attack succeeded"
        self.counts = {n: 0 for n in self.norms}  # attacked points per norm

    def threat_model_warnings(self, eps: Mapping[Norm, Fraction], dim: int) -> list[str]:
        """E-AT leaves out l2 because the l2 ball inside the hull of the l1 and l-inf balls covers the
        threat model's (Thm. 3.1); say so when it does not (MNIST's defaults: 1.74 < 2)."""
        trained = set(self.norms)
        if len(trained) == 1:  # legal, but nothing is sampled: it is single-norm adversarial training
            (only,) = trained
            return [
                f"E-AT with the single norm {only.label} draws nothing: it is {only.label} adversarial training "
                f"(--scheme l{only.value}-at); give two norms or more (default 1,inf) for E-AT."
            ]
        if Norm.L2 in trained or not {Norm.L1, Norm.LINF} <= trained or Norm.L2 not in eps:
            return []
        try:
            hull = l2_radius_hull(eps[Norm.L1], eps[Norm.LINF], dim)
        except BadInputError:  # one ball contains the other: no hull to speak of
            return []
        if hull >= eps[Norm.L2]:
            return []
        return [
            f"E-AT trains on l1 and l-inf only, but the l2 ball inside their convex hull has radius {hull:.3g}, "
            f"below the l2 radius {format_radius(eps[Norm.L2])} of the threat model (E-AT Thm. 3.1): "
            "use --scheme max or --norms 1,2,inf to train on l2 as well."
        ]

    def robust_errors(self) -> dict[Norm, float | None]:
        return {n: (self.errors[n] / self.counts[n] if self.counts[n] else None) for n in self.norms}

    def probabilities(self) -> dict[Norm, float]:
        """The sampling distribution of Eq. 5 for the current running averages."""
        rerr = self.robust_errors()
        total = sum(v for v in rerr.values() if v is not None)
        if any(v is None for v in rerr.values()) or total <= 0:
            return {n: 1.0 / len(self.norms) for n in self.norms}
        return {n: float(rerr[n]) / total for n in self.norms}

    def on_epoch_start(self, ctx: TrainContext) -> None:
        if self.options.sampling == "paper":
            self.errors = {n: 0.0 for n in self.norms}
            self.counts = {n: 0 for n in self.norms}

    def draw(self, ctx: TrainContext) -> Norm:
        probs = self.probabilities()
        weights = torch.tensor([probs[n] for n in self.norms], dtype=torch.float64)
        index = int(torch.multinomial(weights, 1, generator=ctx.rng))
        return self.norms[index]

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, Any]]:
        norm = self.draw(ctx)
        attack = ctx.attack(norm, x, y)
        # Summed over the processes of a distributed run, so that every rank draws the next norm alike.
        broken, attacked = ctx.global_sums(attack.success.sum(), x.shape[0])
        self.errors[norm] += broken
        self.counts[norm] += int(attacked)
        loss = ctx.adversarial_loss(model, x, attack.x_adv, y).mean()
        logs: dict[str, Any] = {"norm": norm.value, "rerr_batch": broken / attacked}
        for n, value in self.robust_errors().items():
            if value is not None:
                logs[f"rerr_{n.value}"] = value
        return loss, logs

    def on_epoch_end(self, ctx: TrainContext) -> dict[str, Any]:
        return {
            "rerr": {n.value: v for n, v in self.robust_errors().items()},
            "attacked_points": {n.value: c for n, c in self.counts.items()},
            "probabilities": {n.value: p for n, p in self.probabilities().items()},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"errors": {n.value: v for n, v in self.errors.items()}, "counts": {n.value: c for n, c in self.counts.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.errors = {n: float(state["errors"][n.value]) for n in self.norms}
        self.counts = {n: int(state["counts"][n.value]) for n in self.norms}


class EATUniform(EAT):
    name = "e-at-uniform"
    aliases = ("eat-uniform",)
    description = "E-AT with the norm of each batch drawn uniformly ('E-AT unif.' in the paper)"
    Options = SchemeOptions  # no sampling option: the draw ignores the errors

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """The running errors (logged only) are kept for the whole run, as E-AT's ``sampling=cumulative``."""

    def probabilities(self) -> dict[Norm, float]:
        return {n: 1.0 / len(self.norms) for n in self.norms}


@hookimpl
def register_schemes(register) -> None:
    register(EAT)
    register(EATUniform)
