"""The papers' CIFAR-10 claims, reproduced at CPU scale on real images: one command, resumable.

    python benchmarks/reproduce.py                  # the CPU-scale reproduction (hours on 2 cores; resumable)
    python benchmarks/reproduce.py --quick          # the whole pipeline on a few images, in minutes
    python benchmarks/reproduce.py --part seeded,full-e-at &   # split over processes (one thread each) ...
    python benchmarks/reproduce.py --part full-base,single,max,max-attack,msd-sparse; wait
    python benchmarks/reproduce.py --report docs/reproduction.md   # ... then collect and write the report
    python benchmarks/reproduce.py --paper --model file:rn18-linf.pt --arch preact-resnet18-softplus
                                                    # the papers' own setting (E-AT Table 12), on a GPU

Starting point: robustft's built-in l-inf-robust CIFAR-10 model (``cifar10-preact-w16-linf``, trained by
``benchmarks/train_cifar_base.py``). It is fine-tuned for 3 epochs with every scheme of the papers' Table 12
/ Table 2 (E-AT and RAMP with 3 seeds, the others with 1), plus l-inf AT as the reference for the cost per
epoch, on a fixed subset of the CIFAR-10 training images (``--n-train``). Every model is evaluated on the
same test points with a reduced protocol (APGD-CE and APGD-T with 3 targets, ``--steps`` steps, in every
norm; no l1 restarts), and the base and one E-AT model once more with the full E-AT protocol on 1,000 points.
Radii are the papers' (l-inf 8/255, l2 0.5, l1 12). The findings go to ``docs/reproduction.md`` (``--report``).

Everything is cached in ``--out``: finished runs are reused, interrupted ones continue from their last
checkpoint (``robustft compare``), and each evaluation is stored per model and per norm, so killing the
command loses at most one norm of one evaluation. The data is the JPEG copy of CIFAR-10
(``--data``, default ``$ROBUSTFT_CIFAR10_JPEG`` or ``~/.cache/robustft-data/cifar10-jpeg``); without it the
command says so and stops. ``--quick`` fabricates a small image folder instead (the test suite runs it).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from shared_work import do_once

from robustft.compare import compare
from robustft.errors import UserError
from robustft.evaluation import evaluate_model, load_run_model
from robustft.io import atomic_write_text
from robustft.loggers import RunLogger
from robustft.models import resolve_dataset, resolve_model
from robustft.norms import Norm
from robustft.pluginmanager import PluginHost
from robustft_plugins.suites.eat_protocol import EATProtocol

BASE_MODEL = "cifar10-preact-w16-linf"
#: (folder, schemes, how many seeds ("seeds", "max-seeds" or 1), scheme options, row label suffix). linf-at is the
#: reference of the cost per epoch; MAX is run both ways of picking the worst norm per point (by the outer loss, the
#: default, and by the attack's loss, as the reference codes do), to settle which default the numbers support. MSD
#: runs once more with Maini et al.'s l1 sparsity, with which its l1 step wins most steps on the base model
#: (benchmarks/msd_steps.py), to test the likely reason of its weak l1 (claim (d)).
GROUPS = (
    ("seeded", ("e-at", "ramp"), "seeds", {}, ""),
    ("single", ("linf-at", "e-at-uniform", "sat", "avg", "msd", "l1-at"), 1, {}, ""),
    ("max", ("max",), "max-seeds", {}, ""),
    ("max-attack", ("max",), "max-seeds", {"select": "attack"}, " (select=attack)"),
    ("msd-sparse", ("msd",), 1, {"l1-topk": "0.005"}, " (l1-topk=0.005)"),
)
GROUP_NAMES = tuple(group[0] for group in GROUPS)
FULL_NAMES = ("base", "e-at")
#: Robust accuracy against the radius (the reduced protocol on the first points): l-inf 1/255..12/255,
#: l2 0.1..1.0, l1 2..16, for the base and the first E-AT model (``--part curves``).
CURVE_RADII = {Norm.LINF: ("1/255", "12/255", 12), Norm.L2: ("1/10", "1", 10), Norm.L1: ("2", "16", 8)}
CURVE_POINTS = {"full": 100, "quick": 6}  # 30 radii per model: the shape of a curve, at a tenth of the full evaluation's cost
#: The cost per epoch of claim (c), measured side by side (``--part timing``): every scheme of the table, one short
#: run each per round, round-robin, so that a change of the machine's load hits every scheme alike.
TIMED = ("linf-at", "e-at", "e-at-uniform", "sat", "avg", "max", "msd", "ramp", "l1-at")
TIMING = {"full": (3, 384), "quick": (1, 20)}  # (rounds, training images per run)
NORMS = (Norm.LINF, Norm.L2, Norm.L1)


class ReducedProtocol(EATProtocol):
    """The E-AT protocol with fewer targets and no l1 restarts, applied to every row of the scheme table alike."""

    name = "e-at-reduced"
    description = "E-AT protocol reduced for CPUs: APGD-CE (1 restart) then APGD-T with 3 targets, every norm"
    aliases = ()
    settings = {Norm.LINF: (1, 3), Norm.L2: (1, 3), Norm.L1: (1, 3)}


class CpuClock(RunLogger):
    """The process CPU time of each epoch's batches after the first, written to ``cpu-clock.json`` in the run
    folder (``--part timing``). With one thread per process (``OMP_NUM_THREADS=1``), other processes on the
    machine do not change it, as they change the seconds on the wall clock; the first batch is left out, as
    it warms up."""

    name = "cpu-clock"
    description = "process CPU seconds of each epoch's batches after the first (benchmarks/reproduce.py)"

    def open(self, run_dir: Path, config: Any, history: Any) -> None:
        self.path, self.at, self.epochs = run_dir / "cpu-clock.json", {}, []

    def log(self, record: Any) -> None:
        if record.get("kind") == "batch":
            self.at[record["batch"]] = time.process_time()
        elif record.get("kind") == "epoch" and len(self.at) > 1:
            first, last = min(self.at), max(self.at)
            self.epochs.append({"epoch": record["epoch"], "batches": last - first, "cpu_seconds": self.at[last] - self.at[first]})
            self.path.write_text(json.dumps(self.epochs))
            self.at = {}


@dataclass(frozen=True)
class Scale:
    n_train: int
    epochs: int
    attack_steps: int
    n_ex: int
    steps: int
    full_n_ex: int
    full_steps: int
    seeds: int


FULL = Scale(n_train=2000, epochs=3, attack_steps=10, n_ex=500, steps=20, full_n_ex=1000, full_steps=100, seeds=3)
QUICK = Scale(n_train=20, epochs=1, attack_steps=1, n_ex=6, steps=1, full_n_ex=6, full_steps=1, seeds=2)
#: E-AT Table 12: every training image, 1,000 points, the full protocol for every row, 5 seeds there (3 here).
PAPER = Scale(n_train=50_000, epochs=3, attack_steps=10, n_ex=1000, steps=100, full_n_ex=1000, full_steps=100, seeds=3)


def host() -> PluginHost:
    """The installed plugins plus the reduced protocol and the CPU clock."""
    import types

    from robustft.hookspecs import hookimpl

    plugins = PluginHost()
    plugins.register(
        types.SimpleNamespace(
            register_suites=hookimpl(lambda register: register(ReducedProtocol())),
            register_loggers=hookimpl(lambda register: register(CpuClock)),
        ),
        name="reproduce",
    )
    return plugins


def fabricate(root: Path, per_class: int = 2) -> Path:
    """A CIFAR-10-shaped image folder of random images (the pipeline check of ``--quick``)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in range(10):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def evaluate_on_table_points(
    model: torch.nn.Module,
    name: str,
    data: Any,
    norms: list[Norm],
    suite: Any,
    registries: Any,
    n_ex: int,
    steps: int,
    device: torch.device,
    sweep: dict[Norm, Any] | None = None,
) -> Any:
    """``evaluate_model`` at the data set's radii, in batches of 250 with attack seed 0: what
    ``robustft eval --n-ex N --batch-size 250`` computes, so that a user can check any number of this page."""
    return evaluate_model(
        model,
        data,
        norms,
        data.default_eps,
        suite=suite,
        registries=registries,
        n_ex=n_ex,
        steps=steps,
        batch_size=250,
        device=device,
        seed=0,
        name=name,
        sweep=sweep,
    )


def evaluate_per_norm(
    model: torch.nn.Module,
    name: str,
    data: Any,
    suite: Any,
    registries: Any,
    n_ex: int,
    steps: int,
    cache: Path,
    device: torch.device,
    wait: bool = True,
) -> dict[str, Any] | None:
    """Clean, per-norm and union accuracy, each norm cached on its own (per-point masks), so a killed run
    keeps every finished norm. Processes running the same part share the norms (``shared_work.py``): start two
    with one thread each and the three norms take two norms' time. ``wait=False``: None while another process
    still evaluates a norm."""
    cache.mkdir(parents=True, exist_ok=True)

    def path(norm: str) -> Path:
        return cache / f"{norm}.json"

    def evaluate(norm: str) -> None:
        result = evaluate_on_table_points(model, name, data, [Norm.parse(norm)], suite, registries, n_ex, steps, device)
        stored = {
            "clean": result.per_point["clean"].tolist(),
            "robust": result.per_point[norm].tolist(),
            "invalid": result.invalid[Norm.parse(norm)],
            "seconds": result.seconds,
        }
        atomic_write_text(path(norm), json.dumps(stored))

    if not do_once([n.value for n in NORMS], lambda norm: path(norm).is_file(), evaluate, cache, wait=wait):
        return None
    masks: dict[str, list[bool]] = {}
    invalid = {}
    for norm in NORMS:
        stored = json.loads(path(norm.value).read_text())
        masks["clean"], masks[norm.value], invalid[norm.value] = stored["clean"], stored["robust"], stored["invalid"]
    n = len(masks["clean"])
    union = [all(masks[k][i] for k in masks) for i in range(n)]
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    return {
        "name": name,
        "n": n,
        "clean": mean(masks["clean"]),
        "robust": {n_.value: mean(masks[n_.value]) for n_ in NORMS},
        "union": mean(union),
        "invalid": invalid,
    }


def radius_curve(
    model: torch.nn.Module, name: str, data: Any, suite: Any, registries: Any, n_ex: int, steps: int, path: Path, device: torch.device
) -> dict[str, Any]:
    """Robust accuracy at each radius of :data:`CURVE_RADII` (``robustft eval --radii``), cached in ``path``."""
    from robustft.norms import parse_radius
    from robustft.sweep import sweep_radii

    if path.is_file():
        return json.loads(path.read_text())
    sweep = {norm: sweep_radii(parse_radius(a), parse_radius(b), count) for norm, (a, b, count) in CURVE_RADII.items()}
    result = evaluate_on_table_points(model, name, data, list(NORMS), suite, registries, n_ex, steps, device, sweep=sweep).as_dict()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2))
    return result


def time_schemes(
    common: dict[str, Any], folder: Path, rounds: int, images: int, schemes: tuple[str, ...] = TIMED, least: int | None = None
) -> dict[str, Any] | None:
    """Seconds per training image of every scheme in :data:`TIMED`, from one-epoch runs on ``images`` images taken
    round-robin (``rounds`` rounds, seeds 0, 1, ...); a scheme's figure is its median run. Each finished run is
    recorded in ``timing.json`` and its folder removed, so a killed measurement continues where it stopped.
    ``schemes`` (``--timing-schemes``) adds rounds for some schemes only, e.g. more rounds of E-AT and l-inf AT
    to resolve a ratio near 1 (``--timing-rounds``)."""
    import shutil

    from robustft import finetune
    from robustft.io import read_jsonl

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "timing.json"
    stored: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    # compare's evaluation settings are not fine-tuning options; each scheme trains on its own default norms
    options = {k: v for k, v in common.items() if k not in {"n_ex", "steps", "suite", "norms"}}
    for seed in range(rounds):
        for scheme in schemes:
            key = f"{scheme}/seed{seed}"
            if key in stored:
                continue
            run_dir = folder / key.replace("/", "-")
            shutil.rmtree(run_dir, ignore_errors=True)  # a run killed while being timed starts again
            finetune(**{**options, "epochs": 1, "n_train": images}, scheme=scheme, seed=seed, out=str(run_dir), log=["cpu-clock"])
            epoch = next(r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("kind") == "epoch")
            # an epoch of one batch (--quick) has no batches after the first: then only the wall clock
            clock_file = run_dir / "cpu-clock.json"
            clock = json.loads(clock_file.read_text())[0] if clock_file.is_file() else {"cpu_seconds": None, "batches": 0}
            stored[key] = {
                "seconds": epoch["seconds"],
                "images": epoch["images"],
                "passes": sum(int(v) for v in epoch.get("passes", {}).values()),
                # batches 2..N of the epoch: process CPU time, which other processes do not change
                "cpu_seconds": clock["cpu_seconds"],
                "cpu_images": clock["batches"] * epoch["images"] // max(clock["batches"] + 1, 1),
            }
            path.write_text(json.dumps(stored, indent=2))
            shutil.rmtree(run_dir)
    return timing_summary(path, least or rounds)  # the summary needs every scheme's default rounds, not the extra ones


def timing_summary(path: Path, rounds: int) -> dict[str, Any] | None:
    """The side-by-side timing stored in ``path``: seconds and passes per image (median over the rounds) of every
    scheme and its time relative to l-inf AT's; None until every scheme has at least ``rounds`` rounds. A scheme
    with more rounds (``--timing-schemes``) counts all of them."""
    import statistics

    stored = json.loads(path.read_text()) if path.is_file() else {}
    runs = {}
    for scheme in TIMED:
        found, seed = [], 0
        while f"{scheme}/seed{seed}" in stored:
            found.append(stored[f"{scheme}/seed{seed}"])
            seed += 1
        if len(found) < rounds:
            return None
        runs[scheme] = found
    # Process CPU time where every run has it (batches 2..N, one thread: what other processes do not change),
    # else the wall clock of the whole epoch.
    cpu = all(r.get("cpu_seconds") is not None for found in runs.values() for r in found)
    clock = (lambda r: r["cpu_seconds"] / r["cpu_images"]) if cpu else (lambda r: r["seconds"] / r["images"])
    per_image = {scheme: statistics.median(clock(r) for r in found) for scheme, found in runs.items()}
    wall = {scheme: statistics.median(r["seconds"] / r["images"] for r in found) for scheme, found in runs.items()}
    passes = {scheme: statistics.median(r["passes"] / r["images"] for r in found) for scheme, found in runs.items()}
    return {
        "rounds": {scheme: len(found) for scheme, found in runs.items()},
        "images": runs["linf-at"][0]["images"],
        "clock": "process CPU" if cpu else "wall",
        "seconds_per_image": per_image,
        "wall_seconds_per_image": wall,
        "passes_per_image": passes,
        # The round-robin design pairs each scheme's run with l-inf AT's run of the same round: the median of those
        # ratios follows the machine's drift between rounds, which a ratio of two medians does not.
        "relative": {scheme: paired_ratio(runs[scheme], runs["linf-at"], clock) for scheme in TIMED},
        "relative_of_medians": {scheme: per_image[scheme] / per_image["linf-at"] for scheme in TIMED},
        "ratio_range": {scheme: _ratio_range(runs[scheme], runs["linf-at"], clock) for scheme in TIMED},
        "wall_relative": {scheme: paired_ratio(runs[scheme], runs["linf-at"], lambda r: r["seconds"] / r["images"]) for scheme in TIMED},
    }


def paired_ratio(runs: list[dict[str, Any]], reference: list[dict[str, Any]], clock: Any) -> float:
    """The median over the rounds both have of (this scheme's seconds per image / the reference's)."""
    import statistics

    return statistics.median(clock(a) / clock(b) for a, b in zip(runs, reference))


def _ratio_range(runs: list[dict[str, Any]], reference: list[dict[str, Any]], clock: Any) -> tuple[float, float]:
    ratios = [clock(a) / clock(b) for a, b in zip(runs, reference)]
    return min(ratios), max(ratios)


def table_settings(
    scale: Scale,
    dataset: str,
    host: PluginHost,
    device: str,
    *,
    model: str = BASE_MODEL,
    suite: str = ReducedProtocol.name,
    model_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``robustft compare`` settings of the scheme table at ``scale`` (fine-tuning and evaluation alike)."""
    return dict(
        model=model,
        dataset=dataset,
        **(model_options or {}),
        epochs=scale.epochs,
        n_train=scale.n_train,
        attack_steps=scale.attack_steps,
        norms="1,2,inf",
        n_ex=scale.n_ex,
        steps=scale.steps,
        suite=suite,
        host=host,
        device=device,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    scale = QUICK if args.quick else PAPER if args.paper else FULL
    groups, fulls = _parts(args.part)
    if args.paper and not torch.cuda.is_available():
        raise UserError(
            "--paper runs the papers' full setting (all 50,000 images, 1,000 points, the full protocol for "
            "every row: days on a CPU) and needs a CUDA GPU, which this machine does not have."
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_root = fabricate(out / "images") if args.quick else Path(args.data)
    if not (data_root / "train").is_dir():
        raise UserError(
            f"The CIFAR-10 images are not in {str(data_root)!r}: extract cifar10-jpeg.tar.xz there (or pass --data), "
            "or run with --quick to check the pipeline on fabricated images."
        )
    dataset = f"imagefolder:{data_root}"
    plugins = host()
    base_model = args.model or BASE_MODEL
    suite = "e-at" if args.paper else ReducedProtocol.name
    model_options = {"arch": args.arch, "model_dir": args.model_dir} if args.paper else {}
    model_options = {k: v for k, v in model_options.items() if v}
    common = table_settings(scale, dataset, plugins, args.device, model=base_model, suite=suite, model_options=model_options)
    registries = plugins.registries
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    data = resolve_dataset(dataset, registries)
    zoo, info = resolve_model(base_model, registries)
    full_suite = registries.suites.get("e-at")
    base = zoo.load(info, device=device, dataset=data, **model_options)
    # The base model's full evaluation first: it is the model's documented table, and it needs no fine-tuning.
    seeds = {"seeds": scale.seeds, "max-seeds": args.max_seeds or scale.seeds, 1: 1}
    # Each shared piece of work is first done without waiting for other processes (they may hold a norm), and
    # called again with wait=True at the end, which only reads the cache once everything is done; so a process
    # never idles while there is work it can take.
    shared: dict[str, Any] = {}

    def full_protocol(name: str, model: torch.nn.Module, label: str) -> None:
        shared[name] = lambda wait: evaluate_per_norm(
            model, label, data, full_suite, registries, scale.full_n_ex, scale.full_steps, out / "full" / name, device, wait=wait
        )
        shared[name](False)

    if "base" in fulls:
        full_protocol("base", base, base_model)
    rows = []
    base_eval = None
    for folder, schemes, how_many, options, suffix in GROUPS:
        if folder not in groups:
            continue
        report = compare(",".join(schemes), seeds=seeds[how_many], out=out / folder, options=options, **common)
        base_eval = report.base
        rows += [{**row.as_dict(), "scheme": row.scheme + suffix} for row in report.rows]
    if "e-at" in fulls or "curves" in groups:
        # The first E-AT run of the seeded group (its folder is fixed; calling compare for it alone would rewrite
        # that group's compare.json with one scheme).
        first_eat = out / "seeded" / f"e-at-seed{common.get('seed') or 0}"
        if not (first_eat / "model.pt").is_file():
            raise UserError(f"The full E-AT evaluation and the curves need the finished run {str(first_eat)!r}: run --part seeded first.")
        tuned, _ = load_run_model(first_eat, registries, device, dataset=data)
        if "e-at" in fulls:
            full_protocol("e-at", tuned, f"+ e-at ({first_eat.name})")
        if "curves" in groups:
            suite_obj = registries.suites.get(ReducedProtocol.name)
            models = {"base": (base, "base"), "e-at": (tuned, f"+ e-at ({first_eat.name})")}
            (out / "curves").mkdir(parents=True, exist_ok=True)
            shared["curves"] = lambda wait: do_once(  # processes running --part curves share the two models
                list(models),
                lambda name: (out / "curves" / f"{name}.json").is_file(),
                lambda name: radius_curve(
                    models[name][0],
                    models[name][1],
                    data,
                    suite_obj,
                    registries,
                    CURVE_POINTS["quick" if args.quick else "full"],
                    scale.steps,
                    out / "curves" / f"{name}.json",
                    device,
                ),
                out / "curves",
                wait=wait,
            )
            shared["curves"](False)
    finished = {name: task(True) for name, task in shared.items()}
    full = {name: finished[name] for name in FULL_NAMES if name in finished}
    timing = None
    if "timing" in groups:
        rounds, images = TIMING["quick" if args.quick else "full"]
        schemes = tuple(name.strip() for name in args.timing_schemes.split(",")) if args.timing_schemes else TIMED
        unknown = sorted(set(schemes) - set(TIMED))
        if unknown:
            raise UserError(f"Unknown --timing-schemes {', '.join(unknown)}; the timed schemes are {', '.join(TIMED)}.")
        if "linf-at" not in schemes:
            raise UserError("--timing-schemes must include linf-at: each scheme's run is paired with l-inf AT's run of the same round.")
        timing = time_schemes(common, out / "timing", args.timing_rounds or rounds, images, schemes, least=rounds)
    if args.part:
        return {}  # one part of a split run: its results are cached in --out; the last full call writes the summary
    summary = {
        "scale": {**scale.__dict__, "max_seeds": seeds["max-seeds"]},
        "base": base_eval,
        "rows": rows,
        "budget": budget_checks(out, scale.n_train),
        "full": full,
        "curves": [
            json.loads((out / "curves" / f"{name}.json").read_text()) for name in FULL_NAMES if (out / "curves" / f"{name}.json").is_file()
        ],
        "timing": timing,
        "machine": machine(),
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "quick": bool(args.quick),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """The summary of what ``--out`` holds so far, computing nothing: finished and evaluated rows, the full-protocol
    evaluations whose three norms are cached, and the runs still pending (``--collect``)."""
    from robustft.plotting.sources import load_comparison

    scale = QUICK if args.quick else PAPER if args.paper else FULL
    out = Path(args.out)
    rows, base_eval, pending = [], None, []
    for folder, schemes, _, _, suffix in GROUPS:
        if not (out / folder / "compare.json").is_file():
            pending += [f"{folder}: {', '.join(schemes)} (not started)"]
            continue
        try:
            found = load_comparison(out / folder)
        except UserError:
            pending.append(f"{folder}: {', '.join(schemes)} (nothing evaluated yet)")
            continue
        base_eval = base_eval or found["base"]
        done = {row["scheme"] for row in found["schemes"]}
        settings = found["settings"]
        for row in found["schemes"]:
            rows.append({**row, "scheme": row["scheme"] + suffix})
            missing = len(settings["seeds"]) - len(row["seeds"])
            if missing:
                pending.append(f"{folder}: {row['scheme']} ({missing} seed(s) not evaluated yet)")
        pending += [f"{folder}: {name} (not evaluated yet)" for name in settings["schemes"] if name not in done]
    full = {}
    for name in FULL_NAMES:
        files = [out / "full" / name / f"{norm.value}.json" for norm in NORMS]
        if all(f.is_file() for f in files):
            stored = {norm.value: json.loads(f.read_text()) for norm, f in zip(NORMS, files)}
            masks = {"clean": stored[NORMS[0].value]["clean"], **{k: v["robust"] for k, v in stored.items()}}
            n = len(masks["clean"])
            union = sum(all(masks[k][i] for k in masks) for i in range(n)) / n
            full[name] = {
                "name": name,
                "n": n,
                "clean": sum(masks["clean"]) / n,
                "robust": {k: sum(v) / n for k, v in masks.items() if k != "clean"},
                "union": union,
                "invalid": {k: v["invalid"] for k, v in stored.items()},
            }
        else:
            pending.append(f"full protocol: {name} ({sum(f.is_file() for f in files)} of 3 norms done)")
    curves = [
        json.loads((out / "curves" / f"{name}.json").read_text()) for name in FULL_NAMES if (out / "curves" / f"{name}.json").is_file()
    ]
    if len(curves) < len(FULL_NAMES):
        pending.append(f"curves: {len(curves)} of {len(FULL_NAMES)} models swept")
    timing = timing_summary(out / "timing" / "timing.json", TIMING["quick" if args.quick else "full"][0])
    if timing is None:
        pending.append("timing: the side-by-side cost per epoch (--part timing) is not finished")
    return {
        "budget": budget_checks(out, scale.n_train),
        "scale": {**scale.__dict__, "max_seeds": args.max_seeds or scale.seeds},
        "base": base_eval,
        "rows": rows,
        "full": full,
        "curves": curves,
        "timing": timing,
        "machine": machine(),
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "quick": bool(args.quick),
        "pending": pending,
    }


def budget_checks(out: Path, n_train: int) -> list[dict[str, Any]]:
    """E-AT with a larger fine-tuning budget than the table's ``n_train`` (``benchmarks/reproduce_scale.py --out
    <out>/scale-N``), evaluated with the table's settings (the seeded group's: points, protocol, steps, radii):
    ``{"n_train", "row"}`` per finished folder, fewest images first."""
    from robustft.plotting.sources import load_comparison

    try:
        table_eval = json.loads((out / "seeded" / "compare.json").read_text())["eval"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    found = []
    for folder in sorted(out.glob("scale-*")):
        try:
            settings = json.loads((folder / "compare.json").read_text())
            images = int(settings["finetune"]["n_train"])
            row = next(r for r in load_comparison(folder)["schemes"] if r["scheme"] == "e-at")
        except (OSError, ValueError, KeyError, TypeError, StopIteration, UserError):
            continue
        if images > n_train and settings.get("eval") == table_eval:
            found.append({"n_train": images, "row": row})
    return sorted(found, key=lambda check: check["n_train"])


def _parts(part: list[str] | None) -> tuple[set[str], set[str]]:
    """The scheme groups and full evaluations a ``--part`` list selects (everything without one)."""
    if not part:
        return {*GROUP_NAMES, "curves", "timing"}, set(FULL_NAMES)
    chosen = {name.strip() for item in part for name in item.split(",") if name.strip()}
    full = {name.removeprefix("full-") for name in chosen if name.startswith("full-")}
    groups = chosen - {f"full-{name}" for name in full}
    unknown = sorted((groups - set(GROUP_NAMES) - {"curves", "timing"}) | (full - set(FULL_NAMES)))
    if unknown:
        valid = ", ".join([*GROUP_NAMES, *(f"full-{name}" for name in FULL_NAMES), "curves", "timing"])
        raise UserError(f"Unknown --part {', '.join(unknown)}; the parts are {valid}.")
    return groups, full


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# --------------------------------------------------------------------------------------------- claims


def rows_by_scheme(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["scheme"]: row for row in summary["rows"]}


CLAIMS = (
    "(a) the l-inf base is weak in l1 (l1 << l-inf, union ~ l1)",
    "(b) 3 epochs of E-AT raise union by >= 10 points, losing <= 10 in l-inf",
    "(c) an E-AT epoch costs within 10% of an l-inf AT epoch; MAX and AVG at least twice",
    "(d) E-AT's union close to MAX's and MSD's (paper: within about 1 point)",
    "(e) RAMP's union against E-AT's (paper: RAMP ahead by about 1 point)",
)


#: The rows (group: scheme, as the pending list names them) each claim is judged on.
CLAIM_NEEDS = ((), ("seeded: e-at",), (), ("seeded: e-at", "max: max", "single: msd"), ("seeded: e-at", "seeded: ramp"))


def claims(summary: dict[str, Any]) -> list[tuple[str, str, bool | None, str]]:
    """(claim, what was measured, holds?, comment) for the five claims; None: reported only, or pending (a
    partial ``--collect`` summary that lacks the rows a claim needs)."""
    found = []
    unfinished = summary.get("pending") or []
    for text, measure, needs in zip(CLAIMS, (_claim_a, _claim_b, _claim_c, _claim_d, _claim_e), CLAIM_NEEDS):
        # a claim is judged on every seed of the rows it needs, never on the seeds evaluated so far
        if any(item.startswith(f"{need} (") for item in unfinished for need in needs):
            found.append((text, "pending: not every seed of its rows is evaluated yet", None, "pending"))
            continue
        try:
            measured, holds, comment = measure(rows_by_scheme(summary), summary["base"], summary)
        except (KeyError, TypeError):
            measured, holds, comment = "pending: what it needs is not measured yet", None, "pending"
        found.append((text, measured, holds, comment))
    return found


def _claim_a(rows: dict[str, Any], base: dict[str, Any], summary: Any = None) -> tuple[str, bool | None, str]:
    l1, inf, union = base["robust"]["1"], base["robust"]["inf"], base["union"]
    return f"l1 {100 * l1:.1f}, l-inf {100 * inf:.1f}, union {100 * union:.1f}", l1 <= inf - 0.10 and union <= l1 + 1e-9, "must hold"


def _claim_b(rows: dict[str, Any], base: dict[str, Any], summary: Any = None) -> tuple[str, bool | None, str]:
    """On the table's rows, and on each E-AT run with a larger fine-tuning budget (``benchmarks/reproduce_scale.py``,
    the same protocol and points); the verdict says at which budget it holds."""

    def judged(row: dict[str, Any]) -> tuple[float, float, bool]:
        gain = row["union"]["mean"] - base["union"]
        loss = base["robust"]["inf"] - row["robust"]["inf"]["mean"]
        return gain, loss, gain >= 0.10 and loss <= 0.10

    def budget(n_train: int | None, row: dict[str, Any]) -> str:
        seeds = len(row.get("seeds", []))
        images = f"{n_train:,} training images" if n_train else "the table's training images"
        return f"{images} ({seeds} seed{'' if seeds == 1 else 's'})" if seeds else images

    gain, loss, holds = judged(rows["e-at"])
    n_train = (summary or {}).get("scale", {}).get("n_train")
    measured = [f"{budget(n_train, rows['e-at'])}: union {100 * gain:+.1f}, l-inf {-100 * loss:+.1f}"]
    for check in (summary or {}).get("budget", []):
        more_gain, more_loss, more_holds = judged(check["row"])
        measured.append(f"{budget(check['n_train'], check['row'])}: union {100 * more_gain:+.1f}, l-inf {-100 * more_loss:+.1f}")
        if more_holds and not holds:
            return "; ".join(measured), True, f"holds from {check['n_train']:,} training images"
    return "; ".join(measured), holds, "must hold"


def _claim_c(rows: dict[str, Any], base: dict[str, Any], summary: dict[str, Any]) -> tuple[str, bool | None, str]:
    """Judged on seconds, as the papers measure, from the side-by-side timing (``--part timing``); forward and
    backward passes per image, which no other process on the machine can disturb, are printed beside them."""
    timing = summary["timing"]
    relative, passes = timing["relative"], timing["passes_per_image"]
    wall = timing.get("wall_relative", relative)
    shown = ", ".join(
        f"{name} {relative[s]:.2f} (wall {wall[s]:.2f}; passes {passes[s] / passes['linf-at']:.2f})"
        for name, s in (("E-AT", "e-at"), ("MAX", "max"), ("AVG", "avg"), ("L1-AT", "l1-at"))
    )
    rounds = timing.get("rounds")
    paired = min(rounds["e-at"], rounds["linf-at"]) if isinstance(rounds, dict) else timing.get("rounds")
    spread = timing.get("ratio_range", {}).get("e-at")
    of_medians = timing.get("relative_of_medians", {}).get("e-at")
    counted = f" (median of the per-round ratios, {paired} rounds" + (
        f"; E-AT's rounds {spread[0]:.2f} to {spread[1]:.2f}, its ratio of medians {of_medians:.2f})" if spread and of_medians else ")"
    )
    return (
        f"{timing.get('clock', 'wall')} seconds per epoch x l-inf AT's{counted}: {shown}",
        *_judge_c(relative, timing.get("relative_of_medians", relative)),
    )


def _judge_c(paired: dict[str, float], of_medians: dict[str, float]) -> tuple[bool | None, str]:
    """Claim (c)'s verdict. E-AT's 10% is judged on both estimates of its ratio: when they fall on both sides of
    the threshold the machine has not resolved it, and the verdict says so instead of picking one."""
    if not (paired["max"] >= 2 and paired["avg"] >= 2):
        return False, "must hold"
    within = [abs(ratios["e-at"] - 1) <= 0.10 for ratios in (paired, of_medians)]
    if within[0] != within[1]:
        return None, "not resolved: E-AT's two estimates fall on both sides of 1.10"
    return within[0], "must hold"


def _claim_d(rows: dict[str, Any], base: dict[str, Any], summary: Any = None) -> tuple[str, bool | None, str]:
    eat = rows["e-at"]["union"]["mean"]
    return (
        f"E-AT - MAX {100 * (eat - rows['max']['union']['mean']):+.1f}, E-AT - MSD {100 * (eat - rows['msd']['union']['mean']):+.1f}",
        None,
        "reported",
    )


def _claim_e(rows: dict[str, Any], base: dict[str, Any], summary: Any = None) -> tuple[str, bool | None, str]:
    ramp, eat = rows["ramp"]["union"], rows["e-at"]["union"]
    return (
        f"RAMP - E-AT {100 * (ramp['mean'] - eat['mean']):+.1f} (std {100 * ramp['std']:.1f} / {100 * eat['std']:.1f})",
        None,
        "reported",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="A few fabricated images: the pipeline in minutes.")
    parser.add_argument("--out", default=str(Path.home() / ".cache" / "robustft-reproduce"), help="Cache folder (resumable).")
    parser.add_argument(
        "--data", default=os.environ.get("ROBUSTFT_CIFAR10_JPEG", str(Path.home() / ".cache" / "robustft-data" / "cifar10-jpeg"))
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--paper", action="store_true", help="The papers' full setting (E-AT Table 12) for --model; needs a GPU.")
    parser.add_argument("--model", help="With --paper: the l-inf base model (a RobustBench name, or file:PATH with --arch).")
    parser.add_argument("--arch", help="With --paper and a file: model, its architecture (preact-resnet18-softplus).")
    parser.add_argument("--model-dir", help="With --paper: RobustBench's model folder.")
    parser.add_argument(
        "--part",
        action="append",
        help=(
            "Only these scheme groups or full evaluations (comma-separated; repeatable): "
            f"{', '.join(GROUP_NAMES)}, full-base, full-e-at, curves, timing. Split a long run over processes; a last call without "
            "--part collects the cached results and writes the summary."
        ),
    )
    parser.add_argument(
        "--collect",
        action="store_true",
        help=("Compute nothing: report what --out holds so far (rows still pending are listed; claims that need them are marked pending)."),
    )
    parser.add_argument("--max-seeds", type=int, help="Seeds of the two MAX rows (default: as many as E-AT and RAMP).")
    parser.add_argument(
        "--timing-rounds", type=int, help=f"Rounds of --part timing (default {TIMING['full'][0]}); more rounds narrow a ratio."
    )
    parser.add_argument("--timing-schemes", help="With --timing-rounds: time only these schemes (comma-separated), e.g. linf-at,e-at.")
    parser.add_argument("--report", type=Path, help="Write the Markdown report here (e.g. docs/reproduction.md).")
    args = parser.parse_args()
    try:
        summary = collect(args) if args.collect else run(args)
    except UserError as exc:
        sys.exit(f"error: {exc.message}")
    if not summary:
        return
    from reproduction_report import verdict

    for claim, measured, holds, comment in claims(summary):
        print(f"{claim}: {measured} -> {verdict(holds, comment, 'DOES NOT HOLD')}")
    if args.report:
        from reproduction_report import write_report

        write_report(summary, claims(summary), args.report)


if __name__ == "__main__":
    main()
