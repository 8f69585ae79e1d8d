"""What the plots draw, read from what robustft writes: evaluations, run folders and comparison folders.

Each loader returns plain dicts in the shapes the plot functions take (those of ``robustft eval --json`` and
``robustft compare --json``), and turns a missing or foreign file into one sentence.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from robustft.errors import UserError
from robustft.io import read_jsonl
from robustft.rundir import read_run_info

log = logging.getLogger("robustft")


def _json_file(path: Path, what: str) -> Any:
    if not path.is_file():
        raise UserError(f"The {what} {str(path)!r} does not exist.")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"The {what} {str(path)!r} is damaged (not valid JSON).") from None


def load_evaluation_file(path: str | Path) -> dict[str, Any]:
    """An evaluation written by ``robustft eval --json`` (or a run's ``eval.json``): ``{"results": [row, ...]}``."""
    path = Path(path)
    data = _json_file(path, "evaluation file")
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) and "clean" in r and "union" in r for r in rows):
        raise UserError(f"{str(path)!r} is not an evaluation written by 'robustft eval --json' (it has no results).")
    return data


def load_run_evaluation(run: str | Path) -> dict[str, Any]:
    """The evaluation ``robustft eval --run RUN`` stored in the run folder (the base model's row first).

    A stored evaluation of other weights than the run's ``model.pt`` (the run was continued since) is a warning.
    """
    from robustft.eval_store import EVAL_FILE, weights_checksum

    run = Path(run)
    read_run_info(run)  # one sentence for a missing or foreign folder
    path = run / EVAL_FILE
    if not path.is_file():
        raise UserError(f"Run {str(run)!r} has no stored evaluation: run 'robustft eval --run {run}' first.")
    data = load_evaluation_file(path)
    stored, current = data.get("weights_sha256"), weights_checksum(run)
    if stored and current and stored != current:
        log.warning("The evaluation stored in %s is of earlier weights than the run's model.pt: rerun 'robustft eval --run %s'.", path, run)
    return data


def load_comparison_file(path: str | Path) -> dict[str, Any]:
    """A comparison written by ``robustft compare --json``: ``{"settings", "base", "schemes": [row, ...]}``."""
    path = Path(path)
    data = _json_file(path, "comparison file")
    if not isinstance(data, dict) or not isinstance(data.get("schemes"), list) or not data["schemes"]:
        raise UserError(f"{str(path)!r} is not a comparison written by 'robustft compare --json' (it has no schemes).")
    return data


def load_comparison(folder: str | Path) -> dict[str, Any]:
    """The summary of a ``robustft compare`` folder, as ``robustft compare --json`` prints it, from the files the
    comparison keeps (``compare.json``, ``base-eval.json``, and each run's ``compare-eval.json`` and
    ``metrics.jsonl``); no model is loaded. Runs not evaluated yet are left out with a warning."""
    from robustft.compare import SchemeSummary, Stat, _epoch_costs, _eval_cached
    from robustft.norms import Norm

    folder = Path(folder)
    if not (folder / "compare.json").is_file():
        raise UserError(f"{str(folder)!r} is not a robustft compare folder (it has no compare.json).")
    settings = _json_file(folder / "compare.json", "comparison settings")
    try:
        eval_settings, schemes, seeds = settings["eval"], list(settings["schemes"]), list(settings["seeds"])
        norms = [Norm.parse(n) for n in eval_settings["norms"]]
    except (KeyError, TypeError, UserError):
        raise UserError(f"The comparison settings {str(folder / 'compare.json')!r} are damaged.") from None
    base = _eval_cached(folder / "base-eval.json", eval_settings)
    missing: list[str] = []
    rows = []
    for scheme in schemes:
        results, seconds, passes, runs, used = [], [], [], [], []
        for seed in seeds:
            run_dir = folder / f"{scheme}-seed{seed}"
            result = _eval_cached(run_dir / "compare-eval.json", eval_settings)
            try:
                costs = _epoch_costs(run_dir) if result is not None else None
            except UserError:
                costs = None
            if result is None or costs is None:
                missing.append(run_dir.name)
                continue
            results.append(result)
            seconds.append(costs[0])
            passes.append(costs[1])
            runs.append(str(run_dir))
            used.append(seed)
        if results:
            rows.append(
                SchemeSummary(
                    scheme=scheme,
                    seeds=used,
                    runs=runs,
                    clean=Stat([r["clean"] for r in results]),
                    robust={n: Stat([r["robust"][n.value] for r in results]) for n in norms},
                    union=Stat([r["union"] for r in results]),
                    seconds_per_epoch=Stat(seconds),
                    passes_per_image=Stat(passes),
                ).as_dict()
            )
    if missing:
        log.warning(
            "Not evaluated yet, left out: %s; finish them by running the same 'robustft compare' with --out %s.", ", ".join(missing), folder
        )
    if not rows:
        raise UserError(
            f"Comparison {str(folder)!r} has no evaluated run yet: finish it by running the same 'robustft compare' with --out {folder}."
        )
    return {"out": str(folder), "settings": settings, "base": base, "schemes": rows}


def load_training(run: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A run's ``run.json`` and the records of its ``metrics.jsonl`` (a line cut by a crash is skipped)."""
    run = Path(run)
    info = read_run_info(run)
    records = read_jsonl(run / "metrics.jsonl")
    if not any(r.get("kind") == "batch" for r in records):
        raise UserError(f"Run {str(run)!r} has recorded no training batch in metrics.jsonl yet.")
    return info, records
