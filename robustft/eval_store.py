"""Evaluations kept in run folders: ``robustft eval --run`` stores its table in ``<run>/eval.json`` with the settings
and the checksum of the weights it evaluated, and ``eval --sanity`` its checks beside it (for ``robustft plot``,
``robustft report`` and ``robustft export``, which read it with :func:`robustft.stored_eval.read_stored_eval`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustft.io import DiskFullError, atomic_write_text, checksum_path

if TYPE_CHECKING:
    from robustft.evaluation import EvalReport

log = logging.getLogger("robustft")

#: The file in a run folder where ``robustft eval --run`` keeps its latest result (``robustft plot`` reads it).
EVAL_FILE = "eval.json"


def weights_checksum(run_dir: str | Path) -> str | None:
    """The SHA-256 of a run's final weights, from the sidecar robustft writes with ``model.pt`` (None without one)."""
    sidecar = checksum_path(Path(run_dir) / "model.pt")
    try:
        words = sidecar.read_text(encoding="utf-8", errors="replace").split()
    except OSError:
        return None
    return words[0] if words else None


def save_run_eval(report: EvalReport, run_dir: str | Path, settings: Mapping[str, Any]) -> Path | None:
    """Store ``report`` in ``<run>/eval.json`` (atomically) with the settings it was made with and the checksum of
    the weights it evaluated, so that a later ``robustft plot`` can tell a stale evaluation. A folder that cannot
    be written is a warning, not a failed evaluation."""
    path = Path(run_dir) / EVAL_FILE
    data = {**report.as_dict(), "settings": dict(settings), "weights_sha256": weights_checksum(run_dir)}
    try:
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        log.warning("The evaluation could not be stored in %s (%s).", path, exc.strerror or exc)
        return None
    except DiskFullError as exc:
        log.warning("The evaluation could not be stored: %s", exc.message)
        return None
    return path


def store_sanity(path: str | Path, checks: Sequence[Any]) -> None:
    """Add the gradient-masking checks of ``eval --sanity`` to a stored evaluation (``"sanity"``, as in ``--json``),
    so that reports show them; a file that cannot be rewritten is a warning."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        atomic_write_text(path, json.dumps({**data, "sanity": [c.as_dict() for c in checks]}, indent=2) + "\n")
    except (OSError, ValueError, DiskFullError) as exc:
        log.warning("The sanity checks could not be stored in %s (%s).", path, getattr(exc, "message", None) or exc)
