"""Compare training schemes on one base model: fine-tune with each scheme and seed, evaluate, tabulate.

``robustft compare --schemes e-at,ramp,max --seeds 3`` does what Table 12 of the E-AT paper (and Table 2 of
the RAMP paper) reports: the base model once, then per scheme the clean, per-norm and union robust accuracy
as mean ± standard deviation over seeds, and the training time per epoch. Every run is an ordinary run
folder, so the comparison can be continued after a crash::

    <out>/compare.json               the settings of the comparison
    <out>/base-eval.json             the base model's evaluation
    <out>/<scheme>-seed<k>/          a run folder (``robustft eval --run`` works on it)
    <out>/<scheme>-seed<k>/compare-eval.json   its evaluation under the comparison's settings

A run folder with a finished ``run.json`` and ``model.pt`` made with the same settings is reused; an
unfinished one is removed and run again; one made with other settings stops the comparison (choose another
``--out``). Evaluations are cached the same way, keyed by their settings; a cached evaluation's model is not
loaded (robustft/subjects.py loads a model on first use).

All rows are evaluated with the same radii: the data set's defaults overridden by ``--eps``, which also sets
the training radii. Each scheme trains on its own default norms. A scheme option (``--option NAME=VALUE``)
goes to every compared scheme that declares ``NAME``. Standard deviations are sample standard deviations
(``n - 1``), 0 for a single seed.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from robustft import config as _config
from robustft import distributed, per_norm
from robustft.config import NOT_SETTINGS, PER_NORM_FIELDS, FinetuneConfig, build_config
from robustft.errors import BadInputError, UnknownNameError, UserError
from robustft.io import atomic_write_text, read_jsonl
from robustft.norms import DISPLAY_ORDER, Norm, eps_to_strings, format_radius, parse_norms, sort_norms
from robustft.paths import runs_dir
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.rundir import check_utf8
from robustft.training.preflight import attack_settings_given

logger = logging.getLogger("robustft")

#: Config fields that do not change what a run computes (where it runs, how data is loaded, checkpoints).
_IRRELEVANT = {"out"} | set(getattr(_config, "OPERATIONAL_FIELDS", {"device", "workers"}))


@dataclass
class Stat:
    """Mean and sample standard deviation of a list of numbers."""

    values: list[float]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        n = len(self.values)
        if n < 2:
            return 0.0
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (n - 1))

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "values": self.values}


@dataclass
class SchemeSummary:
    """One row of the comparison: a scheme over its seeds."""

    scheme: str
    seeds: list[int]
    runs: list[str]
    clean: Stat
    robust: dict[Norm, Stat]
    union: Stat
    seconds_per_epoch: Stat
    passes_per_image: Stat

    def as_dict(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "seeds": self.seeds,
            "runs": self.runs,
            "clean": self.clean.as_dict(),
            "robust": {n.value: self.robust[n].as_dict() for n in sort_norms(self.robust)},
            "union": self.union.as_dict(),
            "seconds_per_epoch": self.seconds_per_epoch.as_dict(),
            "passes_per_image": self.passes_per_image.as_dict(),
        }


@dataclass
class CompareReport:
    """The base model's evaluation and one :class:`SchemeSummary` per scheme."""

    base: dict[str, Any]
    rows: list[SchemeSummary]
    norms: tuple[Norm, ...]
    eps: dict[Norm, Fraction]
    out: Path
    settings: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out),
            "settings": self.settings,
            "base": self.base,
            "schemes": [row.as_dict() for row in self.rows],
        }


# ------------------------------------------------------------------------------------------ helpers


def _scheme_names(schemes: str | Sequence[str]) -> list[str]:
    items = schemes.split(",") if isinstance(schemes, str) else list(schemes)
    names = [s.strip() for s in items if s and s.strip()]
    if not names:
        raise BadInputError("Give the schemes to compare with --schemes, e.g. --schemes e-at,ramp,max.")
    return names


def _scheme_options(options: Mapping[str, str], classes: Sequence[type]) -> list[dict[str, str]]:
    """Per scheme, the options it declares; an option no compared scheme declares is an error."""
    declared = {name for cls in classes for name in cls.Options.names()}
    for key in options:
        if key not in declared:
            names = ", ".join(cls.name for cls in classes)
            raise UnknownNameError(f"option of the compared schemes ({names})", key, declared)
    return [{k: v for k, v in options.items() if k in cls.Options.names()} for cls in classes]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _finished(run_dir: Path) -> bool:
    info = _read_json(run_dir / "run.json")
    return bool(info) and info.get("status") == "finished" and (run_dir / "model.pt").is_file()


def _per_norm_differs(seen: Any, wanted: Mapping[str, Any], key: str) -> bool:
    """Whether a run's recorded per-norm setting (resolved for its training norms) differs from the request."""
    seen = seen if isinstance(seen, dict) else {per_norm.ALL: seen}
    for norm, value in seen.items():
        if key == "attack_options":
            want = per_norm.merged_for(wanted, norm)
        else:
            want = wanted.get(norm, wanted.get(per_norm.ALL))
        if value != want:
            return True
    return False


def _setting_mismatch(run_dir: Path, config: FinetuneConfig) -> str | None:
    """The first setting in which the run's recorded ``config.toml`` differs from ``config``, or None."""
    try:
        with (run_dir / "config.toml").open("rb") as handle:
            recorded = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError):
        return "config.toml"
    values = config.to_toml_dict()
    for key in (f.name for f in dataclasses.fields(config) if f.name not in NOT_SETTINGS):
        if key in PER_NORM_FIELDS:
            if _per_norm_differs(recorded.get(key, {}), getattr(config, key), key):
                return key
            continue
        if key not in values:
            continue
        value = values[key]
        if key == "options":
            if recorded.get("options", {}) != value:
                return key
            continue
        if key in _IRRELEVANT or value in ({}, [], ()):
            continue
        seen = recorded.get(key)
        if key == "eps":  # the run records every radius; the request names some
            seen = {k: v for k, v in (seen or {}).items() if k in value}
        if isinstance(value, float) and isinstance(seen, (int, float)):
            if not math.isclose(value, seen):
                return key
        elif seen != value:
            return key
    return None


def _epoch_costs(run_dir: Path) -> tuple[float, float]:
    """Mean seconds per epoch and forward+backward passes per training image, from ``metrics.jsonl``."""
    seconds, passes, images = [], 0, 0
    # the one tolerant reader of metrics files: a line cut by a crash is skipped, not a traceback
    for record in read_jsonl(run_dir / "metrics.jsonl"):
        if record.get("kind") == "epoch":
            seconds.append(float(record["seconds"]))
            passes += sum(int(v) for v in record.get("passes", {}).values())
            images += int(record.get("images", 0))
    if not seconds:
        raise UserError(f"Run {str(run_dir)!r} recorded no epoch in metrics.jsonl.")
    return sum(seconds) / len(seconds), passes / images if images else math.nan


def _eval_cached(path: Path, settings: Mapping[str, Any]) -> dict[str, Any] | None:
    cached = _read_json(path)
    if cached and cached.get("settings") == dict(settings) and isinstance(cached.get("result"), dict):
        return cached["result"]
    return None


# --------------------------------------------------------------------------------------------- main


def compare(
    schemes: str | Sequence[str],
    *,
    seeds: int = 3,
    out: str | Path | None = None,
    norms: str | Sequence[Norm] = "1,2,inf",
    n_ex: int = 1000,
    steps: int = 100,
    suite: str = "e-at",
    eval_batch_size: int = 500,
    config_file: str | Path | None = None,
    host: PluginHost | None = None,
    progress: ProgressReporter | None = None,
    log: Sequence[str] = (),
    **finetune_options: Any,
) -> CompareReport:
    """Fine-tune the same base model with every scheme and ``seeds`` seeds, evaluate, and summarise.

    ``finetune_options`` are :class:`robustft.config.FinetuneConfig` fields shared by every run (``model``,
    ``epochs``, ``eps``, ``n_train``, ``attack_steps``, ...); ``seed`` is the first seed. Every name is
    resolved before any compute, so a misspelt scheme costs nothing. ``log`` names the experiment trackers of
    every run (robustft/loggers.py); each also gets the run's evaluation when it is made.
    """
    from robustft.evaluation import evaluate_model
    from robustft.loggers import Loggers, eval_summary, summarise_finished
    from robustft.models import select_device
    from robustft.subjects import Subject, resolve
    from robustft.training import finetune

    progress = progress or ProgressReporter()
    registries = (host or get_host()).registries
    Loggers.create(log, host)  # an unknown --log name or a missing package fails before any compute
    if seeds < 1:
        raise BadInputError(f"--seeds must be a positive number, got {seeds}.")
    if n_ex <= 0 or steps <= 0:
        raise BadInputError("--n-ex and --steps must be positive.")
    for key in ("scheme", "out", "norms"):
        if finetune_options.get(key) is not None:
            raise BadInputError(f"compare sets {key!r} itself; use --schemes, --out and --norms (evaluation norms).")
    base_config = build_config(config_file, **finetune_options)
    classes = []
    for name in dict.fromkeys(_scheme_names(schemes)):
        cls = registries.schemes.get(name)
        if cls not in classes:
            classes.append(cls)
    per_scheme_options = _scheme_options(base_config.options, classes)
    own_attack = [cls.name for cls in classes if cls.own_attack]
    if own_attack and attack_settings_given(base_config, tuple(Norm)):
        runs = "runs an attack of its own" if len(own_attack) == 1 else "run attacks of their own"
        logger.warning(f"{', '.join(own_attack)} {runs}: --attack and --attack-option apply to the other schemes only.")
    eval_norms = parse_norms(norms) if isinstance(norms, str) else sort_norms(norms)
    suite_obj = registries.suites.get(suite)
    for name in base_config.attack.values():
        registries.attacks.get(name)
    # What is evaluated: the base model now (a misspelt name costs nothing), each run's model after training.
    resolved = resolve(
        model=base_config.model,
        dataset=base_config.dataset,
        registries=registries,
        model_options=base_config.model_options(),
        data_options=base_config.data_options(),
    )
    dataset, base_subject = resolved.dataset, resolved.models[0]
    info = base_subject.info
    radii = {**dataset.default_eps, **base_config.eps}
    for norm in eval_norms:
        if norm not in radii:
            raise BadInputError(f"Data set {dataset.name!r} has no default radius for norm {norm}: give --eps {norm}=RADIUS.")
    for cls, options in zip(classes, per_scheme_options):
        for norm in cls.default_norms:
            if norm not in radii:
                raise BadInputError(f"Data set {dataset.name!r} has no default radius for norm {norm}: give --eps {norm}=RADIUS.")
        cls(cls.default_norms, **options)  # refuses bad option values now, not after hours of training
    device = distributed.local_device(select_device(base_config.device))
    # Under torchrun every process trains and evaluates its share; rank 0 names the folder and writes.
    distributed.init_from_env(device)
    main = distributed.is_main()
    if not main:
        progress = ProgressReporter()
    if out is not None:
        check_utf8(out)
    root = Path(out) if out is not None else runs_dir() / f"compare-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    root = distributed.broadcast_object(root)
    if main:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"Output folder {str(root)!r} cannot be created ({exc.strerror}).") from None
    seed_list = list(range(base_config.seed, base_config.seed + seeds))
    eval_settings = {
        "model": base_config.model,
        "dataset": dataset.name,
        "norms": [n.value for n in eval_norms],
        "eps": eps_to_strings({n: radii[n] for n in eval_norms}),
        "n_ex": n_ex,
        "steps": steps,
        "suite": suite_obj.name,
    }
    settings = {
        "schemes": [cls.name for cls in classes],
        "seeds": seed_list,
        "finetune": {k: v for k, v in base_config.to_toml_dict().items() if k not in _IRRELEVANT | {"scheme", "seed"}},
        "eval": eval_settings,
    }
    if main:
        atomic_write_text(root / "compare.json", json.dumps(settings, indent=2) + "\n")
    progress.message(f"Comparing {', '.join(settings['schemes'])} over seeds {seed_list} on {info.name}; folder {root}")

    def evaluate_once(subject: Subject, label: str, path: Path) -> dict[str, Any]:
        """The cached evaluation, else a new one (the network is loaded only then)."""
        cached = _eval_cached(path, eval_settings)
        if cached is not None:
            progress.message(f"Reusing the evaluation of {label} in {path}")
            return cached
        result = evaluate_model(
            subject.model(device),
            dataset,
            eval_norms,
            radii,
            suite=suite_obj,
            registries=registries,
            n_ex=n_ex,
            steps=steps,
            batch_size=eval_batch_size,
            device=device,
            seed=0,
            name=label,
            progress=progress,
        ).as_dict()
        if main:
            atomic_write_text(path, json.dumps({"settings": eval_settings, "result": result}, indent=2) + "\n")
        return result

    # Train first (the long part), then evaluate: a crash while evaluating keeps every finished run.
    run_dirs: dict[str, list[Path]] = {}
    for cls, options in zip(classes, per_scheme_options):
        for seed in seed_list:
            config = dataclasses.replace(base_config, scheme=cls.name, seed=seed, options=dict(options))
            if cls.own_attack:  # the training attack's settings are not its own (see Scheme.own_attack)
                config = dataclasses.replace(config, attack=FinetuneConfig().attack, attack_options={})
            run_dir = root / f"{cls.name}-seed{seed}"
            finished, exists = _finished(run_dir), run_dir.exists()
            distributed.barrier()  # every process has looked before rank 0 removes anything
            if finished:
                mismatch = _setting_mismatch(run_dir, config)
                if mismatch is not None:
                    raise UserError(
                        f"Run folder {str(run_dir)!r} was made with a different {mismatch!r}; choose another --out or remove it."
                    )
                progress.message(f"Reusing the finished run {run_dir}")
            elif exists and _setting_mismatch(run_dir, config) is None and (run_dir / "run.json").is_file():
                # An interrupted run continues from its last checkpoint (from the start if it has none).
                progress.message(f"Continuing the unfinished run {run_dir}")
                finetune(resume=run_dir, host=host, progress=progress, log=log)
            else:
                if exists:  # never delete: what cannot be continued is moved aside
                    aside = run_dir.with_name(f"{run_dir.name}.unfinished-{_dt.datetime.now():%Y%m%d-%H%M%S}")
                    if main:
                        run_dir.rename(aside)
                    distributed.barrier()
                    progress.message(
                        f"Moved the unfinished run {run_dir} aside to {aside.name}: it cannot be continued with these settings."
                    )
                finetune(dataclasses.replace(config, out=str(run_dir)), host=host, progress=progress, log=log)
            run_dirs.setdefault(cls.name, []).append(run_dir)

    base = evaluate_once(base_subject, info.name, root / "base-eval.json")
    del base_subject, resolved  # the base network, if it was loaded, is not needed again
    rows = []
    for cls in classes:
        results, seconds, passes = [], [], []
        for run_dir in run_dirs[cls.name]:
            tuned = resolve(run=run_dir, dataset=dataset, registries=registries, with_base=False).models[0]
            fresh = _eval_cached(run_dir / "compare-eval.json", eval_settings) is None
            results.append(evaluate_once(tuned, f"+ {cls.name} ({run_dir.name})", run_dir / "compare-eval.json"))
            if fresh and main:  # the run's trackers get its union table once, when it is made
                summarise_finished(log, run_dir, eval_summary(results[-1]), host)
            epoch_seconds, epoch_passes = _epoch_costs(run_dir)
            seconds.append(epoch_seconds)
            passes.append(epoch_passes)
        rows.append(
            SchemeSummary(
                scheme=cls.name,
                seeds=seed_list,
                runs=[str(p) for p in run_dirs[cls.name]],
                clean=Stat([r["clean"] for r in results]),
                robust={n: Stat([r["robust"][n.value] for r in results]) for n in eval_norms},
                union=Stat([r["union"] for r in results]),
                seconds_per_epoch=Stat(seconds),
                passes_per_image=Stat(passes),
            )
        )
    return CompareReport(
        base=base, rows=rows, norms=eval_norms, eps={n: Fraction(radii[n]) for n in eval_norms}, out=root, settings=settings
    )


# ------------------------------------------------------------------------------------------- render


def _pm(stat: Stat, scale: float = 100.0, digits: int = 1) -> str:
    return f"{scale * stat.mean:.{digits}f} ± {scale * stat.std:.{digits}f}"


def compare_table(report: CompareReport) -> Any:
    """A rich table like Table 12 of the E-AT paper: accuracy in % as mean ± std over seeds, time per epoch."""
    from rich import box
    from rich.table import Table

    norms = [n for n in DISPLAY_ORDER if n in report.norms]
    settings = report.settings.get("eval", {})
    seeds = len(report.settings.get("seeds", [])) or 1
    title = (
        f"Robust accuracy (%) on {report.base.get('n')} {report.base.get('dataset')} test points, suite "
        f"{settings.get('suite')}; mean ± std over {seeds} seed(s)"
    )
    table = Table(title=title, title_justify="left", caption=f"runs in {report.out}", caption_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    for norm in norms:
        table.add_column(f"{norm.label} ({format_radius(report.eps[norm])})", justify="right")
    table.add_column("union", justify="right")
    table.add_column("s / epoch", justify="right")
    table.add_column("passes / image", justify="right")
    base = report.base
    table.add_row(
        str(base.get("name")),
        f"{100 * base['clean']:.1f}",
        *[f"{100 * base['robust'][n.value]:.1f}" for n in norms],
        f"{100 * base['union']:.1f}",
        "-",
        "-",
    )
    for row in report.rows:
        table.add_row(
            f"+ {row.scheme}",
            _pm(row.clean),
            *[_pm(row.robust[n]) for n in norms],
            _pm(row.union),
            _pm(row.seconds_per_epoch, 1.0, 2),
            f"{row.passes_per_image.mean:.1f}",
        )
    return table
