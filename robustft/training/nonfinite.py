"""The non-finite guard: a step whose loss is NaN or infinite (on any rank) makes no update and keeps no
BatchNorm statistics from its forward passes; past ``max_nan_batches`` such steps the run stops with the last
good checkpoint named (docs/reliability.md)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import Tensor, nn

from robustft import distributed
from robustft.errors import UserError
from robustft.training.signals import StopRequest

log = logging.getLogger("robustft")


class TrainingError(UserError):
    """Training cannot go on (a non-finite loss, say); the message says where."""


class NonFiniteGuard:
    """Counts the skipped steps of a run (``nan_batches``, kept in checkpoints) against ``--max-nan-batches``."""

    def __init__(self, max_nan_batches: int) -> None:
        self.allowed = max_nan_batches
        self.nan_batches = 0

    def snapshot(self, model: nn.Module) -> list[Tensor]:
        """The model's buffers before a step, to put back if it is skipped (none when no skip is allowed)."""
        return [b.detach().clone() for b in model.buffers()] if self.allowed else []

    def global_loss(self, loss: Tensor, n: int, stop: StopRequest) -> tuple[float, int, bool]:
        """(mean loss, images, finite) of the step over all ranks; in one process, this process's own.

        Under torchrun one all-reduce per step also carries the ranks' stop requests (into ``stop.agreed``), so
        that every rank skips a non-finite step, or stops, at the same batch (DDP needs every rank in every step).
        """
        value = float(loss.detach())  # the step's one host synchronisation (outside the attack loops)
        finite = math.isfinite(value)
        if not distributed.is_distributed():
            return value, n, finite
        totals = distributed.all_reduce_sum(
            torch.tensor(
                [value * n if finite else 0.0, float(n), 0.0 if finite else 1.0, float(stop.signum is not None)], dtype=torch.float64
            )
        )
        stop.agreed = bool(totals[3] > 0)
        images = int(totals[1])
        if totals[2] > 0:
            return (value if not finite else math.nan), images, False
        return float(totals[0]) / images, images, True

    def skip(self, value: float, model: nn.Module, saved: list[Tensor], epoch: int, batch: int, last_checkpoint: Path | None) -> None:
        """Skip the step at 0-based (``epoch``, ``batch``), whose loss was ``value``: put the buffers back and
        warn, or, past the allowance, stop the run."""
        self.nan_batches += 1
        if self.nan_batches > self.allowed:
            kept = f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"
            raise TrainingError(
                f"The loss became {value} at epoch {epoch + 1}, batch {batch + 1} "
                f"(non-finite batches: {self.nan_batches}, --max-nan-batches {self.allowed}); {kept}."
            )
        with torch.no_grad():
            for buffer, before in zip(model.buffers(), saved):
                buffer.copy_(before)
        log.warning(
            "Skipped batch %d of epoch %d: the loss was %s (no update; %d of %d allowed).",
            batch + 1,
            epoch + 1,
            value,
            self.nan_batches,
            self.allowed,
        )
