"""Checkpoints: writing, pruning, finding the last good one, and putting a run back where one left it.

A checkpoint is written at every epoch end and, with ``checkpoint_every=N``, every N batches. It carries the
model, optimizer, gradient scaler, scheme state, every RNG state (each rank's under torchrun) and the data
order's position, so that ``finetune(resume=run_dir)`` continues bit for bit where the run stopped
(docs/reliability.md). Its structure is checked by :class:`robustft.schemas.Checkpoint` before it is used.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from robustft import distributed
from robustft.attack_state import attack_states, load_attack_states
from robustft.errors import UserError
from robustft.io import UnsafeFileError, checksum_path, load_torch, read_jsonl, rewrite_jsonl, save_torch
from robustft.rundir import checkpoint_name, list_checkpoints
from robustft.schemas import Checkpoint
from robustft.training.context import EngineContext, PassCounter
from robustft.training.results import EpochStats

if TYPE_CHECKING:
    from robustft.training.preflight import Plan

log = logging.getLogger("robustft")

CHECKPOINT_FORMAT = "robustft-checkpoint"
#: Mid-epoch checkpoints kept (older ones are deleted; epoch checkpoints are all kept).
KEEP_BATCH_CHECKPOINTS = 2


def rng_states(ctx: EngineContext, data_epoch_start: Tensor) -> dict[str, Any]:
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "data": data_epoch_start,
        "scheme": ctx.rng.get_state(),
        "attacks": attack_states(ctx._built),
    }
    if ctx.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return states


class Checkpoints:
    """The checkpoints of one run: what the loop saves, and what a resumed run is restored from."""

    def __init__(self, plan: Plan, ctx: EngineContext, scaler: torch.amp.GradScaler | None) -> None:
        self.run_dir, self.config, self.model, self.scheme = plan.run_dir, plan.config, plan.model, plan.scheme
        self.data_rng, self.batches = plan.data_rng, len(plan.loader)
        self.ctx, self.optimizer, self.scaler = ctx, ctx.optimizer, scaler
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.main = distributed.is_main()
        #: The newest checkpoint written or resumed from (what an error message points to).
        self.last: Path | None = None

    def save(self, epoch: int, batch: int, *, stats: EpochStats, nan_batches: int, data_epoch_start: Tensor) -> Path:
        """Checkpoint after ``batch`` batches of epoch ``epoch`` (0-based); ``batch == 0``: after ``epoch`` epochs.

        Every rank calls it (the ranks' RNG states are gathered); rank 0 alone writes.
        """
        path = self.run_dir / "checkpoints" / checkpoint_name(epoch if batch == 0 else epoch + 1, batch)
        rngs = rng_states(self.ctx, data_epoch_start if batch else self.data_rng.get_state())
        rng_ranks = distributed.gather_object(rngs) if distributed.is_distributed() else None
        self.last = path
        if not self.main:
            return path
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,  # epochs completed
                "position": [epoch, batch],
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "lr": self.ctx.lr_at(epoch + batch / self.batches),
                "scheme": self.scheme.state_dict(),
                "rng": rngs,
                **({"rng_ranks": rng_ranks} if rng_ranks else {}),
                "passes": self.ctx.passes.as_dict(),
                "nan_batches": nan_batches,
                "epoch_stats": dataclasses.asdict(stats),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "config": self.config.to_toml_dict(),
            },
            path,
        )
        prune(self.run_dir)
        return path

    def restore(self, state: Mapping[str, Any], path: Path) -> tuple[int, int]:
        """Put the model, optimizer, scaler, pass account and data order back where the checkpoint ``path`` left
        them, and the metrics too; at an epoch boundary also the scheme and RNG states (mid-epoch, the loop does
        that after skipping the batches done, see :meth:`restore_rngs`). Returns (epochs, batches) done."""
        epoch, batch = (int(v) for v in state["position"])
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise UserError(f"The checkpoint {str(path)!r} does not fit this run's model ({str(exc).splitlines()[0][:160]}).") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.ctx.passes = PassCounter(**state.get("passes", {}))
        self.last = path
        self.data_rng.set_state(state["rng"]["data"])
        if batch == 0:  # at an epoch boundary: everything can be restored now
            self.restore_rngs(state)
        if self.main:
            trim_metrics(self.metrics_path, epoch, batch)
        return epoch, batch

    def restore_rngs(self, state: Mapping[str, Any]) -> None:
        """The scheme's state and the RNG streams: each rank's own when the number of processes is unchanged."""
        self.scheme.load_state_dict(state["scheme"])
        self.ctx.rng.set_state(state["rng"]["scheme"])
        rngs = state["rng"]
        per_rank = state.get("rng_ranks")
        if per_rank and len(per_rank) == distributed.world_size():
            rngs = per_rank[distributed.rank()]  # the same number of processes: each continues its own streams
        elif distributed.rank() > 0:
            log.debug("Resumed with another number of processes: rank %d restarts its augmentation stream.", distributed.rank())
            rngs = {"torch": torch.Generator().manual_seed(self.config.seed + 1_000_003 * distributed.rank()).get_state()}
        torch.set_rng_state(rngs["torch"])
        load_attack_states(rngs.get("attacks", {}), self.ctx.training_attack)
        if "cuda" in rngs and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(rngs["cuda"], self.ctx.device)


def prune(run_dir: Path) -> None:
    """Delete all but the newest mid-epoch checkpoints, and those older than the newest epoch checkpoint."""
    found = list_checkpoints(run_dir)
    newest_epoch = max((pos for pos, p in found if pos[1] == 0), default=None)
    mid = [(pos, p) for pos, p in found if pos[1] != 0]
    stale = mid[:-KEEP_BATCH_CHECKPOINTS] + [(pos, p) for pos, p in mid[-KEEP_BATCH_CHECKPOINTS:] if newest_epoch and pos < newest_epoch]
    for _, path in stale:
        path.unlink(missing_ok=True)
        checksum_path(path).unlink(missing_ok=True)


def load_last_checkpoint(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest checkpoint of a run that loads and verifies, falling back with a warning past damaged ones."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_torch(path, "checkpoint", require_checksum=True)
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "position" not in state:
                raise UserError(f"The checkpoint {str(path)!r} is not a robustft training checkpoint.")
            Checkpoint.check(state, path)  # the structure restore() relies on, before it relies on it
        except UnsafeFileError:
            raise  # a planted file is a security problem to look at, not damage to skip over
        except UserError as exc:
            log.warning("%s Falling back to the previous checkpoint.", exc.message)
            continue
        return state, path
    return None, None


def trim_metrics(path: Path, epoch: int, batch: int) -> None:
    """Keep the metrics recorded up to a checkpoint at (epochs done, batches done); drop a torn last line."""
    kept = []
    for record in read_jsonl(path):
        kind, e, b = record.get("kind"), record.get("epoch", 0), record.get("batch", 0)
        if kind == "batch" and not (e <= epoch or (e == epoch + 1 and b <= batch)):
            continue
        if kind == "epoch" and e > epoch:
            continue
        kept.append(record)
    rewrite_jsonl(path, kept)
