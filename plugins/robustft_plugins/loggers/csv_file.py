"""The ``csv`` logger: ``<run>/metrics.csv`` (every record, one row each) and ``<run>/summary.csv``.

Columns are the records' keys, nested ones flattened with dots (``passes.attack_forward``), in the order they
first appear; ``kind`` says whether a row is a batch, an epoch or a resume. A key that appears only later
(a scheme's statistic from its second epoch, ``skipped`` for a non-finite batch) widens the table: the file
is then rewritten whole, atomically. A resumed run rewrites it from the records ``metrics.jsonl`` kept, so
the two files always hold the same rows. Missing values are empty cells; lists are JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.plugin import RunLogger, atomic_write_text, flatten, hookimpl

METRICS_CSV, SUMMARY_CSV = "metrics.csv", "summary.csv"


def cell(value: Any) -> str:
    """A value as the CSV shows it: numbers as Python writes them, lists as JSON, None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return str(value)


def to_csv(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(c)) for c in columns])
    return buffer.getvalue()


class CsvLogger(RunLogger):
    name = "csv"
    description = "metrics.csv (every record, nested keys flattened) and summary.csv in the run folder"

    def open(self, run_dir: Path, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_CSV
        self.rows = [flatten(r) for r in history]
        self.columns: list[str] = []
        for row in self.rows:
            self._widen(row)
        atomic_write_text(self.path, to_csv(self.columns, self.rows))

    def _widen(self, row: Mapping[str, Any]) -> bool:
        new = [k for k in row if k not in self.columns]
        self.columns.extend(new)
        return bool(new)

    def log(self, record: Mapping[str, Any]) -> None:
        row = flatten(record)
        self.rows.append(row)
        if self._widen(row):
            atomic_write_text(self.path, to_csv(self.columns, self.rows))
            return
        with open(self.path, "a", encoding="utf-8", newline="") as handle:
            csv.writer(handle, lineterminator="\n").writerow([cell(row.get(c)) for c in self.columns])

    def summary(self, summary: Mapping[str, Any]) -> None:
        row = flatten(summary)
        atomic_write_text(self.run_dir / SUMMARY_CSV, to_csv(list(row), [row]))


@hookimpl
def register_loggers(register) -> None:
    register(CsvLogger)
