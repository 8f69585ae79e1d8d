"""Gradient-masking checks for an evaluation (``robustft eval --sanity``).

A robust accuracy is only as good as the attacks behind it. Models that mask or obfuscate gradients
look robust to gradient attacks without being so (Athalye, Carlini & Wagner, ICML 2018, Sec. 3.1;
Carlini et al., "On Evaluating Adversarial Robustness", 2019, Sec. 5 checklist), and an attack that has
not converged overstates robustness the same way; a stronger attack that finds clearly more adversarial
points is the symptom of both (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020). The checks test the evaluation suite the table
was made with (``--suite``: the E-AT protocol ``e-at`` of plugins/robustft_plugins/suites/eat_protocol.py, standard
AutoAttack ``autoattack`` of plugins/robustft_plugins/suites/autoattack.py, or a plugin's). Each is run with
:func:`robustft.evaluation.evaluate_model`, so every adversarial point is checked to lie in its ball and
in [0, 1], on a subset of the test points:

``more-steps``      the suite with ``2 * steps`` against the suite with ``steps``: robust accuracy must
                    not move by more than the tolerance, in either direction. A drop means the suite's
                    attacks had not converged at ``steps`` (the table's numbers are overstated); a rise
                    means the result depends on the step-size schedule more than on the model.
``more-restarts``   the suite followed, on the points it left robust, by APGD-CE with 3 random restarts
                    from another seed (``seed + 1``; for l1 with AutoAttack's large-radius schedule),
                    against the suite alone. By construction this can only drop; a drop beyond the
                    tolerance means random starts find adversarial points the suite missed (gradients
                    that are flat or misleading near the clean points): the table's numbers are overstated.
                    The restarts start from ``more-steps``' baseline (the suite at ``steps``, run once per
                    norm), so the suite is not run a second time.
``transfer``        adversarial points computed by APGD-CE on a surrogate model and replayed on the model
                    must not break more points than the suite (if they do, the model's own gradients
                    are misleading the attack).
``linf-radius-1``   with an l-inf radius of 1 every image can be turned into any other one: the suite
                    must leave 0% robust.

The tolerance (:func:`tolerance`) is one point or 1% of the subset, whichever is larger: 2 of the
default 200 points, 1 of 60. One point is the resolution of the measurement, and single points may flip
either way between two converged runs, because APGD's step-size checkpoints are fractions of the number
of steps (twice the steps visit other iterates) and a new seed draws other random starts. Two points of
200 are a 1% change of the robust accuracy the table prints, large enough to be read as a property of
the model, so an evaluation that moves that much under a stronger attack is not converged at the
precision it is reported with.

Surrogates: when a run is evaluated, the base model is the surrogate of the fine-tuned model and the
fine-tuned model that of the base (same architecture, related weights: the strongest cheap transfer
source). A model evaluated alone gets a linear softmax classifier on the image average-pooled to at most
16x16, trained on up to 1,000 training points by 200 full-batch Adam steps (seeded); it is weak, so
for a single model the transfer check mostly catches gross masking.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from rich import box
from rich.table import Table
from torch import Tensor, nn

from robustft import distributed
from robustft.contracts import Attack, AttackResult, DatasetPlugin, EvalSuite
from robustft.errors import BadInputError
from robustft.evaluation import evaluate_model
from robustft.models import select_device
from robustft.norms import Norm, format_radius, parse_norms, sort_norms
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.registry import Registries
from robustft.subjects import Subjects, one_model_or_run, resolve

log = logging.getLogger("robustft")

#: Test points the checks use by default. Per model and norm they cost the suite at ``steps`` and at ``2 * steps``,
#: APGD-CE with restarts on the points the first left robust, and a transfer attack; plus the suite once at l-inf 1.
DEFAULT_POINTS = 200
#: Random restarts of the APGD-CE run ``more-restarts`` adds after the suite.
MORE_RESTARTS = 3
#: Offset of that run's seed from the suite's, so that its random starts are new ones.
RESTART_SEED_OFFSET = 1


def tolerance(n: int) -> int:
    """The largest change, in points, of the robust points among ``n`` that a check accepts: one point or 1%
    of ``n`` (rounded down), whichever is larger (see the module docstring for why)."""
    return max(1, n // 100)


@dataclass
class SanityCheck:
    """One check on one model: passed or not, with the accuracies it compared."""

    model: str
    check: str
    norm: str
    passed: bool
    detail: str
    values: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "check": self.check,
            "norm": self.norm,
            "passed": self.passed,
            "detail": self.detail,
            "values": self.values,
        }


class _OneAttack(EvalSuite):
    """An evaluation suite of one APGD attack (the family ``attack``) with fixed settings."""

    name = "sanity"

    def __init__(self, attack: str, label: str, surrogate: nn.Module | None = None, **settings: Any) -> None:
        self.attack, self.label, self.surrogate, self.settings = attack, label, surrogate, settings

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        options = {"steps": steps, "purpose": "eval", "seed": seed, **self.settings}
        built = registry.get(self.attack).build(norm, eps, **options)
        return [(self.label, _Transfer(built, self.surrogate) if self.surrogate is not None else built)]


class _Restarts(EvalSuite):
    """APGD-CE (the family ``attack``) with :data:`MORE_RESTARTS` random restarts from the seed
    ``seed + RESTART_SEED_OFFSET``: the attack ``more-restarts`` adds after ``suite``. The evaluator runs it
    from the suite's result (:func:`robustft.evaluation.evaluate_model`'s ``start``): only on the points the
    suite left robust, without running the suite again."""

    def __init__(self, suite: EvalSuite, attack: str) -> None:
        self.attack = attack
        self.name = f"{suite.name} + restarts"

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        options: dict[str, Any] = {
            "steps": steps,
            "purpose": "eval",
            "loss": "ce",
            "restarts": MORE_RESTARTS,
            "seed": seed + RESTART_SEED_OFFSET,
        }
        if Norm.parse(norm) is Norm.L1:
            options["use_largereps"] = True  # AutoAttack's l1 APGD: without it l1 APGD is much weaker
        label = f"apgd-ce x{MORE_RESTARTS} restarts"
        return [(label, registry.get(self.attack).build(norm, eps, **options))]


class _Transfer(Attack):
    """Runs ``inner`` on a surrogate model and hands its points to the evaluator, which replays them on the model.

    ``inner``'s own template (:meth:`Attack.__call__`) puts the surrogate in eval mode with its gradients off; the
    passes reported are the surrogate's."""

    def __init__(self, inner: Attack, surrogate: nn.Module) -> None:
        self.inner, self.surrogate = inner, surrogate
        self.norm, self.eps = inner.norm, inner.eps

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        return self.inner(self.surrogate, x, y)


def linear_surrogate(dataset: DatasetPlugin, device: torch.device, *, points: int = 1000, steps: int = 200, seed: int = 0) -> nn.Module:
    """A softmax classifier on the image average-pooled to at most 16x16 (see the module docstring)."""
    train = dataset.train(augment=False)
    n = min(points, len(train))
    x, y = next(iter(torch.utils.data.DataLoader(torch.utils.data.Subset(train, range(n)), batch_size=n)))
    c, h, w = x.shape[1:]
    size = (min(h, 16), min(w, 16))
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.AdaptiveAvgPool2d(size), nn.Flatten(), nn.Linear(c * size[0] * size[1], dataset.num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.01)
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


def check_model(
    model: nn.Module,
    dataset: DatasetPlugin,
    norms: Sequence[Norm],
    eps: Mapping[Norm, Fraction],
    *,
    registries: Registries,
    suite: EvalSuite,
    surrogate: nn.Module,
    name: str = "model",
    attack: str = "apgd",
    n_ex: int = DEFAULT_POINTS,
    steps: int = 100,
    batch_size: int = 500,
    device: torch.device | None = None,
    seed: int = 0,
    progress: ProgressReporter | None = None,
) -> list[SanityCheck]:
    """Run every check on one model against ``suite`` (the evaluation suite under test); ``attack`` is the
    attack family of the extra restarts and of the transfer attack. See the module docstring."""
    common = dict(registries=registries, n_ex=n_ex, batch_size=batch_size, device=device, seed=seed, progress=progress)

    def robust(
        norm: Norm, radius: Fraction, label: str, suite_: EvalSuite, steps_: int, start: Tensor | None = None
    ) -> tuple[int, int, Tensor]:
        """The number of points left robust (counted, not a rounded fraction), the number of points, and the
        per-point mask; ``start`` continues from an earlier evaluation's mask (see :func:`evaluate_model`)."""
        result = evaluate_model(
            model,
            dataset,
            [norm],
            {norm: radius},
            suite=suite_,
            steps=steps_,
            name=f"{name} {label}",
            start={norm: start} if start is not None else None,
            **common,
        )
        mask = result.per_point[norm.value]
        return int(mask.sum()), result.n, mask

    restarts = _Restarts(suite, attack)
    checks: list[SanityCheck] = []
    for norm in sort_norms(norms):
        radius = eps[norm]
        # The suite runs once per norm: its result is more-steps' baseline and where more-restarts starts from.
        base, n, base_mask = robust(norm, radius, suite.name, suite, steps)
        allowed = tolerance(n)
        more_steps, _, _ = robust(norm, radius, f"{suite.name} x{2 * steps} steps", suite, 2 * steps)
        more_restarts, _, _ = robust(norm, radius, restarts.name, restarts, steps, start=base_mask)
        transfer_suite = _OneAttack(attack, "transfer apgd-ce", surrogate=surrogate, loss="ce", restarts=1)
        transfer, _, _ = robust(norm, radius, "transfer", transfer_suite, steps)
        label = f"{norm.label} {format_radius(radius)}"
        within = f"{allowed} of {n} points"
        checks += [
            SanityCheck(
                name,
                "more-steps",
                norm.value,
                abs(more_steps - base) <= allowed,
                f"{label}: {_pct(base, n)} robust to {suite.name} with {steps} steps, {_pct(more_steps, n)} with "
                f"{2 * steps} (allowed: {within} either way)",
                {"steps": base / n, "more_steps": more_steps / n, "tolerance": allowed / n},
            ),
            SanityCheck(
                name,
                "more-restarts",
                norm.value,
                base - more_restarts <= allowed,
                f"{label}: {_pct(base, n)} robust to {suite.name}, {_pct(more_restarts, n)} after APGD-CE with "
                f"{MORE_RESTARTS} more random restarts (allowed: a drop of {within})",
                {"suite": base / n, "more_restarts": more_restarts / n, "tolerance": allowed / n},
            ),
            SanityCheck(
                name,
                "transfer",
                norm.value,
                transfer >= base - allowed,
                f"{label}: {_pct(base, n)} robust to {suite.name}, {_pct(transfer, n)} to transferred points",
                {"white_box": base / n, "transfer": transfer / n, "tolerance": allowed / n},
            ),
        ]
    unbounded, n, _ = robust(Norm.LINF, Fraction(1), f"{suite.name} radius 1", suite, steps)
    checks.append(
        SanityCheck(
            name,
            "linf-radius-1",
            Norm.LINF.value,
            unbounded == 0,
            f"l-inf 1: {_pct(unbounded, n)} robust to {suite.name} (must be 0)",
            {"robust": unbounded / n},
        )
    )
    return checks


def _pct(count: int, n: int) -> str:
    return f"{100 * count / n:.1f}%"


def sanity(
    *,
    model: str | None = None,
    run: str | Path | None = None,
    dataset: str | None = None,
    norms: str | Sequence[Norm] = "1,2,inf",
    eps: Mapping[Any, Any] | None = None,
    suite: str | EvalSuite,
    n_ex: int = DEFAULT_POINTS,
    steps: int = 100,
    batch_size: int = 500,
    device: str = "auto",
    seed: int = 0,
    attack: str = "apgd",
    host: PluginHost | None = None,
    progress: ProgressReporter | None = None,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    subjects: Subjects | None = None,
) -> list[SanityCheck]:
    """The checks for what ``robustft eval`` evaluates: ``model`` alone, or a run (default: the latest) and its base.

    ``suite`` is the evaluation suite whose numbers are checked (a registered name, as ``--suite``, or an
    :class:`EvalSuite`): pass the one the table was made with. ``subjects`` (an evaluation's
    :attr:`robustft.evaluation.EvalReport.subjects`) replaces ``model``, ``run``, ``dataset`` and the options:
    the checks then reuse the networks that evaluation loaded."""
    if subjects is not None and (model, run, dataset, model_options, data_options) != (None,) * 5:
        raise BadInputError("Pass sanity() the subjects of an evaluation, or a model or run with its options, not both.")
    one_model_or_run(model, run)
    registries = (host or get_host()).registries
    norm_list = parse_norms(norms) if isinstance(norms, str) else sort_norms(norms)
    torch_device = distributed.local_device(select_device(device))
    registries.attacks.get(attack)
    suite_obj = registries.suites.get(suite) if isinstance(suite, str) else suite
    if subjects is None:
        subjects = resolve(
            model=model, run=run, dataset=dataset, registries=registries, model_options=model_options, data_options=data_options
        )
    data = subjects.dataset
    nets = [s.model(torch_device) for s in reversed(subjects.models)][::-1]  # the run's model first, as evaluate()
    if subjects.has_base:  # each model is the other's transfer surrogate (see the module docstring)
        targets = [(subjects.models[0].label, nets[0], nets[1]), (subjects.models[1].label, nets[1], nets[0])]
    else:
        targets = [(s.label, net, linear_surrogate(data, torch_device, seed=seed)) for s, net in zip(subjects.models, nets)]
    radii = subjects.radii(norm_list, eps)
    checks: list[SanityCheck] = []
    for label, net, surrogate in targets:
        checks += check_model(
            net,
            data,
            norm_list,
            radii,
            registries=registries,
            suite=suite_obj,
            surrogate=surrogate,
            name=label,
            attack=attack,
            n_ex=n_ex,
            steps=steps,
            batch_size=batch_size,
            device=torch_device,
            seed=seed,
            progress=progress,
        )
    failed = [c for c in checks if not c.passed]
    if failed:
        log.warning(
            "%d of %d sanity check(s) failed: %s; the robust accuracies above may be overestimated.",
            len(failed),
            len(checks),
            ", ".join(f"{c.model} {c.check} ({c.norm})" for c in failed),
        )
    return checks


def sanity_table(checks: Sequence[SanityCheck]) -> Table:
    """Pass/fail per check, as ``robustft eval --sanity`` prints it."""
    table = Table(title="Gradient-masking checks", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("model", "check", "result", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for c in checks:
        table.add_row(c.model, c.check, "[green]pass[/green]" if c.passed else "[red]FAIL[/red]", c.detail)
    return table
