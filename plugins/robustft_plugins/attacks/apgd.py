"""APGD: Auto-PGD for l-inf, l2 and l1, batched, as training attack and as evaluation attack.

References:

* F. Croce, M. Hein. "Reliable evaluation of adversarial robustness with an ensemble of diverse
  parameter-free attacks". ICML 2020. (APGD for l-inf and l2: step-size schedule, momentum, DLR loss,
  targeted DLR loss.)
* F. Croce, M. Hein. "Mind the box: l1-APGD for sparse adversarial attacks on image classifiers".
  ICML 2021. (l1-APGD: sparse steps, exact projection onto the l1 ball intersected with the box, adaptive
  sparsity, the large-radius schedule ``use_largereps``.)
* F. Croce, M. Hein. "Adversarial robustness against multiple lp-threat models at the price of one and how
  to quickly fine-tune robust models to another threat model". ICML 2022. (The training-time setting:
  no random start, cross-entropy, best iterate returned, robust training error from the iterates.)

The algorithm is APGD (Croce & Hein, ICML 2020; l1: Croce & Hein, ICCV 2021, APGD with the sparsity-aware step); the per-norm steps and projections come from
:mod:`robustft.lp`.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft.plugin import Attack, AttackFactory, AttackResult, BadInputError, L1Step, Norm, hookimpl, l0_norms, project, step_for

__all__ = ["APGD", "APGDFactory", "dlr_loss", "dlr_targeted_loss", "register_attacks"]

LOSSES = ("ce", "dlr", "dlr-targeted")

#: Defaults per purpose. ``train`` is the E-AT/RAMP training attack; ``eval`` the AutoAttack setting.
PURPOSE_DEFAULTS: dict[str, dict[str, Any]] = {
    "train": {
        "loss": "ce",
        "restarts": 1,
        "n_target_classes": 9,
        "random_start": False,
        "topk": 0.05,
        "use_largereps": False,
        "seed": 0,
        "prefer_misclassified": False,
    },
    "eval": {
        "loss": "ce",
        "restarts": 1,
        "n_target_classes": 9,
        "random_start": True,
        "topk": 0.2,
        "use_largereps": False,
        "seed": 0,
        "prefer_misclassified": True,
    },
}


# ------------------------------------------------------------------------------------------------ losses


def _sorted_logits(logits: Tensor) -> Tensor:
    return logits.sort(dim=1, descending=True).values


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Difference of Logits Ratio, ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, per point.

    ``z_pi1 >= z_pi2 >= ...`` are the sorted logits. The ratio is invariant to shifting and rescaling the
    logits. Positive exactly when the point is misclassified. Needs at least 3 classes.
    """
    s = _sorted_logits(logits)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    top_is_y = logits.argmax(dim=1) == y
    other = torch.where(top_is_y, s[:, 1], s[:, 0])
    return -(z_y - other) / (s[:, 0] - s[:, 2] + 1e-12)


def dlr_targeted_loss(logits: Tensor, y: Tensor, target: Tensor) -> Tensor:
    """Targeted DLR, ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, per point.

    AutoAttack defines it for at least 4 classes; with 3 classes the missing ``z_pi4`` is replaced by
    ``z_pi3`` (the smallest logit), which keeps the denominator positive and the ratio scale-invariant.
    """
    s = _sorted_logits(logits)
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    fourth = s[:, 3] if s.shape[1] >= 4 else s[:, 2]
    return -(z_y - z_t) / (s[:, 0] - 0.5 * (s[:, 2] + fourth) + 1e-12)


# ------------------------------------------------------------------------------------------------ attack


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020; l1: Croce & Hein 2021) in one lp ball intersected with ``[0, 1]``.

    Distance measure: l-inf, l2 or l1 (``norm``). The iterate starts at ``x`` (or at a random point of the
    ball) and takes ``steps`` projected steepest-ascent steps on the objective:

    * l-inf / l2: initial step size ``2 * eps``; momentum 0.75 from the second step; at checkpoints (the
      first after ``max(floor(0.22 n), 1)`` steps, the interval shrinking by ``max(floor(0.03 n), 1)`` to at
      least ``max(floor(0.06 n), 1)``) the step size of a point halves and its iterate restarts from its
      best point when its loss rose in at most ``rho = 75%`` of the steps since the previous checkpoint, or
      when its best loss did not improve and its step was not cut at the previous checkpoint. (Counting
      rises, the first step is compared with the starting point; AutoAttack compares it with a stale
      buffer entry instead.)
    * l1 ("Mind the box"): initial step size ``eps``; no momentum; the step is the sign of the gradient on
      its top ``topk`` fraction of coordinates, scaled to l1 length = step size; exact projection onto the
      l1 ball intersected with the box; every ``max(floor(0.04 n), 1)`` steps the sparsity is re-estimated
      as ``||x_best - x||_0 / d / 1.5``: where it fell by more than 5% the step size resets to ``eps`` and
      the iterate restarts from the best point, elsewhere the step size is divided by 1.5, within
      ``[eps / 10, eps]``.

    ``steps = n`` costs ``n + 1`` forward and ``n`` backward passes per run (the last iterate needs no
    gradient); the result reports the passes of all runs (``forward_passes``, ``backward_passes``).

    :meth:`robustft.contracts.Attack.__call__` runs it with the model in eval mode and parameter gradients
    off; the parameters and their ``.grad`` are left untouched (gradients are taken with respect to the input
    only). APGD draws its random start from a generator of its own, re-seeded with ``seed`` at every call,
    not from the training context's (:meth:`Attack.generator`): an evaluation's result on a batch then
    depends on the batch alone, whatever the order and the process it runs in.

    Host-device synchronisation: none inside the step loop. Every per-step decision (momentum, the
    step-size checkpoints, restarts from the best point, the l1 sparsity update, best and misclassified
    iterates) is a batched ``torch.where`` on device tensors; only the checkpoint *schedule* (which steps
    are checkpoints) is Python arithmetic on integers known in advance. The host reads a tensor only
    between runs: whether any point is already misclassified before the first run, and which points are
    left (``nonzero``) before each later restart or target class, since a run on no points is skipped.
    tests/test_apgd.py counts these reads and checks that they do not grow with ``steps``.

    Args:
        norm: the threat model's norm.
        eps: the radius of the ball.
        steps: number of iterations ``n`` per run (per stage sum with ``use_largereps``).
        loss: ``"ce"`` (cross-entropy), ``"dlr"`` (difference of logits ratio) or ``"dlr-targeted"``
            (targeted DLR, needs at least 3 classes).
        restarts: runs per target (per call for untargeted losses). Every run after the first attacks
            only the points no earlier run misclassified. Runs differ only through ``random_start``;
            without it they repeat the first one.
        n_target_classes: for ``"dlr-targeted"``: one run per target class, the classes with the 2nd,
            3rd, ... highest clean logit, each on the points still correctly classified; capped at
            ``num_classes - 1``.
        random_start: start from a random point of the ball (l-inf: uniform in the cube; l2: on the
            sphere; l1: Gaussian noise projected onto the ball ∩ box) instead of ``x``.
        topk: l1 only: initial fraction of coordinates a step moves (0.05 in training, 0.2 in evaluation).
        use_largereps: l1 only: run the steps as three stages with radii ``3 eps``, ``2 eps``, ``eps`` over
            30%, 30% and 40% of the steps, each stage starting from the previous one's best point projected
            onto the smaller ball (AutoAttack's ``use_largereps``). Only the last stage, inside the true
            ball, counts for the result. With fewer than 3 steps the large stages are shortened so that
            the last stage keeps at least one step.
        seed: seed of the random start (a generator on the input's device, re-seeded at every call, so
            equal calls give equal results).
        prefer_misclassified: return, where some iterate was misclassified, the misclassified iterate
            with the highest objective rather than the highest-objective iterate overall (evaluation wants
            the adversarial example; training wants the highest loss).
        rho: the oscillation threshold of the l-inf/l2 step-size schedule (0.75).

    Returns an :class:`AttackResult`: ``x_adv`` (per point the best iterate as above, always in the ball
    and in ``[0, 1]``), ``loss`` (the objective at ``x_adv``; for targeted runs, with respect to the target
    of the run that produced it) and ``success`` (some iterate, inside the ball, was misclassified).
    """

    def __init__(
        self,
        norm: Norm,
        eps: float,
        *,
        steps: int,
        loss: str = "ce",
        restarts: int = 1,
        n_target_classes: int = 9,
        random_start: bool = False,
        topk: float = 0.05,
        use_largereps: bool = False,
        seed: int = 0,
        prefer_misclassified: bool = False,
        rho: float = 0.75,
    ) -> None:
        self.norm = Norm.parse(norm)
        self.eps = float(eps)
        self.steps = int(steps)
        self.loss = loss
        self.restarts = int(restarts)
        self.n_target_classes = int(n_target_classes)
        self.random_start = bool(random_start)
        self.topk = float(topk)
        self.use_largereps = bool(use_largereps)
        self.seed = int(seed)
        self.prefer_misclassified = bool(prefer_misclassified)
        self.rho = float(rho)
        self._forward = 0
        self._backward = 0

    def __repr__(self) -> str:
        return (
            f"APGD(norm={self.norm.value}, eps={self.eps:g}, steps={self.steps}, loss={self.loss!r}, "
            f"restarts={self.restarts}, n_target_classes={self.n_target_classes}, "
            f"random_start={self.random_start}, topk={self.topk:g}, use_largereps={self.use_largereps}, "
            f"seed={self.seed}, prefer_misclassified={self.prefer_misclassified})"
        )

    # ------------------------------------------------------------------------------------- the attack

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        x = x.detach()
        y = y.detach().to(device=x.device, dtype=torch.long)
        if x.shape[0] != y.shape[0]:
            raise BadInputError(f"APGD got {x.shape[0]} images but {y.shape[0]} labels.")
        self._forward = self._backward = 0
        generator = torch.Generator(device=x.device)
        generator.manual_seed(self.seed)

        n = x.shape[0]
        out_x = x.clone()
        out_loss = torch.full((n,), -math.inf, device=x.device, dtype=x.dtype)
        success = torch.zeros(n, dtype=torch.bool, device=x.device)

        if self.loss == "dlr-targeted":
            with torch.no_grad():
                clean_logits = model(x)
            self._forward += 1
            self._check_classes(clean_logits.shape[1])
            ranked = clean_logits.argsort(dim=1, descending=True)
            n_targets = min(self.n_target_classes, clean_logits.shape[1] - 1)
            targets: list[Tensor | None] = [ranked[:, r] for r in range(1, n_targets + 1)]
            # Clean misclassification already counts; those points are not attacked (as AutoAttack).
            success = clean_logits.argmax(dim=1) != y
            out_loss = torch.where(success, dlr_targeted_loss(clean_logits, y, ranked[:, 1]).to(x.dtype), out_loss)
        else:
            targets = [None]

        # Untargeted, no point has succeeded before the first run: attack them all without reading the
        # mask, so a single-run (training) attack makes no host read at all.
        first, none_succeeded = True, self.loss != "dlr-targeted"
        for target in targets:
            for _ in range(self.restarts):
                if first and (none_succeeded or not bool(success.any())):
                    idx = None
                else:
                    idx = (~success).nonzero().squeeze(1)
                    if idx.numel() == 0:
                        break
                first = False
                xs, ys = (x, y) if idx is None else (x[idx], y[idx])
                ts = None if target is None else (target if idx is None else target[idx])
                run_x, run_loss, run_success = self._run(model, xs, ys, ts, generator)
                old_loss = out_loss if idx is None else out_loss[idx]
                take = run_success | (run_loss > old_loss)
                view = (-1,) + (1,) * (x.dim() - 1)
                if idx is None:
                    out_x = torch.where(take.view(view), run_x, out_x)
                    out_loss = torch.where(take, run_loss, out_loss)
                    success = success | run_success
                else:
                    out_x[idx] = torch.where(take.view(view), run_x, out_x[idx])
                    out_loss[idx] = torch.where(take, run_loss, old_loss)
                    success[idx] = run_success

        return AttackResult(x_adv=out_x, loss=out_loss, success=success, forward_passes=self._forward, backward_passes=self._backward)

    # ------------------------------------------------------------------------------------------- pieces

    def _check_classes(self, num_classes: int) -> None:
        if self.loss in ("dlr", "dlr-targeted") and num_classes < 3:
            raise BadInputError(f"APGD's {self.loss} loss needs at least 3 classes but the model has {num_classes}; use loss='ce'.")

    def _objective(self, logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
        self._check_classes(logits.shape[1])
        if self.loss == "ce":
            return F.cross_entropy(logits, y, reduction="none")
        if self.loss == "dlr":
            return dlr_loss(logits, y)
        assert target is not None
        return dlr_targeted_loss(logits, y, target)

    def _evaluate(
        self, model: nn.Module, x_adv: Tensor, y: Tensor, target: Tensor | None, need_grad: bool
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Logits, per-point objective and (optionally) its gradient with respect to the input."""
        if not need_grad:
            with torch.no_grad():
                logits = model(x_adv)
                loss = self._objective(logits, y, target)
            self._forward += 1
            return logits, loss.to(x_adv.dtype), None
        point = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = model(point)
            loss = self._objective(logits, y, target)
            # Differentiating with respect to the input only leaves the parameters' .grad alone.
            (grad,) = torch.autograd.grad(loss.sum(), [point], allow_unused=True)
        self._forward += 1
        self._backward += 1
        if grad is None:
            grad = torch.zeros_like(point)
        return logits.detach(), loss.detach().to(x_adv.dtype), grad.detach()

    def _stages(self) -> list[tuple[float, int]]:
        """(radius, steps) per stage: one stage, or the 3e/2e/e schedule of ``use_largereps``."""
        if not (self.use_largereps and self.norm is Norm.L1):
            return [(self.eps, self.steps)]
        n = self.steps
        large = min(math.ceil(0.3 * n), (n - 1) // 2)
        stages = [(3.0 * self.eps, large), (2.0 * self.eps, large), (self.eps, n - 2 * large)]
        return [(r, k) for r, k in stages if k > 0]

    def _run(
        self, model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, generator: torch.Generator
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One run (all stages) on a batch; returns (x_adv, objective at x_adv, success)."""
        stages = self._stages()
        first_radius = stages[0][0]
        if self.random_start:
            start = x + step_for(self.norm).random_init(x, first_radius, generator)
        else:
            start = x.clone()
        start = start.clamp(0.0, 1.0)
        # A multi-stage run continues from each stage's best point and estimates sparsity from it.
        from_point = len(stages) > 1
        result: tuple[Tensor, Tensor, Tensor, Tensor, Tensor] | None = None
        for radius, n_steps in stages:
            start = (x + project(start - x, x, self.norm, radius)).clamp(0.0, 1.0)
            result = self._stage(model, x, y, target, start, radius, n_steps, from_point)
            start = result[0]
        assert result is not None
        x_best, loss_best, success, x_mis, loss_mis = result
        if not self.prefer_misclassified:
            return x_best, loss_best, success
        view = (-1,) + (1,) * (x.dim() - 1)
        return (
            torch.where(success.view(view), x_mis, x_best),
            torch.where(success, loss_mis, loss_best),
            success,
        )

    def _stage(
        self,
        model: nn.Module,
        x: Tensor,
        y: Tensor,
        target: Tensor | None,
        start: Tensor,
        eps: float,
        n_steps: int,
        sparsity_from_start: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``n_steps`` APGD iterations in the ball of radius ``eps`` from ``start``.

        Returns the highest-objective iterate and its objective, per-point success, and the
        highest-objective misclassified iterate with its objective (``-inf`` where there is none).
        """
        n = x.shape[0]
        view = (n,) + (1,) * (x.dim() - 1)
        dim = x[0].numel()
        is_l1 = self.norm is Norm.L1
        stepper = step_for(self.norm)

        x_adv = start
        logits, loss, grad = self._evaluate(model, x_adv, y, target, need_grad=n_steps > 0)
        wrong = logits.argmax(dim=1) != y
        success = wrong.clone()
        x_best, loss_best = x_adv.clone(), loss.clone()
        grad_best = grad.clone() if grad is not None else None
        neg_inf = torch.full_like(loss, -math.inf)
        x_mis, loss_mis = x_adv.clone(), torch.where(wrong, loss, neg_inf)

        step_size = torch.full(view, (1.0 if is_l1 else 2.0) * eps, device=x.device, dtype=x.dtype)
        if is_l1:
            period = max(int(0.04 * n_steps), 1)
            if sparsity_from_start:
                sparsity = l0_norms(x_adv - x)
                topk = torch.where(sparsity > 0, sparsity / dim / 1.5, torch.full_like(sparsity, self.topk))
                sparsity_old = sparsity
            else:
                topk = torch.full((n,), self.topk, device=x.device, dtype=x.dtype)
                sparsity_old = torch.full((n,), float(dim), device=x.device, dtype=x.dtype)
        else:
            period = max(int(0.22 * n_steps), 1)
            period_min = max(int(0.06 * n_steps), 1)
            period_decrease = max(int(0.03 * n_steps), 1)
            reduced_last = torch.ones(n, dtype=torch.bool, device=x.device)
            loss_best_last = loss_best.clone()
            rises = torch.zeros(n, dtype=x.dtype, device=x.device)
            loss_prev = loss

        x_old = x_adv
        since_check = 0
        for i in range(n_steps):
            last = i == n_steps - 1
            assert grad is not None
            with torch.no_grad():
                if is_l1:
                    assert isinstance(stepper, L1Step)
                    moved = x_adv + stepper.step(grad, step_size, topk=topk)
                    x_new = x + project(moved - x, x, self.norm, eps)
                else:
                    momentum = 0.75 if i > 0 else 1.0
                    z = x + project(x_adv + stepper.step(grad, step_size) - x, x, self.norm, eps)
                    moved = x_adv + momentum * (z - x_adv) + (1.0 - momentum) * (x_adv - x_old)
                    x_new = x + project(moved - x, x, self.norm, eps)
                x_new = x_new.clamp(0.0, 1.0)
            x_old, x_adv = x_adv, x_new

            logits, loss, new_grad = self._evaluate(model, x_adv, y, target, need_grad=not last)
            with torch.no_grad():
                wrong = logits.argmax(dim=1) != y
                success |= wrong
                if self.prefer_misclassified:
                    better_mis = wrong & (loss > loss_mis)
                    x_mis = torch.where(better_mis.view(view), x_adv, x_mis)
                    loss_mis = torch.where(better_mis, loss, loss_mis)
                improved = loss > loss_best
                x_best = torch.where(improved.view(view), x_adv, x_best)
                loss_best = torch.where(improved, loss, loss_best)
                if last:
                    break
                assert new_grad is not None and grad_best is not None
                grad = new_grad
                grad_best = torch.where(improved.view(view), grad, grad_best)
                if not is_l1:
                    rises += (loss > loss_prev).to(rises.dtype)
                    loss_prev = loss

                since_check += 1
                if since_check < period:
                    continue
                since_check = 0
                if is_l1:
                    sparsity = l0_norms(x_best - x)
                    reset = sparsity < 0.95 * sparsity_old
                    topk = sparsity / dim / 1.5
                    step_size = torch.where(reset.view(view), torch.full_like(step_size, eps), step_size / 1.5)
                    step_size = step_size.clamp(eps / 10.0, eps)
                    sparsity_old = sparsity
                else:
                    oscillating = rises <= period * self.rho
                    stalled = ~reduced_last & (loss_best_last >= loss_best)
                    reset = oscillating | stalled
                    reduced_last = reset
                    loss_best_last = loss_best.clone()
                    step_size = torch.where(reset.view(view), step_size / 2.0, step_size)
                    rises.zero_()
                    period = max(period - period_decrease, period_min)
                x_adv = torch.where(reset.view(view), x_best, x_adv)
                grad = torch.where(reset.view(view), grad_best, grad)

        return x_best, loss_best, success, x_mis, loss_mis


# ----------------------------------------------------------------------------------------------- factory


def _check_option(name: str, value: Any, ok: Callable[[Any], bool], what: str) -> None:
    if not ok(value):
        raise BadInputError(f"APGD option {name}={value!r} is not valid: it must be {what}.")


class APGDFactory(AttackFactory):
    """Builds :class:`APGD` attacks; registered as ``apgd``.

    ``build(norm, eps, steps=..., purpose="train" | "eval", **options)``. Options: ``loss``,
    ``restarts``, ``n_target_classes``, ``random_start``, ``topk``, ``use_largereps`` (l1 only), ``seed``,
    ``prefer_misclassified``, ``rho`` (see :class:`APGD`). Defaults by purpose: ``train`` is the setting of
    the E-AT and RAMP reference code (cross-entropy, one run, no random start, ``topk`` 0.05, highest-loss
    iterate returned); ``eval`` adds a random start, ``topk`` 0.2 and returns misclassified iterates where
    found.
    """

    name = "apgd"
    description = "Auto-PGD (Croce & Hein 2020; l1-APGD 2021): CE, DLR and targeted DLR, l1/l2/l-inf."
    norms = (Norm.L1, Norm.L2, Norm.LINF)
    options = {
        "loss": "objective: " + ", ".join(LOSSES),
        "restarts": "runs per target, each on the points no earlier run misclassified (a positive integer)",
        "n_target_classes": "target classes of dlr-targeted (a positive integer)",
        "random_start": "start from a random point of the ball (True or False)",
        "topk": "l1: initial fraction of coordinates a step moves (in (0, 1])",
        "use_largereps": "l1: the 3 eps, 2 eps, eps stages of AutoAttack (True or False)",
        "seed": "seed of the random start, re-seeded at every call (an integer)",
        "prefer_misclassified": "return a misclassified iterate where one was found (True or False)",
        "rho": "oscillation threshold of the l-inf/l2 step-size schedule (in (0, 1])",
    }

    def build(self, norm: Norm, eps: float, *, steps: int, purpose: str = "train", **options: Any) -> APGD:
        if purpose not in PURPOSE_DEFAULTS:
            raise BadInputError(f"APGD purpose {purpose!r} is not valid: it must be 'train' or 'eval'.")
        self.check_options(options)
        norm = Norm.parse(norm)
        settings = {**PURPOSE_DEFAULTS[purpose], "rho": 0.75, **options}
        # Fractions (radii are parsed exactly) and numpy scalars are welcome; bools are not numbers here.
        is_int = lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)  # noqa: E731
        is_number = lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
        _check_option("eps", eps, lambda v: is_number(v) and v > 0, "a positive number")
        _check_option("steps", steps, lambda v: is_int(v) and v >= 1, "a positive integer")
        _check_option("loss", settings["loss"], lambda v: v in LOSSES, "one of " + ", ".join(LOSSES))
        _check_option("restarts", settings["restarts"], lambda v: is_int(v) and v >= 1, "a positive integer")
        _check_option("n_target_classes", settings["n_target_classes"], lambda v: is_int(v) and v >= 1, "a positive integer")
        for flag in ("random_start", "use_largereps", "prefer_misclassified"):
            _check_option(flag, settings[flag], lambda v: isinstance(v, bool), "True or False")
        _check_option("topk", settings["topk"], lambda v: is_number(v) and 0 < v <= 1, "a fraction in (0, 1]")
        _check_option("seed", settings["seed"], is_int, "an integer")
        _check_option("rho", settings["rho"], lambda v: is_number(v) and 0 < v <= 1, "a fraction in (0, 1]")
        if settings["use_largereps"] and norm is not Norm.L1:
            raise BadInputError(f"APGD option use_largereps is only for the l1 norm, not {norm.label}.")
        for key in ("restarts", "n_target_classes", "seed"):
            settings[key] = int(settings[key])
        for key in ("topk", "rho"):
            settings[key] = float(settings[key])
        return APGD(norm, float(eps), steps=int(steps), **settings)


@hookimpl
def register_attacks(register: Callable[[Any], None]) -> None:
    register(APGDFactory())
