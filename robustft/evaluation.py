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

The attacks and their checks run in robustft/attacking.py, "what to evaluate" (a model, or a run and its base)
is resolved in robustft/subjects.py, and a run's evaluation is stored by robustft/eval_store.py.
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
from robustft.attacking import Attacker, InvalidPointsError, sweep_radii, valid_adversarial, warn_invalid
from robustft.config import MAX_SEED
from robustft.contracts import DatasetPlugin, EvalSuite
from robustft.errors import BadInputError
from robustft.eval_store import EVAL_FILE, save_run_eval, store_sanity, weights_checksum
from robustft.geometry import check_radii
from robustft.models import on_for_cuda, select_device
from robustft.norms import Norm, eps_to_strings, normalise_eps, parse_norms, sort_norms
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.registry import Registries
from robustft.subjects import Subjects, load_run_model, one_model_or_run, resolve
from robustft.sweep import Curve, normalise_sweeps

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


def _start_masks(start: Mapping[Any, Tensor] | None, n: int) -> dict[Norm, Tensor]:
    """``start`` with norms parsed and masks as boolean CPU vectors, each checked to have one entry per point."""
    masks = {Norm.parse(norm): torch.as_tensor(mask).to("cpu", torch.bool).flatten() for norm, mask in (start or {}).items()}
    for norm, mask in masks.items():
        if len(mask) != n:
            raise BadInputError(f"The starting mask of norm {norm} has {len(mask)} entries; the evaluation has {n} points.")
    return masks


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
    start: Mapping[Any, Tensor] | None = None,
) -> EvalResult:
    """Evaluate one model on the first ``n_ex`` test points (the papers' protocol uses the first 1000).

    Inside a process group every rank must call this with the same arguments; each attacks its share of
    the batches (see the module docstring) and every rank returns the full result. ``channels_last``
    hands image batches to the model in that memory format (for a model already converted to it).
    Attacks and checks run in float32: no autocast, whose weaker gradients would overstate robustness.
    ``strict`` raises :class:`InvalidPointsError` when an attack returns a point outside its ball or [0, 1]
    (otherwise such points are projected and counted, see the module docstring).
    ``sweep`` (``{norm: radii}``) also measures robust accuracy at each of a norm's radii (a :class:`Curve` per
    norm in ``curves``), attacking from the largest radius down (see :func:`robustft.attacking.sweep_radii` for the work it saves and
    the assumption that saving rests on); the radii of ``eps`` are evaluated on their own, as without a sweep.
    ``start`` (``{norm: mask}``, a boolean per point of the ``n`` evaluated) continues an earlier evaluation of the
    same points, model and radius: its ``per_point[norm.value]``. A norm's attacks then run only on the points
    the mask leaves robust and the others count as broken, so the result is that of the earlier attacks followed
    by ``suite``'s, without running the earlier ones again (``eval --sanity``'s ``more-restarts``, which adds
    restarts to the evaluation of ``more-steps``'s baseline, robustft/sanity.py).
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
    starts = _start_masks(start, n)
    began = time.perf_counter()
    was_training = model.training
    model.eval()
    flags = _requires_grad_off(model)
    try:
        clean = torch.zeros(n, dtype=torch.bool)
        with torch.no_grad():
            for part in distributed.shard_round_robin(torch.arange(n).split(batch_size)):
                clean[part] = model(x_all[part].to(device)).argmax(1).cpu() == y_all[part]
        clean = distributed.all_reduce_sum(clean) > 0
        attacker = Attacker(
            model,
            x_all,
            y_all,
            suite=suite,
            registries=registries,
            num_classes=dataset.num_classes,
            steps=steps,
            batch_size=batch_size,
            device=device,
            seed=seed,
            name=name,
            progress=progress,
            channels_last=channels_last,
            strict=strict,
        )
        robust: dict[Norm, Tensor] = {}
        invalid: dict[Norm, int] = {}
        for norm in sort_norms(norms):
            still = clean & starts[norm] if norm in starts else clean
            robust[norm], invalid[norm], _ = attacker.run(norm, Fraction(eps[norm]), still)
            warn_invalid(name, norm, invalid[norm])
        seconds = time.perf_counter() - began  # the sweep's time is its curves' own
        curves = {}
        for norm, radii in sweeps.items():
            curves[norm], broken = sweep_radii(
                attacker, norm, radii, clean, (Fraction(eps[norm]), clean & ~robust[norm]) if norm in robust else None
            )
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
    #: what was evaluated, its networks loaded: ``eval --sanity`` checks the same ones without loading them again
    subjects: Subjects | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return {"results": [r.as_dict() for r in self.results]}


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
    one_model_or_run(model, run)  # before any other complaint
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

    subjects = resolve(
        model=model, run=run, dataset=dataset, registries=registries, model_options=model_options, data_options=data_options, strict=strict
    )
    data = subjects.dataset
    radii = subjects.radii(norm_list, user_eps)  # a missing or malformed radius fails before any model loads
    check_radii(radii, norm_list, data.name, data.dim)
    # The run's model first: its weights are the likelier to be refused, before the base model costs a load.
    for subject in reversed(subjects.models):
        subject.model(torch_device)
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = on_for_cuda(cudnn_benchmark, torch_device)
    channels_last = on_for_cuda(channels_last, torch_device)
    if channels_last:
        for subject in subjects.models:
            subject.model(torch_device).to(memory_format=torch.channels_last)
    results = [
        evaluate_model(
            subject.model(torch_device),
            data,
            norm_list,
            radii,
            suite=suite_obj,
            registries=registries,
            n_ex=n_ex,
            steps=steps,
            batch_size=batch_size,
            device=torch_device,
            seed=seed,
            name=subject.label,
            progress=progress,
            channels_last=channels_last,
            strict=strict,
            sweep=sweeps,
        )
        for subject in subjects.models
    ]
    report = EvalReport(results=results, has_base=subjects.has_base, subjects=subjects)
    if subjects.has_base:
        run_dir = subjects.run_dir
        results[-1].run = str(run_dir)
        if save and distributed.is_main():
            report.saved = save_run_eval(
                report,
                run_dir,
                {
                    "norms": [n.value for n in norm_list],
                    "n_ex": n_ex,
                    "steps": steps,
                    "suite": suite_obj.name,
                    "seed": seed,
                    "strict": strict,
                },
            )
    return report


# Names that lived here before the modules above took them over: still importable from robustft.evaluation.
__all__ = [
    "EVAL_FILE",
    "EvalReport",
    "EvalResult",
    "InvalidPointsError",
    "evaluate",
    "evaluate_model",
    "load_run_model",
    "save_run_eval",
    "store_sanity",
    "valid_adversarial",
    "weights_checksum",
]
