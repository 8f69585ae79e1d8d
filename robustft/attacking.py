"""Running a suite's attacks on the points still robust, with every adversarial point checked.

For one norm and radius the suite's attacks run one after the other, each only on the points no earlier attack
broke. A point counts as broken only when the evaluator itself has checked that the returned point lies in its
lp ball and in [0, 1] (:func:`robustft.lp.check_in_ball_and_box`) and that the model misclassifies it; a point
outside is projected onto both (:func:`valid_adversarial`) and counted as ``invalid``, or refused under
``strict`` (:class:`InvalidPointsError`). Under ``torchrun`` the batches are dealt round-robin over the ranks and
the outcomes summed after each attack (see :mod:`robustft.evaluation`). :func:`sweep_radii` measures a radius
sweep from the largest radius down. :func:`robustft.evaluation.evaluate_model` is the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from fractions import Fraction

import torch
from torch import Tensor, nn

from robustft import distributed
from robustft.contracts import EvalSuite
from robustft.errors import UserError
from robustft.lp import check_in_ball_and_box, project
from robustft.norms import Norm, format_radius
from robustft.progress import ProgressReporter
from robustft.registry import Registries
from robustft.sweep import Curve

log = logging.getLogger("robustft")


class InvalidPointsError(UserError):
    """Under ``strict``, an attack returned points outside their ball or [0, 1]."""


def valid_adversarial(x_adv: Tensor, x: Tensor, norm: Norm, radius: float) -> tuple[Tensor, Tensor]:
    """``x_adv`` with every point outside its ball or the box projected onto both, and the mask of the points
    that needed it. Non-finite coordinates are replaced by the clean ones before projecting."""
    valid = check_in_ball_and_box(x_adv, x, norm, radius)
    if bool(valid.all()):
        return x_adv, ~valid
    delta = torch.nan_to_num(x_adv - x, nan=0.0, posinf=0.0, neginf=0.0)
    projected = (x + project(delta, x, norm, radius)).clamp(0.0, 1.0)
    fixed = torch.where(valid.view(-1, *[1] * (x.dim() - 1)), x_adv, projected)
    return fixed, ~valid


class Attacker:
    """Runs a suite's attacks for one norm and radius on a set of the test points, checking every point."""

    def __init__(
        self,
        model: nn.Module,
        x_all: Tensor,
        y_all: Tensor,
        *,
        suite: EvalSuite,
        registries: Registries,
        num_classes: int,
        steps: int,
        batch_size: int,
        device: torch.device,
        seed: int,
        name: str,
        progress: ProgressReporter,
        channels_last: bool,
        strict: bool,
    ) -> None:
        self.model, self.x_all, self.y_all, self.n = model, x_all, y_all, len(y_all)
        self.suite, self.registries, self.num_classes, self.steps = suite, registries, num_classes, steps
        self.batch_size, self.device, self.seed, self.name = batch_size, device, seed, name
        self.progress, self.channels_last, self.strict = progress, channels_last, strict

    def run(
        self, norm: Norm, radius: Fraction, still: Tensor, within: Sequence[Fraction] = (), tag: str = ""
    ) -> tuple[Tensor, int, Tensor]:
        """``(robust, invalid, fits)``: the points of ``still`` that every attack left correctly classified, the
        number of adversarial points that needed projecting, and per point and radius of ``within`` whether the
        point's verified adversarial point lies in that (smaller) ball as well."""
        still, n = still.clone(), self.n
        fits = torch.zeros(n, len(within), dtype=torch.bool)
        invalid = 0
        attacks = self.suite.attacks(
            norm, float(radius), num_classes=self.num_classes, steps=self.steps, seed=self.seed, registry=self.registries.attacks
        )
        for label, attack in attacks:
            idx = still.nonzero().flatten()
            if idx.numel() == 0:
                break
            torch.manual_seed(self.seed)
            # The batches one process would form, dealt round-robin over the ranks (one rank: all).
            mine = distributed.shard_round_robin(idx.split(self.batch_size))
            broken = torch.zeros(n, dtype=torch.bool)
            outside = torch.zeros(1, dtype=torch.int64)
            self.progress.start(f"{self.name} {norm.label}{tag} {label}", len(mine))
            for part in mine:
                x, y = self.x_all[part].to(self.device), self.y_all[part].to(self.device)
                if self.channels_last and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                x_adv, projected = valid_adversarial(attack(self.model, x, y).x_adv.detach(), x, norm, float(radius))
                with torch.no_grad():
                    wrong = self.model(x_adv).argmax(1).cpu() != y.cpu()
                broken[part[wrong]] = True
                for k, smaller in enumerate(within):  # the same check as above, against each smaller ball
                    inside = check_in_ball_and_box(x_adv, x, norm, float(smaller)).cpu()
                    fits[part[wrong & inside], k] = True
                outside += projected.sum().cpu()
                self.progress.advance({"robust": f"{int((still & ~broken).sum())}/{n}"})
            self.progress.stop()
            still &= ~(distributed.all_reduce_sum(broken) > 0)
            count = int(distributed.all_reduce_sum(outside))
            invalid += count
            if count and self.strict:
                raise InvalidPointsError(
                    f"Attack {label!r} returned {count} point(s) outside the {norm.label} ball of radius "
                    f"{format_radius(radius)} or [0, 1] for {self.name} (--strict)."
                )
        if len(within):
            fits = distributed.all_reduce_sum(fits) > 0
        return still, invalid, fits


def warn_invalid(name: str, norm: Norm, count: int, where: str = "") -> None:
    if count and distributed.is_main():
        log.warning(
            "%s: %d adversarial point(s) in %s%s lay outside the ball or [0, 1]; they were projected onto both "
            "and counted as the projected points classify.",
            name,
            count,
            norm.label,
            where,
        )


def sweep_radii(
    attacker: Attacker, norm: Norm, radii: Sequence[Fraction], clean: Tensor, broken_at: tuple[Fraction, Tensor] | None = None
) -> tuple[Curve, dict[Fraction, Tensor]]:
    """Robust accuracy at each radius, attacking from the largest radius down.

    The balls are nested, so two facts cut the work. (1) A point whose verified adversarial point from a larger
    radius also lies in a smaller ball (checked with :func:`robustft.lp.check_in_ball_and_box`) is broken there
    too: certain, no attack needed; so is a point ``broken_at`` a radius (by the main evaluation, at ``--eps``)
    at every radius at least as large, which keeps the curve from showing more robustness there than the table.
    (2) A point the attacks could not break at a larger radius is counted robust at every smaller one without
    attacking it again. (2) is an assumption about the attack, not a fact: it holds for an exact verifier and
    for an attack that is at least as strong in a larger ball, which the suite's attacks are meant to be (APGD's
    search space grows with the radius) but do not prove; where it fails, the curve overstates robust accuracy
    at the smaller radius by the points an attack there alone would break. Only the points broken at a radius
    and not settled by (1) are attacked at the next smaller one.

    Also returns, per radius, the points broken there: a point broken within a ball no larger than ``--eps`` is
    broken at ``--eps`` too, which :func:`evaluate_model` carries into the table.
    """
    start = time.perf_counter()
    descending = sorted(radii, reverse=True)
    candidates = clean.clone()  # points to attack at the current radius
    known: Tensor | None = None  # per point and remaining radius: broken there already, by a point found earlier
    robust: dict[Fraction, float] = {}
    broken: dict[Fraction, Tensor] = {}
    attacked: dict[Fraction, int] = {}
    invalid = 0
    for i, radius in enumerate(descending):
        settled = known[:, 0] if known is not None else torch.zeros_like(clean)
        if broken_at is not None and radius >= broken_at[0]:
            settled = settled | (candidates & broken_at[1])
        to_attack = candidates & ~settled
        attacked[radius] = int(to_attack.sum())
        survived, count, fits = attacker.run(norm, radius, to_attack, within=descending[i + 1 :], tag=f" r={format_radius(radius)}")
        invalid += count
        # robust here: robust at the larger radius (never attacked again), plus those that survived this one
        robust_now = (clean & ~candidates) | survived
        robust[radius] = float(robust_now.float().mean())
        broken_now = clean & ~robust_now
        broken[radius] = broken_now
        candidates = broken_now
        rest = known[:, 1:] if known is not None else torch.zeros(len(clean), len(descending) - i - 1, dtype=torch.bool)
        known = rest | fits
    warn_invalid(attacker.name, norm, invalid, " (radius sweep)")
    ascending = sorted(radii)
    curve = Curve(
        norm=norm,
        radii=tuple(ascending),
        robust=tuple(robust[r] for r in ascending),
        attacked=tuple(attacked[r] for r in ascending),
        invalid=invalid,
        seconds=time.perf_counter() - start,
    )
    return curve, broken
