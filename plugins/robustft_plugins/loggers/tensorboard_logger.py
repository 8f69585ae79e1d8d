"""The ``tensorboard`` logger: event files in ``<run>/tensorboard`` (``tensorboard --logdir runs``).

Scalars, all on one step axis, the number of batches trained so far: ``batch/<key>`` per batch (loss, lr,
the scheme's numbers), ``epoch/<key>`` at each epoch's last batch (loss, seconds, images/s, passes, ...),
and at the end ``eval/<key>`` (clean, robust per norm, union) or ``final/<key>``. The configuration is a
text entry (``config``). A resumed run purges the events written after the checkpoint it continues from.

Needs the ``tensorboard`` package (``pip install 'robustft[tensorboard]'``), read through
``torch.utils.tensorboard``; without it ``--log tensorboard`` is refused before training, in one sentence.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from robustft.plugin import RunLogger, UserError, hookimpl, scalars

EVENTS_DIR = "tensorboard"
#: Keys that are positions, not measurements.
POSITION = ("epoch", "batch")


class TensorBoardLogger(RunLogger):
    name = "tensorboard"
    aliases = ("tb",)
    description = "TensorBoard event files in the run folder (pip install 'robustft[tensorboard]')"

    def __init__(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("The tensorboard logger needs the tensorboard package: pip install 'robustft[tensorboard]'.") from None
        self._writer_cls = SummaryWriter
        self.writer: Any = None
        self.step = 0

    def open(self, run_dir: Path, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> None:
        self.step = sum(1 for r in history if r.get("kind") == "batch")
        # On resume, events of batches after the checkpoint (step > kept batches) are dropped.
        self.writer = self._writer_cls(log_dir=str(Path(run_dir) / EVENTS_DIR), purge_step=self.step + 1 if history else None)
        self.writer.add_text("config", "```\n" + json.dumps(dict(config), indent=2, default=str) + "\n```", self.step)

    def log(self, record: Mapping[str, Any]) -> None:
        kind = record.get("kind")
        if kind == "batch":
            self.step += 1
        elif kind != "epoch":
            return  # resume markers carry no measurement
        for key, value in scalars({k: v for k, v in record.items() if k not in POSITION}, sep="/").items():
            self.writer.add_scalar(f"{kind}/{key}", value, self.step)

    def summary(self, summary: Mapping[str, Any]) -> None:
        kind = str(summary.get("kind", "final"))
        for key, value in scalars({k: v for k, v in summary.items() if k not in POSITION}, sep="/").items():
            self.writer.add_scalar(f"{kind}/{key}", value, self.step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


@hookimpl
def register_loggers(register) -> None:
    register(TensorBoardLogger)
