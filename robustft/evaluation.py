"""Evaluation: clean, per-norm and union robust accuracy, with every adversarial point checked.

For each norm the suite's attacks run one after the other, each only on the points that are still
robust (clean-correct and not broken by an earlier attack). A point counts as broken only when the
evaluator itself has checked that the returned point lies in its lp ball and in [0, 1]
(:func:`robustft.lp.check_in_ball_and_box`) and that the model misclassifies it; an attack's own
"success" flag is never trusted. A returned point outside its ball or the box (an attack plugin that leaves
the ball by a hair, say) is neither trusted nor dropped: it is projected onto the ball and the box
(:func:`robustft.lp.project`; non-finite coordinates become the clean ones), the projected point is
classified and counted, and the result carries the number of such ``invalid`` points per norm, which the
table flags; ``strict=True`` (``--strict``) makes any invalid point an error instead. A point is robust in the union when it is clean-correct and robust in
every norm evaluated.

Under ``torchrun`` (see :mod:`robustft.distributed` and docs/distributed.md) the work is sharded by
batch: the batches a single process would form (the still-robust points, in index order, cut every
``batch_size``) are dealt round-robin, batch ``b`` to rank ``b mod world``. Every rank attacks its
batches, and the per-point outcomes (clean-correct, broken, invalid) are summed over the ranks after
each attack, so that every rank knows which points the next attack must see and rank 0 computes the
union from every point. Since APGD re-seeds its generator at every call, an attack's result on a batch
depends only on the batch; the batches being those of one process, the table is the same as in one
process for the same ``batch_size`` (exactly, on devices of one kind; tests/test_distributed.py checks
it). Only rank 0 reports progress and warnings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustft import distributed
from robustft.contracts import DatasetPlugin, EvalSuite
from robustft.config import MAX_SEED
from robustft.errors import BadInputError, UserError
from robustft.geometry import check_radii
from robustft.io import DiskFullError, atomic_write_text, checksum_path, load_torch
from robustft.lp import check_in_ball_and_box, project
from robustft.models import on_for_cuda, resolve_dataset, resolve_model, select_device
from robustft.norms import Norm, eps_to_strings, format_radius, normalise_eps, parse_norms, sort_norms
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.registry import Registries
from robustft.rundir import latest_run, read_run_info
from robustft.sweep import Curve, normalise_sweeps

log = logging.getLogger("robustft")

#: The file in a run folder where ``robustft eval --run`` keeps its latest result (``robustft plot`` reads it).
EVAL_FILE = "eval.json"


@dataclass
class EvalResult:
    """One row of the table: a model's clean, per-norm and union accuracy on ``n`` test points."""

    name: str
    clean: float
    robust: dict[Norm, float]
    union: float
    n: int
    suite: str
    eps: dict[Norm, Fraction]
    dataset: str
    seconds: float
    #: the run folder, for a fine-tuned model
    run: str | None = None
    #: adversarial points an attack returned outside its ball or [0, 1]; counted after projection onto both
    invalid: dict[Norm, int] = field(default_factory=dict)
    #: per point: clean-correct, and robust per norm (kept in memory for distributed gathering and tests)
    per_point: dict[str, Tensor] = field(default_factory=dict, repr=False)
    #: robust accuracy against the radius, for the norms of a radius sweep (``--radii``)
    curves: dict[Norm, Curve] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "dataset": self.dataset,
            "clean": self.clean,
            "robust": {n.value: self.robust[n] for n in sort_norms(self.robust)},
            "union": self.union,
            "n": self.n,
            "suite": self.suite,
            "eps": eps_to_strings(self.eps),
            "invalid_points": {n.value: c for n, c in self.invalid.items()},
            "seconds": self.seconds,
            **({"run": self.run} if self.run else {}),
            **({"curves": {n.value: self.curves[n].as_dict() for n in sort_norms(self.curves)}} if self.curves else {}),
        }


def _requires_grad_off(model: nn.Module) -> list[bool]:
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)  # attacks need input gradients only
    return flags


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


class _Attacker:
    """Runs a suite's attacks for one norm and radius on a set of the test points, checking every point."""

    def __init__(self, model: nn.Module, x_all: Tensor, y_all: Tensor, *, suite: EvalSuite, registries: Registries,
                 num_classes: int, steps: int, batch_size: int, device: torch.device, seed: int, name: str,
                 progress: ProgressReporter, channels_last: bool, strict: bool) -> None:
        self.model, self.x_all, self.y_all, self.n = model, x_all, y_all, len(y_all)
        self.suite, self.registries, self.num_classes, self.steps = suite, registries, num_classes, steps
        self.batch_size, self.device, self.seed, self.name = batch_size, device, seed, name
        self.progress, self.channels_last, self.strict = progress, channels_last, strict

    def run(self, norm: Norm, radius: Fraction, still: Tensor, within: Sequence[Fraction] = (), tag: str = "") -> tuple[Tensor, int, Tensor]:
        """``(robust, invalid, fits)``: the points of ``still`` that every attack left correctly classified, the
        number of adversarial points that needed projecting, and per point and radius of ``within`` whether the
        point's verified adversarial point lies in that (smaller) ball as well."""
        still, n = still.clone(), self.n
        fits = torch.zeros(n, len(within), dtype=torch.bool)
        invalid = 0
        attacks = self.suite.attacks(norm, float(radius), num_classes=self.num_classes, steps=self.steps, seed=self.seed,
                                     registry=self.registries.attacks)
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


def _warn_invalid(name: str, norm: Norm, count: int, where: str = "") -> None:
    if count and distributed.is_main():
        log.warning(
            "%s: %d adversarial point(s) in %s%s lay outside the ball or [0, 1]; they were projected onto both "
            "and counted as the projected points classify.",
            name, count, norm.label, where,
        )


def _sweep(attacker: _Attacker, norm: Norm, radii: Sequence[Fraction], clean: Tensor,
           broken_at: tuple[Fraction, Tensor] | None = None) -> tuple[Curve, dict[Fraction, Tensor]]:
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
        survived, count, fits = attacker.run(norm, radius, to_attack, within=descending[i + 1:], tag=f" r={format_radius(radius)}")
        invalid += count
        # robust here: robust at the larger radius (never attacked again), plus those that survived this one
        robust_now = (clean & ~candidates) | survived
        robust[radius] = float(robust_now.float().mean())
        broken_now = clean & ~robust_now
        broken[radius] = broken_now
        candidates = broken_now
        rest = known[:, 1:] if known is not None else torch.zeros(len(clean), len(descending) - i - 1, dtype=torch.bool)
        known = rest | fits
    _warn_invalid(attacker.name, norm, invalid, " (radius sweep)")
    ascending = sorted(radii)
    curve = Curve(norm=norm, radii=tuple(ascending), robust=tuple(robust[r] for r in ascending),
                  attacked=tuple(attacked[r] for r in ascending), invalid=invalid, seconds=time.perf_counter() - start)
    return curve, broken


def evaluate_model(
    model: nn.Module,
    dataset: DatasetPlugin,
    norms: Sequence[Norm],
    eps: Mapping[Norm, Fraction],
    *,
    suite: EvalSuite,
    registries: Registries,
    n_ex: int = 1000,
    steps: int = 100,
    batch_size: int = 500,
    device: torch.device | None = None,
    seed: int = 0,
    name: str = "model",
    progress: ProgressReporter | None = None,
    channels_last: bool = False,
    strict: bool = False,
    sweep: Mapping[Any, Sequence[Any]] | None = None,
) -> EvalResult:
    """Evaluate one model on the first ``n_ex`` test points (the papers' protocol uses the first 1000).

    Inside a process group every rank must call this with the same arguments; each attacks its share of
    the batches (see the module docstring) and every rank returns the full result. ``channels_last``
    hands image batches to the model in that memory format (for a model already converted to it).
    Attacks and checks run in float32: no autocast, whose weaker gradients would overstate robustness.
    ``strict`` raises :class:`InvalidPointsError` when an attack returns a point outside its ball or [0, 1]
    (otherwise such points are projected and counted, see the module docstring).
    ``sweep`` (``{norm: radii}``) also measures robust accuracy at each of a norm's radii (a :class:`Curve` per
    norm in ``curves``), attacking from the largest radius down (see :func:`_sweep` for the work it saves and
    the assumption that saving rests on); the radii of ``eps`` are evaluated on their own, as without a sweep.
    """
    progress = progress if progress is not None and distributed.is_main() else ProgressReporter()
    sweeps = normalise_sweeps(sweep)  # a malformed radius fails before any compute
    device = device or next(model.parameters()).device
    test = dataset.test()
    n = min(n_ex, len(test))
    if n <= 0:
        raise BadInputError(f"--n-ex must be positive, got {n_ex}.")
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test, range(n)), batch_size=n)
    x_all, y_all = next(iter(loader))
    start = time.perf_counter()
    was_training = model.training
    model.eval()
    flags = _requires_grad_off(model)
    try:
        clean = torch.zeros(n, dtype=torch.bool)
        with torch.no_grad():
            for part in distributed.shard_round_robin(torch.arange(n).split(batch_size)):
                clean[part] = model(x_all[part].to(device)).argmax(1).cpu() == y_all[part]
        clean = distributed.all_reduce_sum(clean) > 0
        attacker = _Attacker(model, x_all, y_all, suite=suite, registries=registries, num_classes=dataset.num_classes,
                             steps=steps, batch_size=batch_size, device=device, seed=seed, name=name, progress=progress,
                             channels_last=channels_last, strict=strict)
        robust: dict[Norm, Tensor] = {}
        invalid: dict[Norm, int] = {}
        for norm in sort_norms(norms):
            robust[norm], invalid[norm], _ = attacker.run(norm, Fraction(eps[norm]), clean)
            _warn_invalid(name, norm, invalid[norm])
        seconds = time.perf_counter() - start  # the sweep's time is its curves' own
        curves = {}
        for norm, radii in sweeps.items():
            curves[norm], broken = _sweep(attacker, norm, radii, clean,
                                          (Fraction(eps[norm]), clean & ~robust[norm]) if norm in robust else None)
            if norm in robust:  # the balls are nested: broken within a ball no larger than --eps is broken at --eps
                for radius, mask in broken.items():
                    if radius <= Fraction(eps[norm]):
                        robust[norm] = robust[norm] & ~mask
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
    union = clean.clone()
    for mask in robust.values():
        union &= mask
    return EvalResult(
        name=name,
        clean=float(clean.float().mean()),
        robust={k: float(v.float().mean()) for k, v in robust.items()},
        union=float(union.float().mean()),
        n=n,
        suite=suite.name,
        eps={k: Fraction(eps[k]) for k in sort_norms(norms)},
        dataset=dataset.name,
        seconds=seconds,
        invalid=invalid,
        per_point={"clean": clean, "union": union, **{k.value: v for k, v in robust.items()}},
        curves=curves,
    )


@dataclass
class EvalReport:
    """Rows of a table; with a base model, the first row is the base and deltas are against it."""

    results: list[EvalResult]
    has_base: bool = False
    #: where the result was stored (``<run>/eval.json``), for an evaluation of a run
    saved: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"results": [r.as_dict() for r in self.results]}


def weights_checksum(run_dir: str | Path) -> str | None:
    """The SHA-256 of a run's final weights, from the sidecar robustft writes with ``model.pt`` (None without one)."""
    sidecar = checksum_path(Path(run_dir) / "model.pt")
    try:
        words = sidecar.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None
    return words[0] if words else None


def save_run_eval(report: EvalReport, run_dir: str | Path, settings: Mapping[str, Any]) -> Path | None:
    """Store ``report`` in ``<run>/eval.json`` (atomically) with the settings it was made with and the checksum of
    the weights it evaluated, so that a later ``robustft plot`` can tell a stale evaluation. A folder that cannot
    be written is a warning, not a failed evaluation."""
    path = Path(run_dir) / EVAL_FILE
    data = {**report.as_dict(), "settings": dict(settings), "weights_sha256": weights_checksum(run_dir)}
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        log.warning("The evaluation could not be stored in %s (%s).", path, exc.strerror or exc)
        return None
    except DiskFullError as exc:
        log.warning("The evaluation could not be stored: %s", exc.message)
        return None
    return path


def store_sanity(path: str | Path, checks: Sequence[Any]) -> None:
    """Add the gradient-masking checks of ``eval --sanity`` to a stored evaluation (``"sanity"``, as in ``--json``),
    so that reports show them; a file that cannot be rewritten is a warning."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        atomic_write_text(path, json.dumps({**data, "sanity": [c.as_dict() for c in checks]}, indent=2) + "\n")
    except (OSError, ValueError, DiskFullError) as exc:
        log.warning("The sanity checks could not be stored in %s (%s).", path, getattr(exc, "message", None) or exc)


def load_run_model(
    run_dir: str | Path, registries: Registries, device: torch.device, dataset: DatasetPlugin | None = None,
    *, strict: bool = False, **model_options: Any,
) -> tuple[nn.Module, dict[str, Any]]:
    """The fine-tuned model of a run: its base architecture with the run's final weights.

    robustft writes a SHA-256 sidecar with every ``model.pt``; weights without one cannot be checked, which is
    a warning (an error with ``strict``)."""
    run_dir = Path(run_dir)
    info = read_run_info(run_dir)
    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise UserError(f"Run {str(run_dir)!r} has no final weights (model.pt): it did not finish.")
    if not checksum_path(weights).is_file():
        message = (f"The weights file {str(weights)!r} has no checksum file ({checksum_path(weights).name}), so it "
                   "cannot be checked; robustft writes one with every model.pt")
        if strict:
            raise UserError(message + " (--strict).")
        log.warning("%s.", message)
    state = load_torch(weights, "weights file")  # refuse a damaged or unsafe file before any compute
    zoo, model_info = resolve_model(info["base_model"], registries)
    options = {**info.get("model_options", {}), **model_options}
    model = zoo.load(model_info, device=device, dataset=dataset, **options).to(device)
    try:
        model.load_state_dict(state["model"] if isinstance(state, dict) and "model" in state else state)
    except (RuntimeError, KeyError, TypeError) as exc:
        raise UserError(f"The weights in {str(weights)!r} do not fit model {info['base_model']!r} ({str(exc).splitlines()[0]}).") from None
    return model, info


def evaluate(
    *,
    model: str | None = None,
    run: str | Path | None = None,
    dataset: str | None = None,
    norms: str | Sequence[Norm] = "1,2,inf",
    eps: Mapping[Any, Any] | None = None,
    n_ex: int = 1000,
    suite: str = "e-at",
    steps: int = 100,
    batch_size: int = 500,
    device: str = "auto",
    seed: int = 0,
    host: PluginHost | None = None,
    progress: ProgressReporter | None = None,
    model_options: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    channels_last: bool | None = None,
    cudnn_benchmark: bool | None = None,
    strict: bool = False,
    radii: Mapping[Any, Sequence[Any]] | None = None,
    save: bool = True,
) -> EvalReport:
    """Evaluate a model (``model``), a run and its base (``run``), or, with neither, the latest run and its base.

    ``model_options`` (``model_dir``, ``checkpoint``, ``arch``, ``download``) go to the zoo and
    ``data_options`` (``data_dir``, ``image_size``, ``download``) to the data set; for a run they
    override what the run recorded. ``channels_last`` and ``cudnn_benchmark`` (None: on for CUDA, off
    on the CPU) are the GPU path of fine-tuning, without its mixed precision (see :func:`evaluate_model`).
    ``strict`` makes an adversarial point outside its ball or [0, 1] an error instead of a projected point.
    ``radii`` (``{norm: radii}``, see :mod:`robustft.sweep`) adds a radius sweep per norm to every row
    (:func:`evaluate_model`'s ``sweep``). The evaluation of a run is stored in ``<run>/eval.json``
    (:func:`save_run_eval`) unless ``save`` is False.
    """
    if model is not None and run is not None:
        raise BadInputError("Give --model or --run, not both.")
    if n_ex <= 0:
        raise BadInputError(f"--n-ex must be positive, got {n_ex}.")
    if steps <= 0:
        raise BadInputError(f"--steps must be positive, got {steps}.")
    if batch_size <= 0:
        raise BadInputError(f"--batch-size must be positive, got {batch_size}.")
    if not 0 <= seed < MAX_SEED:
        raise BadInputError(f"--seed must be between 0 and 2**62, got {seed}.")
    registries = (host or get_host()).registries
    norm_list = parse_norms(norms) if isinstance(norms, str) else sort_norms(norms)
    sweeps = normalise_sweeps(radii)
    suite_obj = registries.suites.get(suite)
    user_eps = normalise_eps(eps or {})
    # Under torchrun: this rank's GPU, and the process group (a no-op in a plain process).
    torch_device = distributed.local_device(select_device(device))
    distributed.init_from_env(torch_device)

    m_options = {k: v for k, v in (model_options or {}).items() if v is not None}
    d_options = {k: v for k, v in (data_options or {}).items() if v is not None}
    if model is not None:
        zoo, info = resolve_model(model, registries)
        data = resolve_dataset(dataset or info.dataset, registries, **d_options)
        run_eps: dict[Norm, Fraction] = {}
        targets = [(model, zoo.load(info, device=torch_device, dataset=data, **m_options).to(torch_device))]
        has_base = False
    else:
        run_dir = Path(run) if run is not None else latest_run()
        info_dict = read_run_info(run_dir)
        zoo, info = resolve_model(info_dict["base_model"], registries)
        d_options = {**info_dict.get("data_options", {}), **d_options}
        data = resolve_dataset(dataset or info_dict["dataset"], registries, **d_options)
        tuned, _ = load_run_model(run_dir, registries, torch_device, dataset=data, strict=strict, **m_options)
        run_eps = normalise_eps(info_dict.get("eps", {}))
        m_options = {**info_dict.get("model_options", {}), **m_options}
        base = zoo.load(info, device=torch_device, dataset=data, **m_options).to(torch_device)
        targets = [(info_dict["base_model"], base), (f"+ {info_dict['scheme']}", tuned)]
        has_base = True
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = on_for_cuda(cudnn_benchmark, torch_device)
    channels_last = on_for_cuda(channels_last, torch_device)
    if channels_last:
        for _, net in targets:
            net.to(memory_format=torch.channels_last)
    radii = {**data.default_eps, **run_eps, **user_eps}
    missing = [n for n in norm_list if n not in radii]
    if missing:
        raise BadInputError(f"Data set {data.name!r} has no default radius for norm {missing[0]}: give --eps {missing[0]}=RADIUS.")
    check_radii(radii, norm_list, data.name, data.dim)
    results = [
        evaluate_model(
            net, data, norm_list, radii, suite=suite_obj, registries=registries, n_ex=n_ex, steps=steps,
            batch_size=batch_size, device=torch_device, seed=seed, name=label, progress=progress, channels_last=channels_last,
            strict=strict, sweep=sweeps,
        )
        for label, net in targets
    ]
    report = EvalReport(results=results, has_base=has_base)
    if has_base:
        results[-1].run = str(run_dir)
        if save and distributed.is_main():
            report.saved = save_run_eval(report, run_dir, {"norms": [n.value for n in norm_list], "n_ex": n_ex, "steps": steps,
                                                           "suite": suite_obj.name, "seed": seed, "strict": strict})
    return report
