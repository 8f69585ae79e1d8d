"""Stopping on SIGINT/SIGTERM: the current batch finishes, a checkpoint is written and the run stops with exit
code 128 + the signal (130/143); a second signal stops at once. Under torchrun every rank stops at the same
batch (docs/reliability.md)."""

from __future__ import annotations

import signal
import threading
from typing import Any

import torch

from robustft import distributed
from robustft.errors import UserError


class RunInterrupted(UserError):
    """The run was stopped by SIGINT or SIGTERM after writing a checkpoint; exit code 128 + signal."""


class StopRequest:
    """SIGINT/SIGTERM handlers that ask the training loop to stop after the current batch.

    A second signal stops at once (KeyboardInterrupt). Handlers are only installed on the main thread
    (Python allows nothing else) and the previous ones come back on :meth:`restore`.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        #: Under torchrun: whether some rank had a stop request at the last step (agreed in its all-reduce).
        self.agreed = False

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.again = signum
            raise KeyboardInterrupt
        self.signum = signum

    #: The second signal, which stopped the run at once.
    again: int | None = None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def requested(self, *, per_step: bool = False) -> bool:
        """Whether to stop: a signal here, or, under torchrun, on any rank (then on every rank together).
        ``per_step``: as agreed in the step's own all-reduce, which costs no further synchronisation."""
        if not distributed.is_distributed():
            return self.signum is not None
        if per_step:
            return self.agreed
        return bool(distributed.all_reduce_sum(torch.tensor([float(self.signum is not None)])) > 0)
