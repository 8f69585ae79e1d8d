"""What a run reports: the per-epoch record of metrics.jsonl, and what :func:`robustft.finetune` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robustft import distributed, memory
from robustft.config import FinetuneConfig


@dataclass
class RunResult:
    """What :func:`finetune` returns."""

    run_dir: Path
    weights: Path
    config: FinetuneConfig
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "weights": str(self.weights),
            "model": self.config.model,
            "dataset": self.config.dataset,
            "scheme": self.config.scheme,
            "epochs": self.epochs,
        }


@dataclass
class EpochStats:
    """What an epoch has accumulated so far (saved in mid-epoch checkpoints)."""

    images: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0
    nan_batches: int = 0
    passes_before: dict[str, int] = field(default_factory=dict)


def epoch_record(epoch: int, stats: EpochStats, passes_now: dict[str, int], seconds: float, device: torch.device) -> dict[str, Any]:
    """The ``epoch`` record of the 0-based ``epoch`` (before the scheme's own logs). Under torchrun: every rank's
    passes, the slowest rank's time and the largest peak memory (every rank calls it)."""
    passes = {k: v - stats.passes_before.get(k, 0) for k, v in passes_now.items()}
    peak = memory.peak_mib(device)
    if distributed.is_distributed():
        summed = distributed.all_reduce_sum(torch.tensor(list(passes.values()), dtype=torch.int64))
        passes = dict(zip(passes, (int(v) for v in summed)))
        gathered = distributed.gather_tensor(torch.tensor([[seconds, peak or 0.0]], dtype=torch.float64), dst=None)
        assert gathered is not None
        seconds, peak = float(gathered[:, 0].max()), (float(gathered[:, 1].max()) or None)
    images = stats.images
    attack_passes = passes["attack_forward"] + passes["attack_backward"]
    return {
        "kind": "epoch",
        "epoch": epoch + 1,
        "loss": stats.loss_sum / max(images, 1),
        "seconds": seconds,
        "images": images,
        "images_per_s": images / seconds if seconds > 0 else None,
        "attack_passes_per_s": attack_passes / seconds if seconds > 0 else None,
        "peak_memory_mib": peak,
        "nan_batches": stats.nan_batches,
        "passes": passes,
    }


def last_epoch_message(epochs: list[dict[str, Any]]) -> str | None:
    """The closing line of a run: the last epoch's throughput and peak memory."""
    if not epochs:
        return None
    last = epochs[-1]
    rate, passes, peak = last.get("images_per_s"), last.get("attack_passes_per_s"), last.get("peak_memory_mib")
    parts = (
        f"{rate:.1f} images/s" if rate else "",
        f"{passes:.0f} attack passes/s" if passes else "",
        f"peak memory {peak:.0f} MiB" if peak else "",
    )
    return "Last epoch: " + ", ".join(part for part in parts if part) + "."
