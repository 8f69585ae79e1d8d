"""MSD: adversarial training with multi steepest descent (Maini, Wong & Kolter, ICML 2020,
"Adversarial robustness against the union of multiple perturbation models", Alg. 2).

The attack maximises the cross-entropy over the union of the balls ``B_p(eps_p)`` of the training norms
with *one* gradient per step. From the current perturbation ``delta_t`` and ``g = grad_delta CE(x + delta_t)``
it forms one candidate per norm ``p`` (Maini et al. Eq. 6-8, each the steepest-ascent step of that norm)::

    l-inf: delta_t + a_inf * sign(g)
    l2:    delta_t + a_2 * g / ||g||_2
    l1:    delta_t + a_1 * u,  u = sign(g) on the top-k coordinates of |g|, scaled to ||u||_1 = 1, skipping the
           coordinates at the box edge the gradient points past (a step there would be clipped away)

and projects each onto its own ball intersected with ``[0, 1]`` (:func:`robustft.lp.project`; exact for l1).
Per point it keeps the candidate with the highest loss (Eq. 9, ``delta_{t+1} = argmax_p CE(x + delta_p)``),
and it returns, per point, the iterate with the highest loss seen (the start ``delta_0 = 0`` included). The
training loss is the run's outer loss at that point (``--outer-loss``). Every iterate lies in ``[0, 1]`` and in
the ball of the norm whose step produced it, hence in the union.

Cost per step: one forward and one backward pass for the gradient plus one forward pass per candidate, so
``steps * (1 + |P|)`` forward and ``steps`` backward passes per batch: with three norms about twice the cost
of single-norm adversarial training (E-AT Sec. 2), against three times for AVG and MAX.

Step sizes. Maini et al.'s CIFAR-10 code runs 50 steps with ``a_inf = 0.005`` (eps 0.03), ``a_2 = 0.05``
(eps 0.5) and an l1 step of length 1 on 5 to 20 coordinates (eps 12), i.e. total travel of about 8, 5 and 4
radii. robustft trains with ``--attack-steps`` (10 by default), so each step is ``travel_p * eps_p / steps``
with ``travel`` = 2.5 radii for l-inf and l1 and 10/3 for l2 (options ``travel-inf``, ``travel-2``,
``travel-1``). At 10 steps that is eps/4 for l-inf and eps/3 for l2, the PGD step sizes the E-AT authors used
for their MSD baseline (E-AT App. A), and eps/4 for l1. The l1 direction uses the top ``l1-topk`` = 5% of the
coordinates, the sparsity of the E-AT authors' l1 training attack, rather than Maini's 5-20 coordinates out of
3072 (0.2-0.7%): the E-AT paper (Sec. 3.3) reports that Maini's l1 variant trained markedly worse, and used
SLIDE's top-percentile l1 step instead. Maini's setting is ``--option l1-topk=0.005``. Unlike Maini's code,
there is no random restart and the start point counts as an iterate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from robustft.plugin import BadInputError, Norm, Scheme, SchemeOptions, TrainContext, hookimpl, option, project, step_for

#: Default total travel per norm, in radii (each of the ``steps`` steps moves ``travel * eps / steps``).
DEFAULT_TRAVEL = {Norm.LINF: 2.5, Norm.L2: 10.0 / 3.0, Norm.L1: 2.5}
DEFAULT_L1_TOPK = 0.05


@dataclass
class MSDResult:
    """The best iterate per point and what the attack saw on the way."""

    x_adv: Tensor
    loss: Tensor  # per-point cross-entropy at x_adv
    success: Tensor  # per point: some iterate was misclassified
    steps_taken: Tensor  # (len(norms),): how many point-steps each norm's candidate won
    forward_passes: int
    backward_passes: int


class MultiSteepestDescent:
    """Maini et al.'s MSD attack over the union of ``B_p(eps[p])`` for the given norms."""

    def __init__(
        self,
        eps: Mapping[Norm, float],
        steps: int,
        *,
        norms: Sequence[Norm] | None = None,
        travel: Mapping[Norm, float] | None = None,
        l1_topk: float = DEFAULT_L1_TOPK,
        edge_gap: float = 0.0,
    ) -> None:
        self.norms = tuple(norms or eps)
        missing = [n for n in self.norms if n not in eps]
        if missing:
            raise BadInputError(f"MSD has no radius for norm {missing[0]}: give one with --eps {missing[0]}=RADIUS.")
        if steps < 1:
            raise BadInputError(f"MSD needs at least one step, got {steps}.")
        self.eps = {n: float(eps[n]) for n in self.norms}
        self.steps = int(steps)
        travel = {**DEFAULT_TRAVEL, **(travel or {})}
        self.step_size = {n: travel[n] * self.eps[n] / self.steps for n in self.norms}
        self.l1_topk = float(l1_topk)
        self.edge_gap = float(edge_gap)

    def candidates(self, x: Tensor, delta: Tensor, grad: Tensor) -> list[Tensor]:
        """One steepest-ascent candidate per norm (in ``self.norms`` order), each in its ball and ``[0, 1]``."""
        out = []
        for norm in self.norms:
            stepper = step_for(norm)
            if norm is Norm.L1:
                move = stepper.step(
                    grad, self.step_size[norm], topk=self.l1_topk, x_adv=x + delta, skip_box_edge=True, edge_gap=self.edge_gap
                )
            else:
                move = stepper.step(grad, self.step_size[norm])
            out.append(project(delta + move, x, norm, self.eps[norm]))
        return out

    @staticmethod
    def choose(candidates: Sequence[Tensor], losses: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per point the candidate with the highest loss: ``(delta, loss, winner index)``; ``losses`` is ``(k, N)``."""
        best_loss, winner = losses.max(dim=0)
        stacked = torch.stack(list(candidates))  # (k, N, ...)
        delta = stacked[winner, torch.arange(stacked.shape[1], device=stacked.device)]
        return delta, best_loss, winner

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> MSDResult:
        """Attack ``(x, y)``; the caller sets the model's mode (eval while attacking, see :class:`MSD`)."""
        n = x.shape[0]
        delta = torch.zeros_like(x)
        loss, grad, wrong = self._loss_and_grad(model, x, delta, y)
        best_delta, best_loss, success = delta.clone(), loss, wrong
        steps_taken = torch.zeros(len(self.norms), dtype=torch.long, device=x.device)
        forward, backward = 1, 1
        for t in range(self.steps):
            cands = self.candidates(x, delta, grad)
            with torch.no_grad():
                logits = [model(x + c) for c in cands]
            forward += len(cands)
            losses = torch.stack([F.cross_entropy(z, y, reduction="none") for z in logits])
            delta, loss, winner = self.choose(cands, losses)
            predicted = torch.stack([z.argmax(dim=1) for z in logits])[winner, torch.arange(n, device=x.device)]
            success = success | (predicted != y)
            steps_taken += torch.bincount(winner, minlength=len(self.norms))  # on the device: no wait per step
            improved = loss > best_loss
            best_delta = torch.where(improved.view(-1, *([1] * (x.dim() - 1))), delta, best_delta)
            best_loss = torch.where(improved, loss, best_loss)
            if t + 1 < self.steps:
                _, grad, _ = self._loss_and_grad(model, x, delta, y)
                forward, backward = forward + 1, backward + 1
        return MSDResult(
            x_adv=(x + best_delta).detach(),
            loss=best_loss.detach(),
            success=success,
            steps_taken=steps_taken,
            forward_passes=forward,
            backward_passes=backward,
        )

    @staticmethod
    def _loss_and_grad(model: nn.Module, x: Tensor, delta: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-point CE at ``x + delta``, its gradient in ``delta`` (parameters' ``.grad`` untouched), misclassified."""
        with torch.enable_grad():
            d = delta.detach().requires_grad_(True)
            logits = model(x + d)
            loss = F.cross_entropy(logits, y, reduction="none")
            (grad,) = torch.autograd.grad(loss.sum(), d)
        return loss.detach(), grad.detach(), logits.argmax(dim=1) != y


class MSD(Scheme):
    name = "msd"
    description = "MSD (Maini et al. 2020): one attack over the union, per step the best of the l-inf/l2/l1 steps"
    own_attack = True  # its steepest descent over the union, not the per-norm training attacks
    default_norms = (Norm.LINF, Norm.L2, Norm.L1)

    class Options(SchemeOptions):
        travel_inf: float = option(DEFAULT_TRAVEL[Norm.LINF], range="(0, inf)", help="total l-inf step length in radii")
        travel_2: float = option(DEFAULT_TRAVEL[Norm.L2], range="(0, inf)", help="total l2 step length in radii")
        travel_1: float = option(DEFAULT_TRAVEL[Norm.L1], range="(0, inf)", help="total l1 step length in radii")
        l1_topk: float = option(DEFAULT_L1_TOPK, range="(0, 1]", help="fraction of coordinates the l1 step moves")

    options: Options

    def __init__(self, norms: Sequence[Norm], **options: Any) -> None:
        super().__init__(norms, **options)
        self.travel = {Norm.LINF: self.options.travel_inf, Norm.L2: self.options.travel_2, Norm.L1: self.options.travel_1}
        self._reset()

    def _reset(self) -> None:
        self.errors, self.count = 0.0, 0
        self.steps_taken = {n: 0 for n in self.norms}

    def on_epoch_start(self, ctx: TrainContext) -> None:
        self._reset()

    def attack(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> MSDResult:
        """Run MSD with the model in eval mode (BatchNorm frozen), restoring its mode after, and count the passes."""
        attack = MultiSteepestDescent(ctx.eps, ctx.attack_steps, norms=self.norms, travel=self.travel, l1_topk=self.options.l1_topk)
        model = ctx.attack_view(model)  # not through DDP's gradient hooks
        was_training = model.training
        model.eval()
        try:
            with ctx.attack_autocast():
                result = attack(model, x, y)
        finally:
            model.train(was_training)
        ctx.count_passes(result.forward_passes, result.backward_passes, images=x.shape[0], attack=True)
        return result

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, Any]]:
        result = self.attack(model, x, y, ctx)
        # Statistics over every process of a distributed run (one reduction per batch).
        broken, attacked, *steps = ctx.global_sums(result.success.sum(), x.shape[0], result.steps_taken)
        self.errors += broken
        self.count += int(attacked)
        for norm, taken in zip(self.norms, steps):
            self.steps_taken[norm] += int(taken)
        loss = ctx.adversarial_loss(model, x, result.x_adv, y).mean()
        total = max(sum(steps), 1.0)
        logs: dict[str, Any] = {"rerr_batch": broken / attacked, "rerr_union": self.errors / self.count}
        for norm, taken in zip(self.norms, steps):
            logs[f"step_{norm.value}"] = taken / total
        return loss, logs

    def on_epoch_end(self, ctx: TrainContext) -> dict[str, Any]:
        total = sum(self.steps_taken.values())
        return {
            "rerr_union": self.errors / self.count if self.count else None,
            "steps_taken": {n.value: (c / total if total else None) for n, c in self.steps_taken.items()},
        }

    def state_dict(self) -> dict[str, Any]:
        return {"errors": self.errors, "count": self.count, "steps_taken": {n.value: c for n, c in self.steps_taken.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.errors, self.count = float(state.get("errors", 0.0)), int(state.get("count", 0))
        taken = state.get("steps_taken", {})
        self.steps_taken = {n: int(taken.get(n.value, 0)) for n in self.norms}


@hookimpl
def register_schemes(register) -> None:
    register(MSD)
