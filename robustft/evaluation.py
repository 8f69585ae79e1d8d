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
from robustft.io import checksum_path, load_torch
from robustft.lp import check_in_ball_and_box, project
from robustft.models import on_for_cuda, resolve_dataset, resolve_model, select_device
from robustft.norms import Norm, eps_to_strings, format_radius, normalise_eps, parse_norms, sort_norms
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.registry import Registries
from robustft.rundir import latest_run, read_run_info

log = logging.getLogger("robustft")


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
) -> EvalResult:
    """Evaluate one model on the first ``n_ex`` test points (the papers' protocol uses the first 1000).

    Inside a process group every rank must call this with the same arguments; each attacks its share of
    the batches (see the module docstring) and every rank returns the full result. ``channels_last``
    hands image batches to the model in that memory format (for a model already converted to it).
    Attacks and checks run in float32: no autocast, whose weaker gradients would overstate robustness.
    ``strict`` raises :class:`InvalidPointsError` when an attack returns a point outside its ball or [0, 1]
    (otherwise such points are projected and counted, see the module docstring).
    """
    progress = progress if progress is not None and distributed.is_main() else ProgressReporter()
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
        robust: dict[Norm, Tensor] = {}
        invalid: dict[Norm, int] = {}
        for norm in sort_norms(norms):
            radius = float(eps[norm])
            still = clean.clone()
            invalid[norm] = 0
            attacks = suite.attacks(
                norm, radius, num_classes=dataset.num_classes, steps=steps, seed=seed, registry=registries.attacks
            )
            for label, attack in attacks:
                idx = still.nonzero().flatten()
                if idx.numel() == 0:
                    break
                torch.manual_seed(seed)
                # The batches one process would form, dealt round-robin over the ranks (one rank: all).
                mine = distributed.shard_round_robin(idx.split(batch_size))
                broken = torch.zeros(n, dtype=torch.bool)
                outside = torch.zeros(1, dtype=torch.int64)
                progress.start(f"{name} {norm.label} {label}", len(mine))
                for part in mine:
                    x, y = x_all[part].to(device), y_all[part].to(device)
                    if channels_last and x.dim() == 4:
                        x = x.contiguous(memory_format=torch.channels_last)
                    x_adv, projected = valid_adversarial(attack(model, x, y).x_adv.detach(), x, norm, radius)
                    with torch.no_grad():
                        wrong = model(x_adv).argmax(1).cpu() != y.cpu()
                    broken[part[wrong]] = True
                    outside += projected.sum().cpu()
                    progress.advance({"robust": f"{int((still & ~broken).sum())}/{n}"})
                progress.stop()
                still &= ~(distributed.all_reduce_sum(broken) > 0)
                count = int(distributed.all_reduce_sum(outside))
                invalid[norm] += count
                if count and strict:
                    raise InvalidPointsError(
                        f"Attack {label!r} returned {count} point(s) outside the {norm.label} ball of radius "
                        f"{format_radius(Fraction(eps[norm]))} or [0, 1] for {name} (--strict)."
                    )
            robust[norm] = still
            if invalid[norm] and distributed.is_main():
                log.warning(
                    "%s: %d adversarial point(s) in %s lay outside the ball or [0, 1]; they were projected onto both "
                    "and counted as the projected points classify.",
                    name, invalid[norm], norm.label,
                )
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
        seconds=time.perf_counter() - start,
        invalid=invalid,
        per_point={"clean": clean, "union": union, **{k.value: v for k, v in robust.items()}},
    )


@dataclass
class EvalReport:
    """Rows of a table; with a base model, the first row is the base and deltas are against it."""

    results: list[EvalResult]
    has_base: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"results": [r.as_dict() for r in self.results]}


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
) -> EvalReport:
    """Evaluate a model (``model``), a run and its base (``run``), or, with neither, the latest run and its base.

    ``model_options`` (``model_dir``, ``checkpoint``, ``arch``, ``download``) go to the zoo and
    ``data_options`` (``data_dir``, ``image_size``, ``download``) to the data set; for a run they
    override what the run recorded. ``channels_last`` and ``cudnn_benchmark`` (None: on for CUDA, off
    on the CPU) are the GPU path of fine-tuning, without its mixed precision (see :func:`evaluate_model`).
    ``strict`` makes an adversarial point outside its ball or [0, 1] an error instead of a projected point.
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
    results = [
        evaluate_model(
            net, data, norm_list, radii, suite=suite_obj, registries=registries, n_ex=n_ex, steps=steps,
            batch_size=batch_size, device=torch_device, seed=seed, name=label, progress=progress, channels_last=channels_last,
            strict=strict,
        )
        for label, net in targets
    ]
    if has_base:
        results[-1].run = str(run_dir)
    return EvalReport(results=results, has_base=has_base)
