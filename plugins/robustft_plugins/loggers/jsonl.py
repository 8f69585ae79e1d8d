"""The ``jsonl`` logger: ``<run>/metrics.jsonl``, one JSON object per record (always on).

This file is the run's own record: ``--resume`` trims it to the checkpoint it continues from
(robustft/training/checkpoints.py), and ``robustft compare`` reads its epoch records. Each record is appended in one
write (:func:`robustft.io.append_jsonl`), so a crash leaves at most a cut last line, which readers skip.
Summaries are not written here: the final epoch is the file's last epoch record, and evaluations have their
own files (``eval.json``, ``compare-eval.json``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.plugin import METRICS_FILE, RunLogger, append_jsonl, hookimpl


class JsonlLogger(RunLogger):
    name = "jsonl"
    description = "metrics.jsonl in the run folder: one JSON object per batch, epoch and resume (always on)"

    def open(self, run_dir: Path, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> None:
        self.path = Path(run_dir) / METRICS_FILE

    def log(self, record: Mapping[str, Any]) -> None:
        append_jsonl(self.path, record)


@hookimpl
def register_loggers(register) -> None:
    register(JsonlLogger)
