"""The training loop: epochs of steps, for every scheme (a scheme owns only its loss). What surrounds the loop
(precision, the training context, checkpoints, signals, the non-finite guard) lives beside it in this package;
docs/algorithms.md maps it."""

from __future__ import annotations

import datetime as _dt
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from robustft import distributed, memory
from robustft.contracts import Scheme
from robustft.loggers import Loggers
from robustft.progress import ProgressReporter
from robustft.registry import Registries
from robustft.rundir import write_run_info
from robustft.training import precision
from robustft.training.checkpoints import Checkpoints
from robustft.training.context import checked_loss, training_context
from robustft.training.nonfinite import NonFiniteGuard
from robustft.training.preflight import Plan
from robustft.training.results import EpochStats, RunResult, epoch_record
from robustft.training.signals import RunInterrupted, StopRequest


class Trainer:
    """One run of the loop, fresh or resumed."""

    def __init__(self, plan: Plan, registries: Registries, progress: ProgressReporter, run_info: dict[str, Any], loggers: Loggers) -> None:
        self.config, self.plan, self.progress, self.run_info = plan.config, plan, progress, run_info
        self.run_dir, self.model, self.scheme = plan.run_dir, plan.model, plan.scheme
        self.loader, self.data_rng = plan.loader, plan.data_rng
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.loggers = loggers  # metrics.jsonl (always) and the --log trackers
        self.scheme_plugin = registries.plugin_of("schemes", plan.scheme_cls)
        self.ctx = training_context(plan)
        self.optimizer = self.ctx.optimizer
        self.scaler = precision.grad_scaler(plan.performance, plan.device)
        self.checkpoints = Checkpoints(plan, self.ctx, self.scaler)
        self.guard = NonFiniteGuard(self.config.max_nan_batches)
        self.stop = StopRequest()
        # Schemes that keep the default epoch (batch after batch) can stop and resume anywhere in it;
        # one that overrides run_epoch (RAMP's gradient projection) is checkpointed at epoch ends only,
        # unless it declares ``mid_epoch_resume = True``.
        self.mid_epoch = bool(getattr(plan.scheme, "mid_epoch_resume", type(plan.scheme).run_epoch is Scheme.run_epoch))
        self.start_epoch, self.start_batch = 0, 0
        self.stats = EpochStats()
        self.data_epoch_start = self.data_rng.get_state()
        self.main = distributed.is_main()

    def restore(self, state: Mapping[str, Any], path: Path) -> None:
        """Put the run back where the checkpoint ``path`` left it."""
        self.start_epoch, self.start_batch = self.checkpoints.restore(state, path)
        self.guard.nan_batches = int(state.get("nan_batches", 0))
        self.stats = EpochStats(**state["epoch_stats"]) if self.start_batch else EpochStats()
        self.resume_state = state
        self.data_epoch_start = self.data_rng.get_state()
        if self.main:
            self.loggers.log({"kind": "resume", "epoch": self.start_epoch + 1, "batch": self.start_batch, "checkpoint": path.name})

    def fit(self, result: RunResult) -> None:
        """Train the remaining epochs, appending each epoch's record to ``result``."""
        c, ctx, scheme = self.config, self.ctx, self.scheme
        self.stop.install()
        try:
            for epoch in range(self.start_epoch, c.epochs):
                resumed_mid = epoch == self.start_epoch and self.start_batch > 0
                ctx.epoch, ctx.batch = epoch, (self.start_batch if resumed_mid else 0)
                if not resumed_mid:
                    self.stats = EpochStats(passes_before=ctx.passes.as_dict())
                    self.data_epoch_start = self.data_rng.get_state()
                memory.reset_peak(ctx.device)  # each epoch's own peak, also for later runs in this process
                self._clock = time.perf_counter()
                scheme.on_epoch_start(ctx)
                self.progress.start(f"epoch {epoch + 1}/{c.epochs}", len(self.loader))
                for _ in range(ctx.batch):
                    self.progress.advance({})
                try:
                    scheme.run_epoch(ctx, self._batches(epoch), self._step(epoch))
                finally:
                    self.progress.stop()
                result.epochs.append(self._end_epoch(epoch))
                if self.stop.requested() and epoch + 1 < c.epochs:  # a signal in an epoch's last batch
                    self._interrupt(epoch, epoch_done=True)
        except KeyboardInterrupt:
            if self.stop.again is None:
                raise
            # A second signal stops at once: no checkpoint for this batch, but the exit code still says which
            # signal ended the job (a scheduler must not take it for a finished one).
            self.mark("interrupted")
            last = self.checkpoints.last
            kept = f"last checkpoint {last}" if last else "no checkpoint yet"
            raise RunInterrupted(
                f"Interrupted again by {signal.Signals(self.stop.again).name}: stopped at once ({kept}); "
                f"continue with: {self.resume_hint()}",
                exit_code=128 + int(self.stop.again),
            ) from None
        finally:
            self.stop.restore()

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches; a resumed epoch skips (loads but does not train on) those done before."""
        iterator = iter(self.loader)
        if epoch == self.start_epoch and self.start_batch:
            for _ in range(self.start_batch):
                next(iterator)
            # Skipping drew augmentation randomness again: put every RNG back where the checkpoint was.
            self.checkpoints.restore_rngs(self.resume_state)
        return iterator

    def _step(self, epoch: int) -> Callable[[Tensor, Tensor], None]:
        ctx, model, optimizer, scheme, device = self.ctx, self.ctx.update_model, self.optimizer, self.scheme, self.ctx.device
        perf, batches, stats = self.plan.performance, len(self.loader), self.stats

        def step(x: Tensor, y: Tensor) -> None:
            x, y = perf.batch_to(x, y, device)
            lr = ctx.lr_at(epoch + ctx.batch / batches)
            for group in optimizer.param_groups:  # every group: the reference code forgot its second one
                group["lr"] = lr
            model.train()
            distributed.broadcast_buffers(self.model)  # every rank attacks with rank 0's BatchNorm statistics
            buffers = self.guard.snapshot(model)  # BatchNorm statistics move in the loss's forward passes
            with perf.autocast(device):  # the attacks inside the loss switch it off (ctx.attack_autocast)
                loss, logs = checked_loss(scheme.loss(model, x, y, ctx), scheme.name, self.scheme_plugin)
            record: dict[str, Any] = {"kind": "batch", "epoch": epoch + 1, "batch": ctx.batch + 1, "lr": lr}
            value, images, finite = self.guard.global_loss(loss, x.shape[0], self.stop)
            if finite:
                if distributed.is_distributed():  # unequal pieces weigh their points alike
                    loss = distributed.scale_to_global_mean(loss, x.shape[0], images)
                precision.update(loss, optimizer, self.scaler)
                ctx.passes.update_forward += x.shape[0]
                ctx.passes.update_backward += x.shape[0]
                stats.images += images
                stats.loss_sum += value * images
                record.update(loss=value, **logs)
            else:
                stats.nan_batches += 1
                self.guard.skip(value, model, buffers, epoch, ctx.batch, self.checkpoints.last)
                record.update(loss=None, skipped="non-finite loss", **logs)
            if self.main:
                self.loggers.log(record)
            shown: dict[str, Any] = {"loss": stats.loss_sum / max(stats.images, 1)}
            shown.update({k.replace("rerr_", "rerr "): v for k, v in logs.items() if k.startswith("rerr_") and k != "rerr_batch"})
            self.progress.advance(shown)
            ctx.batch += 1
            if self.mid_epoch and self.config.checkpoint_every and ctx.batch % self.config.checkpoint_every == 0 and ctx.batch < batches:
                stats.seconds += time.perf_counter() - self._clock
                self._clock = time.perf_counter()
                self.save(epoch, ctx.batch)
            if self.stop.requested(per_step=True) and ctx.batch < batches:  # at an epoch's end: see fit()
                self._interrupt(epoch)

        return step

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        seconds = self.stats.seconds + time.perf_counter() - self._clock
        record = epoch_record(epoch, self.stats, self.ctx.passes.as_dict(), seconds, self.ctx.device)
        record.update(self.scheme.on_epoch_end(self.ctx))
        if distributed.is_distributed():
            record["processes"] = distributed.world_size()
        if self.main:
            self.loggers.log(record)
        self.save(epoch + 1, 0)
        return record

    def save(self, epoch: int, batch: int) -> Path:
        """Checkpoint after ``batch`` batches of epoch ``epoch`` (0-based); ``batch == 0``: after ``epoch`` epochs."""
        return self.checkpoints.save(
            epoch, batch, stats=self.stats, nan_batches=self.guard.nan_batches, data_epoch_start=self.data_epoch_start
        )

    def _interrupt(self, epoch: int, *, epoch_done: bool = False) -> None:
        where = f"epoch {epoch + 1}" if epoch_done else f"epoch {epoch + 1}, batch {self.ctx.batch}"
        if epoch_done:
            kept = f"checkpoint {self.checkpoints.last} written"
        elif self.mid_epoch:
            kept = f"checkpoint {self.save(epoch, self.ctx.batch)} written"
        else:
            kept = f"last checkpoint {self.checkpoints.last}" if self.checkpoints.last else "no checkpoint yet"
        self.mark("interrupted")
        raise RunInterrupted(
            f"Interrupted by {self.stop.name} after {where} ({kept}); continue with: {self.resume_hint()}",
            exit_code=128 + int(self.stop.signum or signal.SIGINT),
        )

    def mark(self, status: str) -> None:
        """Record in run.json that the run stopped (``interrupted``, ``failed``) and when."""
        self.run_info.update(status=status, stopped=_dt.datetime.now().isoformat(timespec="seconds"))
        if self.main:
            write_run_info(self.run_dir, self.run_info)

    def resume_hint(self) -> str:
        return f"robustft finetune --resume {self.run_dir}"
