"""The ``robustft`` command line: parse, call the library, render.

Tables and JSON go to stdout; progress, warnings and errors to stderr. Every user error is one
sentence and a non-zero exit code (2 for a malformed or unknown input), never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

import robustft
from robustft.errors import BadInputError, UserError

app = typer.Typer(
    name="robustft",
    help="Fine-tune adversarially robust classifiers into classifiers robust in the union of l1, l2 and l-inf balls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustft {robustft.__version__}")
        raise typer.Exit()


DEBUG_ENV = "ROBUSTFT_DEBUG"
_debug = {"on": False}  # set by --debug for this call of main (reset there)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help=f"Show the traceback of an error raised inside a plugin (also {DEBUG_ENV}=1).")] = False,
) -> None:
    """robustft: E-AT, RAMP and baselines as one tool."""
    _debug["on"] = debug


# ------------------------------------------------------------------------------------------ options

EpsOption = Annotated[
    Optional[list[str]],
    typer.Option("--eps", help="Radius per norm, NORM=RADIUS, repeatable: --eps inf=8/255 --eps 1=12 --eps 2=0.5."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
ModelDirOption = Annotated[Optional[str], typer.Option(help="Folder of downloaded checkpoints (RobustBench layout).")]
CheckpointOption = Annotated[Optional[str], typer.Option(help="Local weights file for the model (timm, torchvision, file zoos).")]
ArchOption = Annotated[Optional[str], typer.Option(help="Architecture of a file:PATH checkpoint.")]
DataDirOption = Annotated[Optional[str], typer.Option(help="Folder holding the data set's files.")]
ImageSizeOption = Annotated[Optional[int], typer.Option(help="Image size for image folders.")]
DownloadOption = Annotated[Optional[bool], typer.Option("--download/--no-download", help="Allow downloading missing weights and data.")]
SkipBadImagesOption = Annotated[Optional[bool], typer.Option("--skip-bad-images", help="Image folders: leave out files that are not readable images (default: name them and stop).")]
ModelOption = Annotated[Optional[str], typer.Option(help="Base model: NAME or ZOO:NAME (default: the built-in digits-cnn-linf).")]
DatasetOption = Annotated[Optional[str], typer.Option(help="Data set (default: the one the model was trained on).")]
LrStepOption = Annotated[Optional[float], typer.Option(help="Epochs between divisions of the lr by 10 (default: a third of the run).")]
WeightDecayOption = Annotated[Optional[float], typer.Option(help="Weight decay (default 5e-4).")]
MomentumOption = Annotated[Optional[float], typer.Option(help="SGD momentum (default 0.9).")]
AttackOption = Annotated[
    Optional[list[str]],
    typer.Option("--attack", metavar="[NORM=]NAME", help="Training attack family for every norm (default apgd), or NORM=NAME for one norm; repeatable: --attack inf=fgsm-rs --attack 1=apgd."),
]
AttackStepsOption = Annotated[
    Optional[list[str]],
    typer.Option("--attack-steps", metavar="[NORM=]STEPS", help="Training attack steps for every norm (default 10), or NORM=STEPS for one norm; repeatable: --attack-steps inf=5 --attack-steps 1=15."),
]
AttackOptionOption = Annotated[
    Optional[list[str]],
    typer.Option("--attack-option", metavar="[NORM:]NAME=VALUE", help="An option of the training attack, for every norm or one (1:topk=0.1); repeatable."),
]
TradesBetaOption = Annotated[Optional[float], typer.Option(help="TRADES weight beta (default 6).")]
NTrainOption = Annotated[Optional[int], typer.Option(help="Train on the first N training points only.")]
ChannelsLastOption = Annotated[Optional[bool], typer.Option("--channels-last/--no-channels-last", help="Channels-last memory format (default: on CUDA only).")]
CudnnBenchmarkOption = Annotated[Optional[bool], typer.Option("--cudnn-benchmark/--no-cudnn-benchmark", help="cuDNN autotuning (default: on CUDA only).")]
DeviceOption = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:N; default: CUDA when present, else CPU.")]
LogOption = Annotated[Optional[list[str]], typer.Option("--log", metavar="NAME", help="Also log metrics to this tracker (csv, tensorboard, or a plugin's), repeatable; metrics.jsonl is always written.")]


def _progress(quiet: bool, json_output: bool):
    from robustft.progress import ProgressReporter, RichProgress

    return ProgressReporter() if quiet else RichProgress()


def _eps(items: list[str] | None) -> dict | None:
    from robustft.norms import parse_eps_items

    return parse_eps_items(items) if items else None


def _options(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"Option {item!r} is not of the form NAME=VALUE.")
        parsed[key.strip()] = value.strip()
    return parsed


def _attack_settings(attack: list[str] | None, steps: list[str] | None, options: list[str] | None) -> dict[str, Any]:
    """``--attack``, ``--attack-steps`` and ``--attack-option`` as per-norm tables (robustft.per_norm)."""
    from robustft import per_norm

    settings: dict[str, Any] = {}
    if attack:
        settings["attack"] = per_norm.from_items(attack, "--attack", str.strip)
    if steps:
        settings["attack_steps"] = per_norm.from_items(steps, "--attack-steps", per_norm.literal)
    if options:
        table: dict[str, dict[str, Any]] = {}
        for item in options:
            scope, colon, rest = item.partition(":")
            if not colon or "=" in scope:  # NAME=VALUE (a value may hold a colon)
                scope, rest = per_norm.ALL, item
            key, sep, value = rest.partition("=")
            if not sep or not key.strip():
                raise BadInputError(f"Attack option {item!r} is not of the form NAME=VALUE or NORM:NAME=VALUE.")
            slot = per_norm.norm_key(scope, "--attack-option")
            table.setdefault(slot, {})[key.strip()] = per_norm.literal(value)
        settings["attack_options"] = table
    return settings


# ------------------------------------------------------------------------------------------ finetune


@app.command()
def finetune(
    model: ModelOption = None,
    dataset: DatasetOption = None,
    scheme: Annotated[Optional[str], typer.Option(help="Training scheme (default e-at); see 'robustft list schemes'.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs (default 3).")] = None,
    norms: Annotated[Optional[str], typer.Option(help="Training norms, e.g. 1,inf (default: the scheme's).")] = None,
    eps: EpsOption = None,
    lr: Annotated[Optional[float], typer.Option(help="Initial learning rate, divided by 10 every --lr-step epochs (default: every third of the run).")] = None,
    lr_step: LrStepOption = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="step (fine-tuning, default), piecewise or cyclic (from scratch).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Batch size (default 128).")] = None,
    weight_decay: WeightDecayOption = None,
    momentum: MomentumOption = None,
    attack: AttackOption = None,
    attack_steps: AttackStepsOption = None,
    attack_option: AttackOptionOption = None,
    outer_loss: Annotated[Optional[str], typer.Option(help="ce (default) or trades (TRADES-XENT) at the adversarial points.")] = None,
    trades_beta: TradesBetaOption = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Scheme option NAME=VALUE, repeatable.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed (default 0).")] = None,
    device: DeviceOption = None,
    out: Annotated[Optional[str], typer.Option(help="Run folder (default runs/<timestamp>-<model>-<scheme>).")] = None,
    n_train: NTrainOption = None,
    workers: Annotated[Optional[int], typer.Option(help="Data-loading worker processes (default 0 on CPU, up to 4 on CUDA).")] = None,
    model_dir: ModelDirOption = None,
    checkpoint: CheckpointOption = None,
    arch: ArchOption = None,
    data_dir: DataDirOption = None,
    image_size: ImageSizeOption = None,
    extra_data: Annotated[Optional[str], typer.Option(help="Pseudo-labelled extra data mixed half-and-half into each batch.")] = None,
    download: DownloadOption = None,
    skip_bad_images: SkipBadImagesOption = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of settings; command-line options override it.")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its last good checkpoint (with its config.toml).")] = None,
    checkpoint_every: Annotated[Optional[int], typer.Option(help="Also checkpoint every N batches (default 0: at epoch ends only).")] = None,
    max_nan_batches: Annotated[Optional[int], typer.Option(help="Skip up to N batches with a non-finite loss before stopping (default 0).")] = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision: bf16, fp16 (with a gradient scaler) or off; default bf16 on CUDA (fp16 on GPUs without bf16), off on CPU.")] = None,
    attack_precision: Annotated[Optional[str], typer.Option(help="Training attacks in fp32 (default, as the papers' code) or amp (the run's --amp autocast: faster, weaker).")] = None,
    channels_last: ChannelsLastOption = None,
    cudnn_benchmark: CudnnBenchmarkOption = None,
    compile_model: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model (default off).")] = None,
    pin_memory: Annotated[Optional[bool], typer.Option("--pin-memory/--no-pin-memory", help="Page-locked training batches, copied to the GPU asynchronously (default: on CUDA only).")] = None,
    log: LogOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune a robust model with a scheme (E-AT by default) and write a run folder."""
    from robustft.training import finetune as run_finetune
    from robustft.report import print_json
    from robustft.rundir import relative

    result = run_finetune(
        config_file=config,
        resume=resume, checkpoint_every=checkpoint_every, max_nan_batches=max_nan_batches,
        amp=amp, attack_precision=attack_precision, channels_last=channels_last, cudnn_benchmark=cudnn_benchmark, compile=compile_model, pin_memory=pin_memory,
        progress=_progress(quiet, json_output),
        model=model, dataset=dataset, scheme=scheme, epochs=epochs, norms=norms, eps=_eps(eps), lr=lr,
        lr_step=lr_step, lr_schedule=lr_schedule, outer_loss=outer_loss, trades_beta=trades_beta, batch_size=batch_size, weight_decay=weight_decay, momentum=momentum, **_attack_settings(attack, attack_steps, attack_option),
        options=_options(option), seed=seed, device=device, out=out, n_train=n_train,
        workers=workers, model_dir=model_dir, checkpoint=checkpoint, arch=arch, data_dir=data_dir,
        image_size=image_size, extra_data=extra_data, download=download, skip_bad_images=skip_bad_images, log=log or (),
    )
    from robustft.distributed import is_main

    if not is_main():  # under torchrun, rank 0 alone reports
        return
    if json_output:
        print_json(result.as_dict())
    else:
        last = result.epochs[-1] if result.epochs else {}
        typer.echo(f"Run finished: {relative(result.run_dir)} (final loss {last.get('loss', float('nan')):.4f}).")
        typer.echo("Evaluate it against its base model with: robustft eval --norms 1,2,inf")


# ---------------------------------------------------------------------------------------------- eval


@app.command("eval")
def eval_command(
    norms: Annotated[str, typer.Option(help="Norms to attack, e.g. 1,2,inf.")] = "1,2,inf",
    model: Annotated[Optional[str], typer.Option(help="Evaluate this model (NAME or ZOO:NAME) alone.")] = None,
    run: Annotated[Optional[Path], typer.Option(help="Evaluate this run folder and its base model; the result is also stored in <run>/eval.json (for robustft plot).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Data set (default: the model's).")] = None,
    eps: EpsOption = None,
    radii: Annotated[Optional[list[str]], typer.Option("--radii", metavar="NORM=START:STOP:COUNT", help="Also sweep the radius: COUNT radii from START to STOP, repeatable: --radii inf=1/255:12/255:12 --radii 1=2:16:8 (for robustft plot curves).")] = None,
    n_ex: Annotated[int, typer.Option(help="Number of test points (the first N).")] = 1000,
    suite: Annotated[str, typer.Option(help="Evaluation suite; see 'robustft list suites'.")] = "e-at",
    steps: Annotated[int, typer.Option(help="Attack steps.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed of the attacks.")] = 0,
    model_dir: ModelDirOption = None,
    checkpoint: CheckpointOption = None,
    arch: ArchOption = None,
    data_dir: DataDirOption = None,
    image_size: ImageSizeOption = None,
    download: DownloadOption = None,
    skip_bad_images: SkipBadImagesOption = None,
    device: DeviceOption = None,
    channels_last: ChannelsLastOption = None,
    cudnn_benchmark: CudnnBenchmarkOption = None,
    strict: Annotated[bool, typer.Option("--strict", help="Refuse instead of warning: an adversarial point outside its ball or [0, 1] (default: projected, counted, flagged) and fine-tuned weights without their checksum file.")] = False,
    sanity: Annotated[bool, typer.Option("--sanity", help="Also run the gradient-masking checks (more steps, more restarts, transfer, l-inf radius 1) on up to 200 of the points.")] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Clean, per-norm and union robust accuracy; without --model/--run, the latest run against its base."""
    from robustft.evaluation import evaluate
    from robustft.report import eval_table, print_json, stdout_console
    from robustft.sweep import curve_table, parse_sweep_items

    report = evaluate(
        radii=parse_sweep_items(radii or []),
        model=model, run=run, dataset=dataset, norms=norms, eps=_eps(eps), n_ex=n_ex, suite=suite, steps=steps,
        batch_size=batch_size, device=device or "auto", seed=seed, progress=_progress(quiet, json_output),
        model_options={"model_dir": model_dir, "checkpoint": checkpoint, "arch": arch, "download": download},
        data_options={"data_dir": data_dir, "image_size": image_size, "download": download, "skip_bad_images": skip_bad_images},
        channels_last=channels_last, cudnn_benchmark=cudnn_benchmark, strict=strict,
    )
    from robustft.distributed import is_main

    checks = None
    if sanity:
        from robustft.sanity import DEFAULT_POINTS, sanity as run_sanity, sanity_table

        checks = run_sanity(
            model=model, run=run, dataset=dataset, norms=norms, eps=_eps(eps), suite=suite, n_ex=min(n_ex, DEFAULT_POINTS), steps=steps,
            batch_size=batch_size, device=device or "auto", seed=seed, progress=_progress(quiet, json_output),
            model_options={"model_dir": model_dir, "checkpoint": checkpoint, "arch": arch, "download": download},
            data_options={"data_dir": data_dir, "image_size": image_size, "download": download, "skip_bad_images": skip_bad_images},
        )
    if not is_main():  # under torchrun, rank 0 alone prints the table
        return
    if checks is not None and report.saved is not None:
        from robustft.evaluation import store_sanity

        store_sanity(report.saved, checks)  # beside the table in eval.json, for robustft report
    if json_output:
        print_json({**report.as_dict(), **({"sanity": [c.as_dict() for c in checks]} if checks is not None else {})})
    else:
        stdout_console().print(eval_table(report))
        if any(r.curves for r in report.results):
            stdout_console().print(curve_table([(r.name, r.curves) for r in report.results], report.results[0].n, report.results[0].dataset))
        if checks is not None:
            stdout_console().print(sanity_table(checks))
    if report.saved is not None and not quiet:
        from robustft.progress import stderr_console
        from robustft.rundir import relative

        stderr_console().print(f"Stored in {relative(report.saved)} (draw it with: robustft plot bars --run {relative(report.saved.parent)}).", markup=False, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------------- compare


@app.command()
def compare(
    schemes: Annotated[str, typer.Option(help="Schemes to compare, comma-separated: e-at,ramp,max,msd,sat,avg.")],
    seeds: Annotated[int, typer.Option(help="Seeds per scheme (--seed, --seed + 1, ...).")] = 3,
    out: Annotated[Optional[str], typer.Option(help="Comparison folder (default runs/compare-<timestamp>); rerun with it to continue.")] = None,
    model: ModelOption = None,
    dataset: DatasetOption = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per run (default 3).")] = None,
    eps: EpsOption = None,
    lr: Annotated[Optional[float], typer.Option(help="Initial learning rate.")] = None,
    lr_step: LrStepOption = None,
    lr_schedule: Annotated[Optional[str], typer.Option(help="step (default), piecewise or cyclic.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training batch size (default 128).")] = None,
    weight_decay: WeightDecayOption = None,
    momentum: MomentumOption = None,
    attack: AttackOption = None,
    attack_steps: AttackStepsOption = None,
    attack_option: AttackOptionOption = None,
    outer_loss: Annotated[Optional[str], typer.Option(help="ce (default) or trades.")] = None,
    trades_beta: TradesBetaOption = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", "-o", help="Scheme option NAME=VALUE for every scheme that has it, repeatable.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="First seed (default 0).")] = None,
    n_train: NTrainOption = None,
    workers: Annotated[Optional[int], typer.Option(help="Data-loading worker processes (default 0).")] = None,
    model_dir: ModelDirOption = None,
    checkpoint: CheckpointOption = None,
    arch: ArchOption = None,
    data_dir: DataDirOption = None,
    image_size: ImageSizeOption = None,
    download: DownloadOption = None,
    skip_bad_images: SkipBadImagesOption = None,
    config: Annotated[Optional[Path], typer.Option(help="TOML file of fine-tuning settings; options override it.")] = None,
    norms: Annotated[str, typer.Option(help="Evaluation norms, e.g. 1,2,inf.")] = "1,2,inf",
    n_ex: Annotated[int, typer.Option(help="Number of test points (the first N).")] = 1000,
    steps: Annotated[int, typer.Option(help="Evaluation attack steps.")] = 100,
    suite: Annotated[str, typer.Option(help="Evaluation suite.")] = "e-at",
    eval_batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 500,
    device: DeviceOption = None,
    log: LogOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune one base model with several schemes and seeds; table of mean ± std (E-AT Table 12 style)."""
    from robustft.compare import compare as run_compare, compare_table
    from robustft.report import print_json, stdout_console

    report = run_compare(
        schemes, seeds=seeds, out=out, norms=norms, n_ex=n_ex, steps=steps, suite=suite, eval_batch_size=eval_batch_size,
        config_file=config, progress=_progress(quiet, json_output),
        model=model, dataset=dataset, epochs=epochs, eps=_eps(eps), lr=lr, lr_step=lr_step, lr_schedule=lr_schedule,
        batch_size=batch_size, weight_decay=weight_decay, momentum=momentum, **_attack_settings(attack, attack_steps, attack_option),
        outer_loss=outer_loss, trades_beta=trades_beta, options=_options(option), seed=seed, n_train=n_train,
        workers=workers, model_dir=model_dir, checkpoint=checkpoint, arch=arch, data_dir=data_dir,
        image_size=image_size, download=download, skip_bad_images=skip_bad_images, device=device, log=log or (),
    )
    from robustft.distributed import is_main

    if not is_main():  # under torchrun, rank 0 alone prints the table
        return
    if json_output:
        print_json(report.as_dict())
    else:
        stdout_console().print(compare_table(report))


# ------------------------------------------------------------------------------------------ geometry


@app.command()
def geometry(
    eps: EpsOption = None,
    dim: Annotated[Optional[int], typer.Option(help="Input dimension d (e.g. 3072 for CIFAR-10).")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Take d and default radii from this data set.")] = None,
    json_output: JsonOption = False,
) -> None:
    """The l2 radius inside the union of the l1 and l-inf balls and inside their convex hull (E-AT Sec. 3.1)."""
    from robustft.geometry import geometry as compute
    from robustft.norms import Norm
    from robustft.report import geometry_table, print_json, stdout_console

    radii = _eps(eps) or {}
    if dataset is not None:
        from robustft.models import resolve_dataset
        from robustft.pluginmanager import registries

        data = resolve_dataset(dataset, registries())
        radii = {**data.default_eps, **radii}
        dim = dim or data.dim
    if dim is None:
        raise BadInputError("Give the input dimension with --dim (3072 for CIFAR-10) or a data set with --dataset.")
    for norm in (Norm.L1, Norm.LINF):
        if norm not in radii:
            raise BadInputError(f"Give the {norm.label} radius with --eps {norm}=RADIUS.")
    geo = compute(radii[Norm.L1], radii[Norm.LINF], dim, radii.get(Norm.L2))
    if json_output:
        print_json(geo.as_dict())
    else:
        stdout_console().print(geometry_table(geo))


# ------------------------------------------------------------------------------------------- plugins


@app.command()
def plugins(json_output: JsonOption = False) -> None:
    """The installed plugins: name, distribution, version, hooks and status (ok, disabled, failed)."""
    from robustft.pluginmanager import STRICT_ENV, PluginError, inspection_host, strict_from_env
    from robustft.report import listing_table, print_json, stdout_console

    host = inspection_host()  # reports every fault, even under ROBUSTFT_STRICT_PLUGINS
    rows = [p.as_dict() for p in host.plugins.values()]
    if json_output:
        print_json({"plugins": rows, "problems": host.problems})
    else:
        def status(r: dict[str, Any]) -> str:
            detail = r["error"] or "; ".join(r["refused"])
            return f"{r['status']}: {detail}" if detail else r["status"]

        table = listing_table(
            "Installed robustft plugins",
            ["plugin", "distribution", "version", "hooks", "status"],
            [[r["name"], r["distribution"] or "-", r["version"] or "-", ", ".join(r["hooks"]) or "-", status(r)] for r in rows],
        )
        stdout_console().print(table)
    if host.problems and strict_from_env():
        raise PluginError(f"{STRICT_ENV} is set and {len(host.problems)} plugin problem(s) were found; the first: {host.problems[0]}")


# ------------------------------------------------------------------------------------------- recipes


@app.command()
def recipes(json_output: JsonOption = False) -> None:
    """Each data set's fine-tuning recipe: the settings it brings in place of robustft's defaults."""
    from robustft import per_norm
    from robustft.config import FinetuneConfig
    from robustft.pluginmanager import registries
    from robustft.report import listing_table, print_json, stdout_console

    defaults = FinetuneConfig().to_toml_dict()
    rows = [
        {"dataset": entry.name, "setting": key, "value": per_norm.to_toml(value) if isinstance(value, dict) and key.startswith("attack") else value,
         "default": defaults.get(key), "source": entry.obj.recipe_source}
        for entry in registries().datasets for key, value in entry.obj.recipe.items()
    ]
    if json_output:
        print_json({"recipes": rows})
        return
    cells = [[r["dataset"], r["setting"], _shown(r["value"]), _shown(r["default"]), r["source"]] for r in rows]
    stdout_console().print(listing_table("Fine-tuning recipes of the installed data sets", ["data set", "setting", "recipe", "robustft default", "source"], cells))


def _shown(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_shown(v)}" if isinstance(v, dict) else f"{k}={v}" for k, v in value.items())
    return "-" if value is None else str(value)


# ---------------------------------------------------------------------------------------------- list


class Kind(str, Enum):
    schemes = "schemes"
    attacks = "attacks"
    suites = "suites"
    zoos = "zoos"
    datasets = "datasets"
    loggers = "loggers"
    models = "models"


@app.command("list")
def list_command(
    kind: Annotated[Kind, typer.Argument(help="What to list.", case_sensitive=False)],
    zoo: Annotated[Optional[str], typer.Option(help="Models: only this zoo's.")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Models: only those for this data set.")] = None,
    threat: Annotated[Optional[str], typer.Option(help="Models: only those robust in this threat model (Linf, L2, L1, or inf, 2, 1).")] = None,
    json_output: JsonOption = False,
) -> None:
    """List installed schemes, attacks, suites, zoos, data sets, loggers or models."""
    from robustft.pluginmanager import registries
    from robustft.report import listing_table, print_json, stdout_console

    reg = registries()
    if kind is Kind.models:
        from robustft.norms import Norm

        wanted = Norm.parse(threat) if threat else None
        zoos = [reg.zoos.entry(zoo)] if zoo else list(reg.zoos)
        rows = [
            {"name": m.name, "zoo": e.name, "dataset": m.dataset, "threat": m.threat.value if m.threat else None,
             "aliases": list(m.aliases), "description": m.description}
            for e in zoos for m in e.obj.models()
            if (dataset is None or m.dataset.lower() == dataset.lower())
            and (wanted is None or m.threat is wanted)
        ]
        columns = ["name", "zoo", "dataset", "threat", "aliases", "description"]
    else:
        rows = [
            {"name": e.name, "plugin": e.plugin, "aliases": list(e.aliases), "description": e.description}
            for e in reg.by_kind(kind.value)
        ]
        columns = ["name", "plugin", "aliases", "description"]
    if json_output:
        print_json({kind.value: rows})
        return
    cells = [[", ".join(r[c]) if isinstance(r[c], list) else str(r[c] if r[c] is not None else "-") for c in columns] for r in rows]
    stdout_console().print(listing_table(f"Installed {kind.value}", columns, cells))


# -------------------------------------------------------------------------------------------- export

from robustft.cli_export import export as _export  # noqa: E402 - its own module (robustft/export.py is the library)

app.command("export")(_export)


# ---------------------------------------------------------------------------------------------- plot

from robustft import cli_plot  # noqa: E402 - cheap: typer only; its commands import matplotlib when they run

app.add_typer(cli_plot.app, name="plot")


# -------------------------------------------------------------------------------------------- report

from robustft.cli_report import report as _report  # noqa: E402 - its own module (robustft/html_report.py is the library)

app.command("report")(_report)


# ---------------------------------------------------------------------------------------------- main


def _setup_output() -> None:
    from rich.markup import escape

    from robustft.progress import stderr_console

    console = stderr_console()

    # Messages are text: escape them, or rich would eat "[zoos]" in "pip install 'robustft[zoos]'".
    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", markup=True, highlight=False, soft_wrap=True)

    warnings.showwarning = show_warning

    class ConsoleHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            prefix = "[yellow]warning:[/yellow] " if record.levelno >= logging.WARNING else ""
            console.print(prefix + escape(record.getMessage()), markup=True, highlight=False, soft_wrap=True)

    logger = logging.getLogger("robustft")
    logger.handlers[:] = [ConsoleHandler()]
    # Under torchrun rank 0 reports; the other ranks would repeat its messages, so they print errors only.
    logger.setLevel(logging.INFO if os.environ.get("RANK", "0") in ("", "0") else logging.ERROR)
    logger.propagate = True  # our handler prints; the root has none unless an embedding application adds one


INTERRUPTED = 130  # the shell's code for a job ended by SIGINT


def _with_plugin_commands(argv: list[str]) -> typer.Typer:
    """The app this command line needs: the built-in commands, plus plugin commands only where the command line
    may name or list them (see robustft.plugin_commands). A copy, so that calling ``main`` again in one process
    (tests, embedding applications) starts from the built-in commands again."""
    import copy

    from robustft import plugin_commands

    extended = copy.copy(app)
    extended.registered_commands = list(app.registered_commands)
    extended.registered_groups = list(app.registered_groups)
    command = plugin_commands.first_command(argv)
    if command is None:
        if "--version" not in argv:  # the root help lists plugin commands
            plugin_commands.add_listed_plugin_commands(extended)
    elif command not in {entry["name"] for entry in plugin_commands.command_entries(app)}:
        plugin_commands.add_plugin_commands(extended)
    return extended


def _show_usage_error(exc: typer.TyperException, argv: list[str], cli: typer.Typer) -> None:
    """Typer's own rendering, with the usage line of the command even where its parser did not attach one
    (a missing option value)."""
    from robustft.plugin_commands import first_command

    if getattr(exc, "ctx", "absent") is None:
        group = typer.main.get_command(cli)
        name = first_command(argv)
        with group.make_context("robustft", [], resilient_parsing=True) as root:
            command = group.get_command(root, name) if name else None
            if command is not None:
                exc.ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
                # a command group (robustft plot bars ...): down to the sub-command the arguments name
                rest = [a for a in argv[argv.index(name) + 1:] if not a.startswith("-")]
                if rest and hasattr(command, "get_command"):
                    sub = command.get_command(exc.ctx, rest[0])
                    if sub is not None:
                        exc.ctx = sub.make_context(rest[0], [], parent=exc.ctx, resilient_parsing=True)
    show = getattr(exc, "show", None)
    if show is not None:
        show()
    else:
        from robustft.progress import stderr_console

        stderr_console().print(f"Error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)


def _plugin_crash(exc: Exception) -> UserError | None:
    """The error naming the third-party plugin ``exc`` passed through, if any (robustft.pluginmanager)."""
    from robustft.pluginmanager import PluginCrash, current_host

    host = current_host()
    try:
        if host is not None:
            host.crash(exc)
    except PluginCrash as crash:
        return crash
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``robustft`` script; returns the exit code."""
    from rich.markup import escape

    from robustft.progress import stderr_console

    argv = sys.argv[1:] if argv is None else list(argv)
    _setup_output()
    _debug["on"] = False
    cli = app
    previous_term = _catch_sigterm()
    try:
        cli = _with_plugin_commands(argv)
        # Outside standalone mode typer returns the code of an early exit (--help, --version, and 130
        # for a KeyboardInterrupt it caught) instead of calling sys.exit; a command returns None.
        code = cli(args=argv, prog_name="robustft", standalone_mode=False)
    except UserError as exc:
        where = f" (rank {os.environ['RANK']})" if os.environ.get("RANK", "0") not in ("", "0") else ""
        stderr_console().print(f"[red]error{where}:[/red] {escape(exc.message)}", markup=True, highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except typer.TyperException as exc:  # usage errors: the usage line, then one sentence; exit code 2
        _show_usage_error(exc, argv, cli)
        return exc.exit_code
    except Exception as exc:  # unexpected: one sentence when it came from a third-party plugin, else the traceback
        crash = _plugin_crash(exc)
        if crash is None:
            raise
        if _debug["on"] or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        where = f" (rank {os.environ['RANK']})" if os.environ.get("RANK", "0") not in ("", "0") else ""
        stderr_console().print(f"[red]error{where}:[/red] {escape(crash.message)}", markup=True, highlight=False, soft_wrap=True)
        return crash.exit_code
    finally:
        _restore_sigterm(previous_term)
    code = code if isinstance(code, int) else 0
    if code == INTERRUPTED and _terminated["signal"] == signal.SIGTERM:
        code = TERMINATED
    if code in (INTERRUPTED, TERMINATED):
        stderr_console().print("Interrupted by SIGTERM." if code == TERMINATED else "Interrupted.")
    return code


TERMINATED = 143  # the shell's code for a job ended by SIGTERM
_terminated: dict[str, int | None] = {"signal": None}


def _catch_sigterm() -> Any:
    """Outside training (which installs its own handlers), SIGTERM stops a command as Ctrl-C does, and main
    reports it with exit code 143 and a sentence instead of the silent death of the default action."""
    _terminated["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        return None

    def handle(signum: int, frame: Any) -> None:
        _terminated["signal"] = signum
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handle)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
