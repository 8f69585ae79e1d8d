"""The model card (``README.md``) of a folder ``robustft export`` writes: Hugging Face YAML front matter with a
``model-index`` of the stored results, then the card for people: results, protocol, training, use, citation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustft.norms import Norm
from robustft.papers import EAT, PAPERS
from robustft.stored_eval import StoredEval
from robustft.yaml_text import to_yaml


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
        metrics.append(
            {
                "type": "robust-accuracy",
                "name": f"Robust accuracy, {norm.label} (eps {eps[norm.value]})",
                "value": _pct(evaluation["robust"][norm.value]),
                "args": {"norm": norm.value, "eps": eps[norm.value], **common},
            }
        )
    union = ", ".join(f"{n.label} {eps[n.value]}" for n in _norms(config))
    metrics.append(
        {
            "type": "robust-accuracy",
            "name": f"Robust accuracy, union ({union})",
            "value": _pct(evaluation["union"]),
            "args": {"norms": [n.value for n in _norms(config)], "eps": dict(eps), **common},
        }
    )
    dataset = str(config["dataset"])
    return [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "image-classification", "name": "Image Classification"},
                    "dataset": {"name": dataset, "type": dataset, "split": "test"},
                    "metrics": metrics,
                }
            ],
        }
    ]


def reproduce_command(config: Mapping[str, Any], folder: str = ".") -> str:
    """The ``robustft eval`` command that evaluates the exported folder as the stored evaluation did."""
    evaluation, eps = config["evaluation"], config["threat_model"]["eps"]
    parts = [
        "robustft eval",
        f"--model file:{folder}",
        f"--dataset {config['dataset']}",
        f"--norms {','.join(n.value for n in _norms(config))}",
    ]
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
        lines.append(
            f"| {config['base_model']} (base) | {_pct(base['clean']):.2f} | "
            + " | ".join(f"{_pct(base['robust'][n.value]):.2f}" for n in norms)
            + f" | {_pct(base['union']):.2f} |"
        )
    lines.append(
        f"| {name} | {_pct(evaluation['clean']):.2f} | "
        + " | ".join(f"{_pct(evaluation['robust'][n.value]):.2f}" for n in norms)
        + f" | {_pct(evaluation['union']):.2f} |"
    )
    invalid = {k: v for k, v in (evaluation.get("invalid_points") or {}).items() if v}
    lines += [
        "",
        "## Evaluation protocol",
        "",
        f"- Suite `{evaluation['suite']}`: " + _suite_text(str(evaluation["suite"])),
        f"- Points: the first {evaluation['points']} images of the test split; a point is robust in the union when it is "
        "classified correctly and no attack in any norm changes its class.",
        "- Attack steps: "
        + (str(evaluation["steps"]) if evaluation.get("steps") is not None else "not recorded in the stored evaluation")
        + ".",
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
        "- Training norms and radii: "
        + ", ".join(f"{Norm.parse(k).label} {v}" for k, v in threat["training_eps"].items() if k in threat["training_norms"])
        + ".",
    ]
    settings = config.get("finetune") or {}
    shown = [
        f"{k} {settings[k]}"
        for k in ("epochs", "lr", "lr_schedule", "batch_size", "weight_decay", "momentum", "outer_loss", "seed")
        if k in settings
    ]
    if shown:
        lines.append("- Settings: " + ", ".join(shown) + " (all of them in `config.json` under `finetune`).")
    lines += [
        "",
        "## Use",
        "",
        "The network takes images in [0, 1]"
        + (
            f" and normalises them itself (mean {config['normalization']['mean']}, std {config['normalization']['std']})"
            if config.get("normalization")
            else ""
        )
        + f"; `config.json` names the architecture (`{config['architecture']}`). With robustft installed:",
        "",
        "```python",
        "import torch",
        "from robustft.models import load_model",
        "from robustft.pluginmanager import registries",
        "",
        'model, info = load_model("file:path/to/this/folder", registries(), torch.device("cpu"))',
        f"logits = model(images)  # images: a float tensor of shape (N, {c}, {h}, {w}) in [0, 1]",
        "```",
        "",
        "## Citation",
        "",
    ]
    bibtex = [paper.bibtex] if paper else []
    if evaluation["suite"] in ("e-at", "eat") and EAT.bibtex not in bibtex:
        bibtex.append(EAT.bibtex)  # the evaluation protocol's paper
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
