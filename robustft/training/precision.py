"""How a run uses its device: mixed precision (autocast, the fp16 gradient scaler, the attacks' precision),
channels-last memory, cuDNN autotuning, torch.compile, loader workers and pinned memory.

``auto`` settings are on for CUDA and off on the CPU, where a run is then numerically what it was without them.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robustft.config import FinetuneConfig
from robustft.models import on_for_cuda


@dataclass(frozen=True)
class Performance:
    """The device settings of a run, resolved for its device."""

    amp: str  # "bf16", "fp16" or "off"
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool
    workers: int
    pin_memory: bool

    @classmethod
    def resolve(cls, config: FinetuneConfig, device: torch.device) -> Performance:
        cuda = device.type == "cuda"
        amp = config.amp
        if amp == "auto":
            amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
        workers = config.workers if config.workers is not None else (min(4, os.cpu_count() or 1) if cuda else 0)
        return cls(
            amp=amp,
            channels_last=on_for_cuda(config.channels_last, device),
            cudnn_benchmark=on_for_cuda(config.cudnn_benchmark, device),
            compile=bool(config.compile),
            workers=workers,
            pin_memory=on_for_cuda(config.pin_memory, device),
        )

    def autocast(self, device: torch.device) -> Any:
        """Autocast for attacks and the loss (a no-op when ``amp`` is off)."""
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype, enabled=self.amp != "off")

    def describe(self) -> str:
        parts = [
            f"amp {self.amp}",
            f"channels-last {'on' if self.channels_last else 'off'}",
            f"workers {self.workers}",
            f"pinned memory {'on' if self.pin_memory else 'off'}",
        ]
        if self.compile:
            parts.append("torch.compile")
        return ", ".join(parts)

    def prepare(self, model: nn.Module, device: torch.device) -> None:
        """Set cuDNN autotuning for the run and put ``model`` in the memory format the batches will have."""
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

    def batch_to(self, x: Tensor, y: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """A training batch on ``device``, images in the model's memory format."""
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y


def grad_scaler(performance: Performance, device: torch.device) -> torch.amp.GradScaler | None:
    """The gradient scaler of the update under fp16 (whose small gradients underflow without it), else None."""
    return torch.amp.GradScaler(device.type) if performance.amp == "fp16" else None


def update(loss: Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """One optimizer step on ``loss``; under fp16 the loss is scaled for the backward pass and the gradients
    unscaled before the step."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def attack_autocast(config: FinetuneConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The precision of the training attacks: the run's autocast with ``--attack-precision amp``, else fp32."""
    if config.attack_precision == "amp":
        return contextlib.nullcontext()  # inherit the run's autocast around the scheme's loss
    return torch.autocast(device_type=device.type, enabled=False)


def update_autocast(performance: Performance, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast for a scheme's own updates: bf16 only (fp16 would need a gradient scaler of its own)."""
    return performance.autocast(device) if performance.amp == "bf16" else contextlib.nullcontext()
