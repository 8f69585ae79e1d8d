"""What ``robustft report``'s page is made of, read from a run folder: ``run.json``, ``config.toml``,
``metrics.jsonl`` and the stored evaluation (read with :func:`robustft.export.read_stored_eval`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustft.errors import UserError
from robustft.io import read_jsonl
from robustft.rundir import read_run_info

log = logging.getLogger("robustft")


@dataclass
class RunSources:
    """What the page is made of, read from the run folder. A missing or damaged optional file is a
    ``*_problem`` sentence shown on the page (and warned about), not a failed report."""

    run: Path
    info: dict[str, Any]
    config: dict[str, Any] | None = None
    config_problem: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    base: dict[str, Any] | None = None
    tuned: dict[str, Any] | None = None
    eval_path: Path | None = None
    eval_settings: dict[str, Any] = field(default_factory=dict)
    eval_extra: dict[str, Any] = field(default_factory=dict)
    eval_problem: str | None = None
    #: the evaluation records the checksum of the run's current model.pt (checked against its sidecar)
    weights_match: bool = False

    @property
    def evaluated(self) -> bool:
        return self.tuned is not None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for r in (self.base, self.tuned) if r is not None]


def read_sources(run: str | Path) -> RunSources:
    """The run's files: ``run.json`` (required: a folder without it is not a run), ``config.toml``,
    ``metrics.jsonl`` (tolerantly: a line cut by a crash is skipped) and the stored evaluation."""
    from robustft.config import read_toml
    from robustft.eval_store import weights_checksum
    from robustft.stored_eval import read_stored_eval

    run = Path(run)
    sources = RunSources(run=run, info=read_run_info(run))
    config_path = run / "config.toml"
    if config_path.is_file():
        try:
            sources.config = read_toml(config_path)
        except UserError as exc:
            sources.config_problem = exc.message
    else:
        sources.config_problem = f"The run folder has no config.toml ({str(config_path)!r})."
    sources.records = read_jsonl(run / "metrics.jsonl")
    try:
        stored = read_stored_eval(run)
    except UserError as exc:  # damaged, or of other weights than model.pt: the page says which
        sources.eval_problem = exc.message
        stored = None
    if stored is not None:
        sources.base, sources.tuned = stored.base, stored.result
        sources.eval_path, sources.eval_settings = stored.path, stored.settings
        raw = json.loads(stored.path.read_text(encoding="utf-8"))  # read_stored_eval checked it is a JSON object
        sources.eval_extra = {k: raw[k] for k in ("sanity", "weights_sha256") if k in raw}
        sources.weights_match = bool(raw.get("weights_sha256")) and raw.get("weights_sha256") == weights_checksum(run)
    for problem in (sources.config_problem, sources.eval_problem):
        if problem:
            log.warning("%s The report shows what it can.", problem.rstrip("."))
    return sources


def epoch_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The epoch summaries of ``metrics.jsonl``, one per epoch (a resumed run may record one twice: the later wins)."""
    epochs: dict[int, Mapping[str, Any]] = {}
    for record in records:
        if record.get("kind") == "epoch" and isinstance(record.get("epoch"), int):
            epochs[record["epoch"]] = record
    return [epochs[k] for k in sorted(epochs)]
