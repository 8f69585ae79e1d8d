"""A run's stored evaluation (``<run>/eval.json`` or ``<run>/compare-eval.json``): the one reader of that format,
for ``robustft export``'s model card (robustft/export.py) and ``robustft report``'s page (robustft/html_report.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustft.errors import UserError
from robustft.eval_store import EVAL_FILE
from robustft.io import checksum_path
from robustft.norms import Norm, normalise_eps

#: Files a stored evaluation may be in, in the order read: ``robustft eval --run`` writes the first, ``robustft
#: compare`` the second (its evaluation under the comparison's settings).
EVAL_FILES = (EVAL_FILE, "compare-eval.json")


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
            raise UserError(
                f"The stored evaluation {str(path)!r} is of other weights than the run's model.pt (trained further since?): {redo}."
            )
    return StoredEval(path=path, result=dict(tuned), base=dict(base) if base else None, settings=dict(settings))


def _valid_row(row: Any) -> bool:
    def fraction(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0

    try:
        robust, eps = row["robust"], row["eps"]
        return (
            fraction(row["clean"])
            and fraction(row["union"])
            and isinstance(row["n"], int)
            and row["n"] > 0
            and isinstance(robust, dict)
            and bool(robust)
            and all(fraction(v) for v in robust.values())
            and isinstance(eps, dict)
            and set(normalise_eps(eps)) == {Norm.parse(k) for k in robust}
        )
    except (KeyError, TypeError, UserError):
        return False
