"""The public entry, :func:`finetune`: one run, fresh or resumed, from its configuration to its final weights.

It resolves the configuration, runs pre-flight (robustft/training/preflight.py), opens the run folder (one
process at a time holds it; config.toml and run.json record what runs and how it ended), restores the last good
checkpoint of a resumed run, and hands over to the loop (robustft/training/loop.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import robustft
from robustft import distributed
from robustft.config import FinetuneConfig, build_config, dumps_toml
from robustft.errors import BadInputError, UserError
from robustft.io import atomic_write_text, read_jsonl, remove_stale_temporaries, save_torch
from robustft.loggers import Loggers, final_summary
from robustft.models import select_device
from robustft.norms import eps_to_strings, format_radius
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.resume import RESUME_OVERRIDE_SOURCE, edited_settings, resume_config
from robustft.rundir import create_run_dir, killed_before_start, list_checkpoints, mark_latest, read_run_info, run_lock, write_run_info
from robustft.schemas import RUN_INFO_FORMAT
from robustft.training.checkpoints import load_last_checkpoint, trim_metrics
from robustft.training.loop import Trainer
from robustft.training.preflight import Plan, preflight
from robustft.training.results import RunResult, last_epoch_message

log = logging.getLogger("robustft")


def finetune(
    config: FinetuneConfig | None = None,
    *,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
    host: PluginHost | None = None,
    progress: ProgressReporter | None = None,
    log: Iterable[str] = (),
    **options: Any,
) -> RunResult:
    """Fine-tune a model with a scheme; write a run directory; return where it is.

    ``options`` are :class:`robustft.config.FinetuneConfig` fields (``model="digits-cnn-linf"``,
    ``scheme="e-at"``, ``epochs=3``, ``eps={"inf": "8/255"}``, ...); with ``config_file`` they override
    the file's values. ``resume`` continues the run in that folder from its last good checkpoint
    (options must then agree with its ``config.toml``, see :func:`robustft.resume.resume_config`).

    Under ``torchrun`` every process calls this: they join one process group, train with
    DistributedDataParallel on slices of each global batch, and rank 0 alone writes the run folder and
    reports progress (docs/distributed.md). A resumed run reads its folder on every rank.

    ``log`` names experiment trackers (robustft/loggers.py) besides metrics.jsonl; each gets every record.
    """
    progress = progress or ProgressReporter()
    registries = (host or get_host()).registries
    loggers = Loggers.create(log, host)  # an unknown name or a missing package fails before any compute
    run_dir = Path(resume) if resume is not None else None
    config, previous = _configuration(config, config_file, run_dir, options)

    distributed.init_from_env(distributed.local_device(select_device(config.device)))
    main = distributed.is_main()
    if not main:
        progress = ProgressReporter()  # rank 0 reports for everyone
    plan = preflight(config, registries, run_dir)
    config = plan.config
    with contextlib.ExitStack() as held:
        if main:
            _open_run_folder(plan, held, new=resume is None)
        run_info = _run_info(plan, previous)
        trainer = Trainer(plan, registries, progress, run_info, loggers.bind(plan.run_dir, config.to_toml_dict()))
        result = RunResult(run_dir=plan.run_dir, weights=plan.run_dir / "model.pt", config=config)
        if resume is not None:
            _restore(trainer, result, progress)
        eps = plan.eps
        progress.message(
            f"Fine-tuning {plan.info.name} on {plan.dataset.name} with {plan.scheme_cls.name} "
            f"({', '.join(f'{n.label} {format_radius(eps[n])}' for n in plan.norms)}) for {config.epochs} epoch(s) on {plan.device} "
            + (f"x {distributed.world_size()} processes " if distributed.is_distributed() else "")
            + f"({plan.performance.describe()}); run folder {plan.run_dir}"
        )
        try:
            trainer.fit(result)
            if main:
                loggers.summary(final_summary(result.epochs))
        except KeyboardInterrupt:
            trainer.mark("interrupted")
            raise
        except Exception:
            if run_info.get("status") == "running":
                trainer.mark("failed")
            raise
        finally:
            loggers.close()

        run_info.update(status="finished", finished=_dt.datetime.now().isoformat(timespec="seconds"))
        if main:
            save_torch({"format": "robustft-weights", "model": plan.model.state_dict()}, result.weights)
            write_run_info(plan.run_dir, run_info)
            mark_latest(plan.run_dir)
        distributed.barrier()  # the others wait until the weights are written (a following command may read them)
    message = last_epoch_message(result.epochs)
    if message:
        progress.message(message)
    return result


def _configuration(
    config: FinetuneConfig | None, config_file: str | Path | None, run_dir: Path | None, options: Mapping[str, Any]
) -> tuple[FinetuneConfig, dict[str, Any] | None]:
    """The run's configuration, and a resumed run's run.json (None for a new run, or one killed before its first)."""
    if run_dir is None:
        if config is None:
            return build_config(config_file, **options), None
        return (dataclasses.replace(config, **options) if options else config), None
    if config is not None or config_file is not None:
        raise BadInputError("Give --resume or --config, not both: a resumed run keeps its own config.toml.")
    previous = None if killed_before_start(run_dir) else read_run_info(run_dir)
    if previous is not None and previous.get("status") == "finished":
        raise UserError(f"Run {str(run_dir)!r} has already finished; its final weights are in {run_dir / 'model.pt'}.")
    return resume_config(run_dir, options), previous


def _open_run_folder(plan: Plan, held: contextlib.ExitStack, *, new: bool) -> None:
    """Create (``new``) and lock the run folder, and write its config.toml: rank 0 alone, one process at a time."""
    config = plan.config
    if new:
        create_run_dir(plan.run_dir)
    held.enter_context(run_lock(plan.run_dir))
    for folder in (plan.run_dir, plan.run_dir / "checkpoints"):  # what killed writes left (we hold the lock)
        remove_stale_temporaries(folder)
    if new and (plan.run_dir / "config.toml").exists():  # another run got there first
        raise UserError(f"Output folder {str(plan.run_dir)!r} is not empty; choose another --out or remove it.")
    if new or RESUME_OVERRIDE_SOURCE in config.provenance.values():
        atomic_write_text(  # a resumed run with --epochs records its new length
            plan.run_dir / "config.toml",
            dumps_toml(
                config.to_toml_dict(),
                header=f"robustft {robustft.__version__} fine-tuning run; repeat with --config, continue with --resume",
            ),
        )


def _run_info(plan: Plan, previous: dict[str, Any] | None) -> dict[str, Any]:
    """run.json of the run, now ``running`` (written by rank 0): a resumed run keeps what its own says."""
    config = plan.config
    if previous is None:  # a new run, or one killed before its first run.json
        run_info: dict[str, Any] = {
            "format": RUN_INFO_FORMAT,
            "robustft_version": robustft.__version__,
            "base_model": config.model,
            "zoo": plan.zoo.name,
            "model_name": plan.info.name,
            "dataset": config.dataset,
            "model_options": config.model_options(),
            "data_options": config.data_options(),
            "scheme": plan.scheme_cls.name,
            "norms": [n.value for n in plan.norms],
            "eps": eps_to_strings(config.eps),
            "started": _dt.datetime.now().isoformat(timespec="seconds"),
        }
    else:
        run_info = {k: v for k, v in previous.items() if k != "stopped"}
    run_info["status"] = "running"
    if distributed.is_distributed():
        run_info["processes"] = distributed.world_size()
    if distributed.is_main():
        write_run_info(plan.run_dir, run_info)
    return run_info


def _restore(trainer: Trainer, result: RunResult, progress: ProgressReporter) -> None:
    """Put a resumed run back at its last good checkpoint, or, with none, at its beginning."""
    plan, config = trainer.plan, trainer.config
    state, path = load_last_checkpoint(plan.run_dir)
    if state is None or path is None:
        if list_checkpoints(plan.run_dir):
            log.warning("No checkpoint of %s could be used; the run starts again from the beginning.", plan.run_dir)
        if trainer.main:
            trim_metrics(trainer.metrics_path, 0, 0)
        return
    saved = state.get("config")
    edited = edited_settings(saved, config) if isinstance(saved, Mapping) else []
    if edited:
        raise UserError(
            f"The configuration of {str(plan.run_dir)!r} was changed after its last checkpoint ({', '.join(edited)}): "
            "--resume would train something else; restore config.toml, or start a new run with --config."
        )
    epoch, batch = (int(v) for v in state["position"])
    if config.epochs < epoch + (1 if batch else 0):
        raise BadInputError(f"--epochs {config.epochs} is fewer than the {epoch} epoch(s) the run has already trained.")
    trainer.restore(state, path)
    result.epochs = [r for r in read_jsonl(trainer.metrics_path) if r.get("kind") == "epoch"]
    progress.message(f"Resuming {plan.run_dir} from {path.name} (epoch {trainer.start_epoch + 1}, after batch {trainer.start_batch}).")
