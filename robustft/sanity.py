"""Gradient-masking checks for an evaluation (``robustft eval --sanity``).

A robust accuracy is only as good as the attacks behind it. Models that mask or obfuscate gradients
look robust to gradient attacks without being so (Athalye, Carlini & Wagner, ICML 2018, Sec. 3.1;
Carlini et al., "On Evaluating Adversarial Robustness", 2019, Sec. 5 checklist). The standard checks,
each run with :func:`robustft.evaluation.evaluate_model` (so every adversarial point is checked to lie
in its ball and in [0, 1]) on a subset of the test points:

``more-steps``      APGD-CE with ``2 * steps`` must not leave more points robust than with ``steps``.
``more-restarts``   APGD-CE with 3 random restarts must not leave more points robust than with 1.
``transfer``        adversarial points computed on a surrogate model and replayed on the model must not
                    break more points than the white-box attack (if they do, the model's own gradients
                    are misleading the attack).
``linf-radius-1``   with an l-inf radius of 1 every image can be turned into any other one: robust
                    accuracy must be 0.

"Must not rise" allows a tolerance of one point or 1% of the subset, whichever is larger, because the
step-size schedule of APGD depends on the number of steps and single points may flip either way.

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

from robustft.contracts import Attack, AttackResult, DatasetPlugin, EvalSuite
from robustft.errors import BadInputError
from robustft.evaluation import evaluate_model, load_run_model
from robustft.models import resolve_dataset, resolve_model, select_device
from robustft.norms import Norm, format_radius, normalise_eps, parse_norms, sort_norms
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.registry import Registries, checked
from robustft.rundir import latest_run, read_run_info

log = logging.getLogger("robustft")

#: Test points the checks use by default (each check is a full evaluation of them).
DEFAULT_POINTS = 200
MORE_RESTARTS = 3


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
        return {"model": self.model, "check": self.check, "norm": self.norm, "passed": self.passed,
                "detail": self.detail, "values": self.values}


class _OneAttack(EvalSuite):
    """An evaluation suite of one APGD attack (the family ``attack``) with fixed settings."""

    name = "sanity"

    def __init__(self, attack: str, label: str, surrogate: nn.Module | None = None, **settings: Any) -> None:
        self.attack, self.label, self.surrogate, self.settings = attack, label, surrogate, settings

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        options = {"steps": steps, "purpose": "eval", "seed": seed, **self.settings}
        built = registry.get(self.attack).build(norm, eps, **options)
        return [(self.label, _Transfer(built, self.surrogate) if self.surrogate is not None else built)]


class _Transfer(Attack):
    """Runs ``inner`` on a surrogate model and hands its points to the evaluator, which replays them on the model."""

    def __init__(self, inner: Attack, surrogate: nn.Module) -> None:
        self.inner, self.surrogate = inner, surrogate
        self.norm, self.eps = inner.norm, inner.eps

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        was_training = self.surrogate.training
        self.surrogate.eval()
        flags = [p.requires_grad for p in self.surrogate.parameters()]
        for p in self.surrogate.parameters():
            p.requires_grad_(False)
        try:
            return self.inner(self.surrogate, x, y)
        finally:
            for p, flag in zip(self.surrogate.parameters(), flags):
                p.requires_grad_(flag)
            self.surrogate.train(was_training)


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
    """Run every check on one model; see the module docstring."""
    common = dict(registries=registries, n_ex=n_ex, batch_size=batch_size, device=device, seed=seed, progress=progress)

    def robust(norm: Norm, radius: Fraction, label: str, steps_: int, **settings: Any) -> tuple[float, int]:
        suite = _OneAttack(attack, label, loss="ce", **settings)
        result = evaluate_model(model, dataset, [norm], {norm: radius}, suite=suite, steps=steps_, name=f"{name} {label}", **common)
        return result.robust[norm], result.n

    checks: list[SanityCheck] = []
    for norm in sort_norms(norms):
        radius = eps[norm]
        base, n = robust(norm, radius, "apgd-ce", steps, restarts=1)
        tolerance = max(1.0 / n, 0.01)
        more_steps, _ = robust(norm, radius, f"apgd-ce x{2 * steps} steps", 2 * steps, restarts=1)
        more_restarts, _ = robust(norm, radius, f"apgd-ce x{MORE_RESTARTS} restarts", steps, restarts=MORE_RESTARTS)
        transfer_suite = _OneAttack(attack, "transfer apgd-ce", surrogate=surrogate, loss="ce", restarts=1)
        transfer = evaluate_model(model, dataset, [norm], {norm: radius}, suite=transfer_suite, steps=steps,
                                  name=f"{name} transfer", **common).robust[norm]
        label = f"{norm.label} {format_radius(radius)}"
        checks += [
            SanityCheck(name, "more-steps", norm.value, more_steps <= base + tolerance,
                        f"{label}: {100 * base:.1f}% robust with {steps} steps, {100 * more_steps:.1f}% with {2 * steps}",
                        {"steps": base, "more_steps": more_steps}),
            SanityCheck(name, "more-restarts", norm.value, more_restarts <= base + tolerance,
                        f"{label}: {100 * base:.1f}% robust with 1 restart, {100 * more_restarts:.1f}% with {MORE_RESTARTS}",
                        {"restarts_1": base, f"restarts_{MORE_RESTARTS}": more_restarts}),
            SanityCheck(name, "transfer", norm.value, transfer >= base - tolerance,
                        f"{label}: {100 * base:.1f}% robust to the white-box attack, {100 * transfer:.1f}% to transferred points",
                        {"white_box": base, "transfer": transfer}),
        ]
    unbounded, _ = robust(Norm.LINF, Fraction(1), "apgd-ce radius 1", steps, restarts=1)
    checks.append(SanityCheck(name, "linf-radius-1", Norm.LINF.value, unbounded == 0.0,
                              f"l-inf 1: {100 * unbounded:.1f}% robust (must be 0)", {"robust": unbounded}))
    return checks


def sanity(
    *,
    model: str | None = None,
    run: str | Path | None = None,
    dataset: str | None = None,
    norms: str | Sequence[Norm] = "1,2,inf",
    eps: Mapping[Any, Any] | None = None,
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
) -> list[SanityCheck]:
    """The checks for what ``robustft eval`` evaluates: ``model`` alone, or a run (default: the latest) and its base."""
    if model is not None and run is not None:
        raise BadInputError("Give --model or --run, not both.")
    registries = (host or get_host()).registries
    norm_list = parse_norms(norms) if isinstance(norms, str) else sort_norms(norms)
    torch_device = select_device(device)
    registries.attacks.get(attack)
    m_options = {k: v for k, v in (model_options or {}).items() if v is not None}
    d_options = {k: v for k, v in (data_options or {}).items() if v is not None}
    if model is not None:
        zoo, info = resolve_model(model, registries)
        data = resolve_dataset(dataset or info.dataset, registries, **d_options)
        net = checked(zoo.load(info, device=torch_device, dataset=data, **m_options), nn.Module,
                      what=f"model zoo {zoo.name!r} load()", plugin=registries.plugin_of("zoos", zoo)).to(torch_device)
        targets = [(model, net, linear_surrogate(data, torch_device, seed=seed))]
        run_eps: dict[Norm, Fraction] = {}
    else:
        run_dir = Path(run) if run is not None else latest_run()
        info_dict = read_run_info(run_dir)
        zoo, info = resolve_model(info_dict["base_model"], registries)
        data = resolve_dataset(dataset or info_dict["dataset"], registries, **{**info_dict.get("data_options", {}), **d_options})
        tuned, _ = load_run_model(run_dir, registries, torch_device, dataset=data, **m_options)
        base = zoo.load(info, device=torch_device, dataset=data, **{**info_dict.get("model_options", {}), **m_options}).to(torch_device)
        targets = [(info_dict["base_model"], base, tuned), (f"+ {info_dict['scheme']}", tuned, base)]
        run_eps = normalise_eps(info_dict.get("eps", {}))
    radii = {**data.default_eps, **run_eps, **normalise_eps(eps or {})}
    missing = [n for n in norm_list if n not in radii]
    if missing:
        raise BadInputError(f"Data set {data.name!r} has no default radius for norm {missing[0]}: give --eps {missing[0]}=RADIUS.")
    checks: list[SanityCheck] = []
    for label, net, surrogate in targets:
        checks += check_model(net, data, norm_list, radii, registries=registries, surrogate=surrogate, name=label,
                              attack=attack, n_ex=n_ex, steps=steps, batch_size=batch_size, device=torch_device,
                              seed=seed, progress=progress)
    failed = [c for c in checks if not c.passed]
    if failed:
        log.warning("%d of %d sanity check(s) failed: %s; the robust accuracies above may be overestimated.",
                    len(failed), len(checks), ", ".join(f"{c.model} {c.check} ({c.norm})" for c in failed))
    return checks


def sanity_table(checks: Sequence[SanityCheck]) -> Table:
    """Pass/fail per check, as ``robustft eval --sanity`` prints it."""
    table = Table(title="Gradient-masking checks", title_justify="left", box=box.SIMPLE_HEAD)
    for column in ("model", "check", "result", "detail"):
        table.add_column(column, no_wrap=column != "detail")
    for c in checks:
        table.add_row(c.model, c.check, "[green]pass[/green]" if c.passed else "[red]FAIL[/red]", c.detail)
    return table
