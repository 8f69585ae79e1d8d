"""Export a finished run as a Hugging Face model folder: ``model.safetensors``, ``config.json``, ``README.md``.

``robustft export RUN --out DIR`` (docs/export.md) writes what ``huggingface_hub.upload_folder`` uploads as a
model repository, and what ``robustft eval --model file:DIR`` loads back (plugins/zoos/file_zoo.py):

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
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustft.errors import UserError
from robustft.evaluation import EVAL_FILE
from robustft.io import atomic_write_bytes, atomic_write_text, checksum_path, load_torch, verify_checksum
from robustft.norms import DISPLAY_ORDER, Norm, format_radius, normalise_eps
from robustft.rundir import read_run_info

#: Files a stored evaluation may be in, in the order read: ``robustft eval --run`` writes the first, ``robustft
#: compare`` the second (its evaluation under the comparison's settings).
EVAL_FILES = (EVAL_FILE, "compare-eval.json")
README = "README.md"

# ------------------------------------------------------------------------------------ scheme papers


@dataclass(frozen=True)
class Paper:
    """A scheme's paper: the sentence the model card cites and its BibTeX entry."""

    citation: str
    bibtex: str


_EAT = Paper(
    'Croce & Hein, "Adversarial Robustness against Multiple and Single lp-Threat Models via Quick Fine-Tuning of '
    'Robust Classifiers", ICML 2022',
    "@inproceedings{croce2022eat,\n  title     = {Adversarial Robustness against Multiple and Single $l_p$-Threat Models via Quick"
    " Fine-Tuning of Robust Classifiers},\n  author    = {Croce, Francesco and Hein, Matthias},\n"
    "  booktitle = {International Conference on Machine Learning (ICML)},\n  year      = {2022}\n}",
)
_RAMP = Paper(
    'Jiang & Singh, "RAMP: Boosting Adversarial Robustness Against Multiple lp Perturbations for Universal '
    'Robustness", NeurIPS 2024',
    "@inproceedings{jiang2024ramp,\n  title     = {{RAMP}: Boosting Adversarial Robustness Against Multiple $l_p$ Perturbations"
    " for Universal Robustness},\n  author    = {Jiang, Enyi and Singh, Gagandeep},\n"
    "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n  year      = {2024}\n}",
)
_MADRY = Paper(
    'Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018',
    "@inproceedings{madry2018towards,\n  title     = {Towards Deep Learning Models Resistant to Adversarial Attacks},\n"
    "  author    = {Madry, Aleksander and Makelov, Aleksandar and Schmidt, Ludwig and Tsipras, Dimitris and Vladu, Adrian},\n"
    "  booktitle = {International Conference on Learning Representations (ICLR)},\n  year      = {2018}\n}",
)
_TRAMER = Paper(
    'Tramer & Boneh, "Adversarial Training and Robustness for Multiple Perturbations", NeurIPS 2019',
    "@inproceedings{tramer2019multiple,\n  title     = {Adversarial Training and Robustness for Multiple Perturbations},\n"
    "  author    = {Tram{\\`e}r, Florian and Boneh, Dan},\n"
    "  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},\n  year      = {2019}\n}",
)
#: The papers of the built-in schemes (docs/schemes.md); a third-party scheme may set a ``paper`` attribute
#: (one sentence) on its class, which the model card then cites.
PAPERS: dict[str, Paper] = {
    "e-at": _EAT,
    "e-at-uniform": _EAT,
    "ramp": _RAMP,
    "lp-at": _MADRY,
    "linf-at": _MADRY,
    "l2-at": _MADRY,
    "l1-at": _MADRY,
    "sat": Paper(
        'Madaan, Shin & Hwang, "Learning to Generate Noise for Multi-Attack Robustness", ICML 2021',
        "@inproceedings{madaan2021learning,\n  title     = {Learning to Generate Noise for Multi-Attack Robustness},\n"
        "  author    = {Madaan, Divyam and Shin, Jinwoo and Hwang, Sung Ju},\n"
        "  booktitle = {International Conference on Machine Learning (ICML)},\n  year      = {2021}\n}",
    ),
    "avg": _TRAMER,
    "max": _TRAMER,
    "msd": Paper(
        'Maini, Wong & Kolter, "Adversarial Robustness Against the Union of Multiple Perturbation Models", ICML 2020',
        "@inproceedings{maini2020adversarial,\n  title     = {Adversarial Robustness Against the Union of Multiple Perturbation Models},\n"
        "  author    = {Maini, Pratyush and Wong, Eric and Kolter, J. Zico},\n"
        "  booktitle = {International Conference on Machine Learning (ICML)},\n  year      = {2020}\n}",
    ),
}


def scheme_paper(scheme: str, scheme_cls: Any = None) -> Paper | None:
    """The paper of ``scheme``: the built-in table, else the class's ``paper`` attribute, else None."""
    if scheme in PAPERS:
        return PAPERS[scheme]
    text = str(getattr(scheme_cls, "paper", "") or "").strip()
    return Paper(text, "") if text else None


# ---------------------------------------------------------------------------------- stored evaluation


@dataclass(frozen=True)
class StoredEval:
    """A run's stored evaluation: the fine-tuned model's row, the base model's, and how it was made.

    Rows are :meth:`robustft.evaluation.EvalResult.as_dict` dictionaries (``clean``, ``robust`` per norm,
    ``union``, ``n``, ``suite``, ``eps``, ``dataset``, ...). ``settings`` holds what the file records of the
    evaluation's settings (``steps``, ``seed``, ``n_ex``, ``suite``, ...), possibly nothing.
    """

    path: Path
    result: dict[str, Any]
    base: dict[str, Any] | None
    settings: dict[str, Any]


def read_stored_eval(run_dir: str | Path) -> StoredEval | None:
    """The run's stored evaluation, or None when it has none.

    The one place that knows the format. Accepted, in ``<run>/eval.json`` then ``<run>/compare-eval.json``:

    * ``{"results": [row, ...], "settings": {...}, "weights_sha256": ...}``: what ``robustft eval --run``
      stores (:func:`robustft.evaluation.save_run_eval`); the fine-tuned model's row is the one with a
      ``"run"`` key (else the last), the base model's the first of two or more;
    * ``{"result": row, "settings": {...}}``: what ``robustft compare`` stores per run;
    * a single row.

    ``weights_sha256`` (top level or in ``settings``) is the SHA-256 of the ``model.pt`` evaluated: when it
    differs from the run's current weights (a run resumed for more epochs after its evaluation) the record is
    refused.
    """
    run_dir = Path(run_dir)
    path = next((run_dir / name for name in EVAL_FILES if (run_dir / name).is_file()), None)
    if path is None:
        return None
    redo = f"run 'robustft eval --run {run_dir}' again"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"The stored evaluation {str(path)!r} is damaged (not valid JSON): {redo}.") from None
    if not isinstance(data, dict):
        raise UserError(f"The stored evaluation {str(path)!r} is not a JSON object: {redo}.")
    settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
    if isinstance(data.get("results"), list) and data["results"]:
        rows = data["results"]
        tuned = next((r for r in rows if isinstance(r, dict) and r.get("run")), rows[-1])
        base = rows[0] if len(rows) > 1 and rows[0] is not tuned else None
    elif isinstance(data.get("result"), dict):
        tuned, base = data["result"], None
    else:
        tuned, base = data, None
    for row in (tuned, base):
        if row is not None and not _valid_row(row):
            raise UserError(f"The stored evaluation {str(path)!r} lacks a clean, per-norm and union accuracy on n points: {redo}.")
    expected = data.get("weights_sha256") or settings.get("weights_sha256")
    weights = run_dir / "model.pt"
    if expected and checksum_path(weights).is_file():
        current = checksum_path(weights).read_text(encoding="utf-8", errors="replace").split()[:1]
        if current and current[0] != expected:
            raise UserError(f"The stored evaluation {str(path)!r} is of other weights than the run's model.pt (trained further since?): {redo}.")
    return StoredEval(path=path, result=dict(tuned), base=dict(base) if base else None, settings=dict(settings))


def _valid_row(row: Any) -> bool:
    def fraction(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0

    try:
        robust, eps = row["robust"], row["eps"]
        return (
            fraction(row["clean"]) and fraction(row["union"]) and isinstance(row["n"], int) and row["n"] > 0
            and isinstance(robust, dict) and bool(robust) and all(fraction(v) for v in robust.values())
            and isinstance(eps, dict) and set(normalise_eps(eps)) == {Norm.parse(k) for k in robust}
        )
    except (KeyError, TypeError, UserError):
        return False


# -------------------------------------------------------------------------------------- architecture

#: Built-in zoo models -> (architecture of plugins/zoos/architectures.py, its options).
BUILTIN_ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "digits-cnn-linf": ("digits-cnn", {}),
    "cifar10-preact-w16-linf": ("preact-resnet18", {"width": 16}),
}


def describe_architecture(run_info: Mapping[str, Any], dataset: Any) -> tuple[str, dict[str, Any], dict[str, list[float]] | None]:
    """(architecture, options, normalisation) of the run's network, as config.json records them.

    The file zoo (:func:`robustft_plugins.zoos.file_zoo.build_exported`) rebuilds exactly this network, so
    the run's state dict loads into it key for key; export checks that it does.
    """
    zoo, name = str(run_info.get("zoo", "")), str(run_info.get("model_name", ""))
    options = run_info.get("model_options") or {}
    if zoo == "file":
        return str(options.get("arch", "")).lower(), {}, None
    if zoo == "scratch":
        return name, {}, None
    if zoo == "builtin" and name in BUILTIN_ARCHITECTURES:
        arch, arch_options = BUILTIN_ARCHITECTURES[name]
        return arch, dict(arch_options), None
    if zoo == "timm":
        return _timm_architecture(name, dataset)
    if zoo == "torchvision":
        return _torchvision_architecture(name)
    raise UserError(
        f"Run base model {run_info.get('base_model')!r} comes from the {zoo!r} zoo, whose networks export cannot rebuild from a "
        "folder yet; export supports the builtin, scratch, file, timm and torchvision zoos."
    )


def _timm_architecture(name: str, dataset: Any) -> tuple[str, dict[str, Any], dict[str, list[float]]]:
    """timm's network and the normalisation the timm zoo folds in (plugins/zoos/timm_zoo.py)."""
    from robustft_plugins.zoos.timm_zoo import import_timm

    cfg = import_timm().get_pretrained_cfg(name)
    options: dict[str, Any] = {}
    if cfg is not None and getattr(cfg, "fixed_input_size", False) and tuple(dataset.input_shape[1:]) != tuple(cfg.input_size[1:]):
        options["img_size"] = list(dataset.input_shape[1:])
    mean = list(getattr(cfg, "mean", None) or (0.0,))
    std = list(getattr(cfg, "std", None) or (1.0,))
    channels = int(dataset.input_shape[0])
    if len(mean) != channels:  # as the zoo: grey-scale data on an RGB-normalised model
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return f"timm:{name}", options, {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def _torchvision_architecture(name: str) -> tuple[str, dict[str, Any], dict[str, list[float]]]:
    """torchvision's network and the normalisation the torchvision zoo folds in (plugins/zoos/torchvision_zoo.py)."""
    from robustft_plugins.zoos.torchvision_zoo import IMAGENET_MEAN, IMAGENET_STD, TorchvisionZoo, split_name

    arch, weights_name = split_name(name)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if weights_name:
        transform = TorchvisionZoo._weights(arch, weights_name).transforms()
        mean, std = tuple(getattr(transform, "mean", mean)), tuple(getattr(transform, "std", std))
    return f"torchvision:{arch}", {}, {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


# ---------------------------------------------------------------------------------------------- export


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
    from robustft_plugins.zoos.file_zoo import EXPORT_CONFIG, EXPORT_WEIGHTS, build_exported, load_weights

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
    arch, arch_options, normalization = describe_architecture(info, data)
    state = load_torch(weights, "weights file", require_checksum=True)
    state = state["model"] if isinstance(state, dict) and "model" in state else state
    config = _config(run_dir, info, data, arch, arch_options, normalization, stored, registries)
    # Prove the folder loads: the network the config describes takes the run's weights, key for key.
    network = build_exported(config)
    load_weights(network, state, weights, f"architecture {arch!r} (base model {info.get('base_model')!r})")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in network.state_dict().items()}
    blob = save(tensors, metadata={"format": "pt"})  # the Hugging Face convention for torch weights

    card = model_card(name or out.resolve().name, config, stored)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / EXPORT_WEIGHTS, blob)
    atomic_write_text(out / EXPORT_CONFIG, json.dumps(config, indent=2) + "\n")
    atomic_write_text(out / README, card)
    return ExportResult(out=out, files=[EXPORT_WEIGHTS, EXPORT_CONFIG, README], config=config, evaluation=stored.path)


def _config(
    run_dir: Path, info: Mapping[str, Any], data: Any, arch: str, arch_options: dict[str, Any],
    normalization: dict[str, list[float]] | None, stored: StoredEval, registries: Any,
) -> dict[str, Any]:
    import robustft
    from robustft_plugins.zoos.file_zoo import EXPORT_FORMAT, EXPORT_FORMAT_VERSION

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


# ------------------------------------------------------------------------------------------ model card


def _pct(value: float) -> float:
    return round(100.0 * float(value), 2)


def _norms(config: Mapping[str, Any]) -> list[Norm]:
    return [Norm.parse(n) for n in config["threat_model"]["union"]]


def model_index(name: str, config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The card's ``model-index``: accuracy (%) clean, per norm and in the union, with each radius as an argument."""
    evaluation, eps = config["evaluation"], config["threat_model"]["eps"]
    common = {"suite": evaluation["suite"], "points": evaluation["points"]}
    if evaluation.get("steps") is not None:
        common["steps"] = evaluation["steps"]
    metrics: list[dict[str, Any]] = [{"type": "accuracy", "name": "Clean accuracy", "value": _pct(evaluation["clean"])}]
    for norm in _norms(config):
        metrics.append({
            "type": "robust-accuracy",
            "name": f"Robust accuracy, {norm.label} (eps {eps[norm.value]})",
            "value": _pct(evaluation["robust"][norm.value]),
            "args": {"norm": norm.value, "eps": eps[norm.value], **common},
        })
    union = ", ".join(f"{n.label} {eps[n.value]}" for n in _norms(config))
    metrics.append({
        "type": "robust-accuracy",
        "name": f"Robust accuracy, union ({union})",
        "value": _pct(evaluation["union"]),
        "args": {"norms": [n.value for n in _norms(config)], "eps": dict(eps), **common},
    })
    dataset = str(config["dataset"])
    return [{
        "name": name,
        "results": [{
            "task": {"type": "image-classification", "name": "Image Classification"},
            "dataset": {"name": dataset, "type": dataset, "split": "test"},
            "metrics": metrics,
        }],
    }]


def reproduce_command(config: Mapping[str, Any], folder: str = ".") -> str:
    """The ``robustft eval`` command that evaluates the exported folder as the stored evaluation did."""
    evaluation, eps = config["evaluation"], config["threat_model"]["eps"]
    parts = ["robustft eval", f"--model file:{folder}", f"--dataset {config['dataset']}",
             f"--norms {','.join(n.value for n in _norms(config))}"]
    parts += [f"--eps {n}={r}" for n, r in eps.items()]
    parts += [f"--n-ex {evaluation['points']}", f"--suite {evaluation['suite']}"]
    if evaluation.get("steps") is not None:
        parts.append(f"--steps {evaluation['steps']}")
    if evaluation.get("seed") is not None:
        parts.append(f"--seed {evaluation['seed']}")
    return " ".join(parts)


def model_card(name: str, config: Mapping[str, Any], stored: StoredEval) -> str:
    """README.md: Hugging Face YAML front matter, then the card for people."""
    scheme, evaluation, threat = config["scheme"], config["evaluation"], config["threat_model"]
    paper = PAPERS.get(scheme)
    citation = config.get("scheme_paper")
    norms = _norms(config)
    tags = ["image-classification", "adversarial-robustness", "adversarial-training", "robustft", scheme]
    front = {
        "library_name": "robustft",
        "pipeline_tag": "image-classification",
        "tags": list(dict.fromkeys(t for t in tags if t)),
        "model-index": model_index(name, config),
    }
    c, h, w = config["input_size"]
    lines = ["---", to_yaml(front).rstrip(), "---", "", f"# {name}", ""]
    union_text = ", ".join(f"{n.label} (eps {threat['eps'][n.value]})" for n in norms)
    lines += [
        f"An image classifier for **{config['dataset']}** ({config['num_classes']} classes, {c}x{h}x{w} inputs in [0, 1]), "
        f"fine-tuned from **{config['base_model']}** with the **{scheme}** scheme"
        + (f" ({citation})" if citation else "")
        + f" to be robust in the union of the {union_text} threat models. Exported by robustft {config['robustft_version']} "
        "(`robustft export`).",
        "",
        "## Results",
        "",
        f"Accuracy (%) on the first {evaluation['points']} test points of {config['dataset']}"
        + (" (the base model's row for reference)." if stored.base else "."),
        "",
        "| model | clean | " + " | ".join(f"{n.label} ({threat['eps'][n.value]})" for n in norms) + " | union |",
        "| --- | ---: | " + " | ".join("---:" for _ in norms) + " | ---: |",
    ]
    if stored.base:
        base = stored.base
        lines.append(f"| {config['base_model']} (base) | {_pct(base['clean']):.2f} | "
                     + " | ".join(f"{_pct(base['robust'][n.value]):.2f}" for n in norms) + f" | {_pct(base['union']):.2f} |")
    lines.append(f"| {name} | {_pct(evaluation['clean']):.2f} | "
                 + " | ".join(f"{_pct(evaluation['robust'][n.value]):.2f}" for n in norms) + f" | {_pct(evaluation['union']):.2f} |")
    invalid = {k: v for k, v in (evaluation.get("invalid_points") or {}).items() if v}
    lines += [
        "",
        "## Evaluation protocol",
        "",
        f"- Suite `{evaluation['suite']}`: " + _suite_text(str(evaluation["suite"])),
        f"- Points: the first {evaluation['points']} images of the test split; a point is robust in the union when it is "
        "classified correctly and no attack in any norm changes its class.",
        "- Attack steps: " + (str(evaluation["steps"]) if evaluation.get("steps") is not None else "not recorded in the stored evaluation") + ".",
        "- Radii: " + ", ".join(f"{n.label} {threat['eps'][n.value]}" for n in norms) + " (inputs in [0, 1]).",
        "- Every adversarial point is checked by the evaluator to lie in its ball and in [0, 1] before it counts"
        + (f"; points projected back: {invalid}." if invalid else "."),
        f"- Source: `{stored.path.name}` of the run.",
        "",
        "Reproduce the numbers from this folder:",
        "",
        "```bash",
        reproduce_command(config),
        "```",
        "",
        "## Training",
        "",
        f"- Base model: `{config['base_model']}` (zoo `{config['base_zoo']}`).",
        f"- Scheme: `{scheme}`" + (f", {citation}." if citation else "."),
        "- Training norms and radii: " + ", ".join(f"{Norm.parse(k).label} {v}" for k, v in threat["training_eps"].items()
                                                 if k in threat["training_norms"]) + ".",
    ]
    settings = config.get("finetune") or {}
    shown = [f"{k} {settings[k]}" for k in ("epochs", "lr", "lr_schedule", "batch_size", "weight_decay", "momentum", "outer_loss", "seed") if k in settings]
    if shown:
        lines.append("- Settings: " + ", ".join(shown) + " (all of them in `config.json` under `finetune`).")
    lines += [
        "",
        "## Use",
        "",
        "The network takes images in [0, 1]"
        + (f" and normalises them itself (mean {config['normalization']['mean']}, std {config['normalization']['std']})"
           if config.get("normalization") else "")
        + f"; `config.json` names the architecture (`{config['architecture']}`). With robustft installed:",
        "",
        "```python",
        "import torch",
        "from robustft.models import load_model",
        "from robustft.pluginmanager import registries",
        "",
        'model, info = load_model("file:path/to/this/folder", registries(), torch.device("cpu"))',
        "logits = model(images)  # images: a float tensor of shape (N, %d, %d, %d) in [0, 1]" % (c, h, w),
        "```",
        "",
        "## Citation",
        "",
    ]
    bibtex = [paper.bibtex] if paper else []
    if evaluation["suite"] in ("e-at", "eat") and _EAT.bibtex not in bibtex:
        bibtex.append(_EAT.bibtex)  # the evaluation protocol's paper
    if bibtex:
        lines += ["```bibtex", "\n\n".join(bibtex), "```"]
    elif citation:
        lines.append(citation + ".")
    else:
        lines.append(f"The scheme `{scheme}` names no paper.")
    return "\n".join(lines) + "\n"


def _suite_text(suite: str) -> str:
    texts = {
        "e-at": "the E-AT protocol (Croce & Hein, ICML 2022): per norm, APGD-CE then APGD-T (9 target classes; l1: 5 "
        "restarts, 5 targets and the large-radius schedule), each on the points still robust.",
        "autoattack": "standard AutoAttack per norm (APGD-CE, APGD-T, FAB-T, Square), each on the points still robust.",
    }
    return texts.get(suite, "the attacks of this suite, one after the other on the points still robust.")


# -------------------------------------------------------------------------------------------- YAML


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists, strings, numbers, booleans and None (what a model card needs).

    Strings are written as JSON strings, which YAML reads as double-quoted scalars, so no value can be
    mistaken for a number, a boolean or YAML syntax.
    """
    pad = " " * indent
    if isinstance(value, dict):
        if not value:
            return pad + "{}\n"
        out = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                out.append(f"{pad}{_scalar(str(key), key=True)}:\n" + to_yaml(item, indent + 2))
            else:
                out.append(f"{pad}{_scalar(str(key), key=True)}: {_scalar(item)}\n")
        return "".join(out)
    if isinstance(value, list):
        if not value:
            return pad + "[]\n"
        out = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                nested = to_yaml(item, indent + 2)
                out.append(f"{pad}- " + nested[indent + 2:])  # the first line continues after "- "
            else:
                out.append(f"{pad}- {_scalar(item)}\n")
        return "".join(out)
    return pad + _scalar(value) + "\n"


def _scalar(value: Any, *, key: bool = False) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
        return repr(value)
    if isinstance(value, dict):
        return "{}"
    if isinstance(value, list):
        return "[]"
    text = str(value)
    if key and text.replace("-", "").replace("_", "").isalnum() and not text[0].isdigit():
        return text
    return json.dumps(text, ensure_ascii=False)


__all__ = [
    "EVAL_FILES",
    "ExportResult",
    "PAPERS",
    "Paper",
    "StoredEval",
    "describe_architecture",
    "export_run",
    "model_card",
    "read_stored_eval",
    "reproduce_command",
    "to_yaml",
]

