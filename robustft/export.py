"""Export a finished run as a Hugging Face model folder: ``model.safetensors``, ``config.json``, ``README.md``.

``robustft export RUN --out DIR`` (docs/export.md) writes what ``huggingface_hub.upload_folder`` uploads as a
model repository, and what ``robustft eval --model file:DIR`` loads back (plugins/robustft_plugins/zoos/file_zoo.py):

* ``model.safetensors``: the run's final weights (the state dict of the network robustft evaluates, which
  takes inputs in ``[0, 1]``), after the SHA-256 of ``model.pt`` has been checked;
* ``config.json``: the architecture and its options, the number of classes, the input size, the
  normalisation, the data set, the threat model and its radii, the base model, the scheme and its paper,
  the fine-tuning settings and the stored evaluation;
* ``README.md``: a model card, YAML front matter (``model-index`` with clean, per-norm and union accuracy)
  and a body with the protocol, the training, how to reproduce the numbers, and the citation.

The results come from the run's stored evaluation (:func:`read_stored_eval`), never from a new one: an
evaluation takes minutes to hours, has settings of its own (points, steps, suite, radii, device) that
``robustft eval`` already exposes, and a model card should state numbers that a recorded command produced.
A run without one is refused with the command that makes it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustft.contracts import ModelInfo
from robustft.errors import UserError
from robustft.export_format import EXPORT_CONFIG, EXPORT_FORMAT, EXPORT_FORMAT_VERSION, EXPORT_README, EXPORT_WEIGHTS
from robustft.io import atomic_write_bytes, atomic_write_text, load_torch, verify_checksum
from robustft.model_card import model_card, model_index, reproduce_command
from robustft.norms import DISPLAY_ORDER, format_radius, normalise_eps
from robustft.papers import PAPERS, Paper, scheme_paper
from robustft.registry import Registries, checked
from robustft.rundir import read_run_info
from robustft.stored_eval import EVAL_FILES, StoredEval, read_stored_eval
from robustft.yaml_text import to_yaml

#: The model card's file name (kept for callers of the name it had here).
README = EXPORT_README


#: A zoo's description of a network (:meth:`robustft.contracts.ModelZoo.describe_architecture`): config.json's keys.
ARCHITECTURE_KEYS = ("architecture", "architecture_options", "normalization")


def describe_architecture(
    run_info: Mapping[str, Any], dataset: Any, registries: Registries | None = None
) -> tuple[str, dict[str, Any], dict[str, list[float]] | None]:
    """(architecture, options, normalisation) of the run's network, as config.json records them: asked of the zoo
    the run's base model came from (:meth:`robustft.contracts.ModelZoo.describe_architecture`).

    The file zoo (plugins/robustft_plugins/zoos/file_zoo.py) rebuilds this network from the folder; export checks that the run's
    weights load into it key for key.
    """
    from robustft.pluginmanager import get_host
    from robustft.registry import PluginFault

    registries = registries or get_host().registries
    zoo_name, base = str(run_info.get("zoo", "")), run_info.get("base_model")
    if zoo_name not in registries.zoos:
        raise UserError(
            f"Run base model {base!r} comes from the {zoo_name!r} zoo, which is not installed, so export cannot describe its network."
        )
    zoo = registries.zoos.get(zoo_name)
    info = ModelInfo(name=str(run_info.get("model_name", "")), dataset=str(run_info.get("dataset", "")))
    described = zoo.describe_architecture(info, dataset=dataset, **(run_info.get("model_options") or {}))
    if described is None:
        raise UserError(
            f"Run base model {base!r} comes from the {zoo_name!r} zoo, whose networks export cannot rebuild from a folder: the zoo "
            "does not describe their architecture (ModelZoo.describe_architecture, docs/plugins.md)."
        )
    what = f"model zoo {zoo.name!r} describe_architecture()"
    checked(described, Mapping, what=what, plugin=registries.plugin_of("zoos", zoo))
    arch, options, norm = (described.get(key) for key in ARCHITECTURE_KEYS)
    if not isinstance(arch, str) or not arch or not isinstance(options or {}, Mapping) or not isinstance(norm or {}, Mapping):
        raise PluginFault(
            f"Plugin {registries.plugin_of('zoos', zoo)!r} is faulty: {what} returned no architecture name, "
            "options table and normalisation (or None)."
        )
    return arch, dict(options or {}), dict(norm) if norm else None


@dataclass
class ExportResult:
    """Where the folder is, what it holds, and the results its card states."""

    out: Path
    files: list[str]
    config: dict[str, Any]
    evaluation: Path

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "files": self.files, "evaluation": str(self.evaluation), "config": self.config}


def check_out(out: Path, run_dir: Path, force: bool) -> None:
    """``out`` may be written: not a file, not the run folder, empty unless ``force``."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r} is a file, not a folder; choose another --out.")
    if out.exists() and out.resolve() == run_dir.resolve():
        raise UserError(f"--out {str(out)!r} is the run folder itself; export into a folder of its own.")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            f"Output folder {str(out)!r} is not empty; choose another --out, or pass --force to overwrite the exported files in it."
        )


def export_run(
    run: str | Path,
    out: str | Path,
    *,
    force: bool = False,
    name: str | None = None,
    host: Any = None,
) -> ExportResult:
    """Write ``out`` (see the module docstring) from the finished run folder ``run``.

    ``force`` allows a non-empty ``out``: the three exported files are overwritten, nothing else in the
    folder is touched. ``name`` is the model's name in the card (default: the folder's name). Refused in one
    sentence: an unfinished run, weights without their checksum or not matching it, a run without a stored
    evaluation, a base model whose network cannot be rebuilt.
    """
    from safetensors.torch import save

    from robustft.models import resolve_dataset
    from robustft.pluginmanager import get_host

    run_dir, out = Path(run), Path(out)
    info = read_run_info(run_dir)
    status = info.get("status", "unknown")
    if status != "finished":
        raise UserError(
            f"Run {str(run_dir)!r} is not finished (status {status!r}): continue it with 'robustft finetune --resume {run_dir}', then export it."
        )
    weights = run_dir / "model.pt"
    if not weights.is_file():
        raise UserError(f"Run {str(run_dir)!r} has no final weights (model.pt), so there is nothing to export.")
    verify_checksum(weights, "weights file", required=True)  # corrupted or unchecked weights are refused here
    stored = read_stored_eval(run_dir)
    if stored is None:
        raise UserError(
            f"Run {str(run_dir)!r} has no stored evaluation ({EVAL_FILES[0]}): run 'robustft eval --run {run_dir}' first, then export."
        )
    check_out(out, run_dir, force)

    registries = (host or get_host()).registries
    data = resolve_dataset(str(info["dataset"]), registries, **(info.get("data_options") or {}))
    arch, arch_options, normalization = describe_architecture(info, data, registries)
    state = load_torch(weights, "weights file", require_checksum=True)
    state = state["model"] if isinstance(state, dict) and "model" in state else state
    config = _config(run_dir, info, data, arch, arch_options, normalization, stored, registries)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    blob = save(tensors, metadata={"format": "pt"})  # the Hugging Face convention for torch weights
    card = model_card(name or out.resolve().name, config, stored)
    files = {EXPORT_WEIGHTS: blob, EXPORT_CONFIG: json.dumps(config, indent=2) + "\n", EXPORT_README: card}
    _write_proven(out, files, run_dir, data, registries)
    return ExportResult(out=out, files=list(files), config=config, evaluation=stored.path)


def _write_proven(out: Path, files: Mapping[str, bytes | str], run_dir: Path, data: Any, registries: Registries) -> None:
    """Write ``files`` into ``out`` once they are proven to load: first into a folder of their own inside ``out``,
    loaded from there as ``robustft eval --model file:DIR`` loads (the network config.json describes, taking the
    weights key for key), then moved into place. A folder that does not load leaves ``out`` as it was."""
    from robustft.models import resolve_model

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        for name, content in files.items():
            (atomic_write_bytes if isinstance(content, bytes) else atomic_write_text)(staging / name, content)
        try:
            zoo, info = resolve_model(f"file:{staging}", registries)
            zoo.load(info, device=torch.device("cpu"), dataset=data)
        except UserError as exc:
            detail = exc.message.replace(str(staging), str(out)).rstrip(".")
            raise UserError(f"Run {str(run_dir)!r} cannot be exported: the folder would not load back ({detail}).") from None
        for name in files:
            os.replace(staging / name, out / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def _config(
    run_dir: Path,
    info: Mapping[str, Any],
    data: Any,
    arch: str,
    arch_options: dict[str, Any],
    normalization: dict[str, list[float]] | None,
    stored: StoredEval,
    registries: Registries,
) -> dict[str, Any]:
    import robustft

    result = stored.result
    scheme = str(info.get("scheme", ""))
    scheme_cls = registries.schemes.get(scheme) if scheme in registries.schemes else None
    paper = scheme_paper(scheme, scheme_cls)
    finetune = _read_settings(run_dir)
    eval_eps = normalise_eps(result["eps"])
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "library": "robustft",
        "robustft_version": robustft.__version__,
        "architecture": arch,
        "architecture_options": arch_options,
        "num_classes": int(data.num_classes),
        "input_size": [int(v) for v in data.input_shape],
        "input_range": [0.0, 1.0],
        "normalization": normalization,
        "dataset": str(info["dataset"]),
        "threat_model": {
            "union": [n.value for n in DISPLAY_ORDER if n in eval_eps],
            "eps": {n.value: format_radius(eval_eps[n]) for n in DISPLAY_ORDER if n in eval_eps},
            "training_norms": [n.value for n in DISPLAY_ORDER if n.value in info.get("norms", [])],
            "training_eps": {n.value: info["eps"][n.value] for n in DISPLAY_ORDER if n.value in (info.get("eps") or {})},
        },
        "base_model": str(info.get("base_model", "")),
        "base_zoo": str(info.get("zoo", "")),
        "scheme": scheme,
        "scheme_paper": paper.citation if paper else None,
        "finetune": finetune,
        "evaluation": {
            "source": stored.path.name,
            "suite": result.get("suite"),
            "points": int(result["n"]),
            "steps": stored.settings.get("steps"),
            "seed": stored.settings.get("seed"),
            "clean": result["clean"],
            "robust": {n.value: result["robust"][n.value] for n in DISPLAY_ORDER if n.value in result["robust"]},
            "union": result["union"],
            "invalid_points": result.get("invalid_points", {}),
            **({"base": {k: stored.base[k] for k in ("name", "clean", "robust", "union")}} if stored.base else {}),
        },
        "exported": _dt.datetime.now().isoformat(timespec="seconds"),
    }


#: config.toml settings that are paths on the machine that trained (or where the run folder was): not published.
LOCAL_SETTINGS = ("out", "model_dir", "checkpoint", "data_dir", "extra_data")


def _read_settings(run_dir: Path) -> dict[str, Any]:
    """The run's fine-tuning settings (config.toml without its provenance and local paths), or {} when unreadable."""
    try:
        settings = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        return {}
    if settings.get("extra_data"):
        settings["extra_data"] = Path(str(settings["extra_data"])).name  # that extra data was used, not where it lay
    return {k: v for k, v in settings.items() if k != "provenance" and (k not in LOCAL_SETTINGS or k == "extra_data")}


__all__ = [
    "EVAL_FILES",
    "ExportResult",
    "PAPERS",
    "Paper",
    "StoredEval",
    "describe_architecture",
    "export_run",
    "model_card",
    "model_index",
    "read_stored_eval",
    "reproduce_command",
    "scheme_paper",
    "to_yaml",
]
