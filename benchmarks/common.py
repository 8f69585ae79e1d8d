"""Shared pieces of the benchmarks: models, data, timers and peak memory.

Two workloads: the embedded default's digits CNN on the real digits test set (8x8 grey images, a model
small enough that per-step overhead dominates), and a CIFAR-sized (3x32x32) PreAct-ResNet-like network
with random weights (compute-bound; width configurable so that a CPU run stays short).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustft import memory


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer reads the work and not the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int = 1, warmup: int = 1) -> tuple[float, Any]:
    """The smallest wall time of ``repeats`` calls after ``warmup`` calls, and the last call's result."""
    result = None
    for _ in range(warmup):
        result = fn()
    synchronize(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def timed_alternating(
    fns: dict[str, Callable[[], Any]], device: torch.device, repeats: int = 2, min_seconds: float = 2.0
) -> tuple[dict[str, float], dict[str, Any]]:
    """The smallest wall time of each function, calling them in turn (A, B, A, B, ...) after one warm-up each.

    Alternating spreads a busy machine's slow moments over all contenders instead of one. Rounds go on
    until ``repeats`` rounds are done and each function has run for ``min_seconds`` in total, so that
    sub-second workloads get enough samples for the minimum to mean something.
    """
    results = {name: fn() for name, fn in fns.items()}
    synchronize(device)
    best = {name: float("inf") for name in fns}
    spent = {name: 0.0 for name in fns}
    rounds = 0
    while rounds < repeats or min(spent.values()) < min_seconds:
        for name, fn in fns.items():
            start = time.perf_counter()
            results[name] = fn()
            synchronize(device)
            elapsed = time.perf_counter() - start
            best[name] = min(best[name], elapsed)
            spent[name] += elapsed
        rounds += 1
    return best, results


def reset_peak(device: torch.device) -> float:
    """Start a peak-memory measurement; returns the memory in use now (MiB), the baseline.

    :mod:`robustft.memory` measures it, as runs do: on CPUs the resident high-water mark is reset, so the
    peak that follows is the workload's, not the imports'.
    """
    return memory.reset_peak(device) or 0.0


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak` (MiB): GPU memory allocated, or the process's resident set."""
    return memory.peak_mib(device) or 0.0


class _Block(nn.Module):
    """Pre-activation basic block (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.skip = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.skip(out) if self.skip is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + shortcut


class PreActResNetLike(nn.Module):
    """PreAct ResNet-18's layout (2-2-2-2 blocks, widths w, 2w, 4w, 8w); ``width=64`` is ResNet-18 itself."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        blocks, cin = [], width
        for stage, mult in enumerate((1, 2, 4, 8)):
            for index in range(2):
                blocks.append(_Block(cin, width * mult, 2 if stage > 0 and index == 0 else 1))
                cin = width * mult
        self.blocks = nn.Sequential(*blocks)
        self.bn, self.fc = nn.BatchNorm2d(cin), nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))


@dataclass
class Workload:
    """A model in eval mode, a batch and its radii."""

    name: str
    model: nn.Module
    x: Tensor
    y: Tensor
    eps: dict[str, float]
    description: str


def digits_workload(device: torch.device, n: int) -> Workload:
    """The embedded default model (built once into robustft's cache) on the first ``n`` digits test points."""
    from robustft.models import load_model, resolve_dataset
    from robustft.pluginmanager import registries

    regs = registries()
    model, _ = load_model("digits-cnn-linf", regs, device)
    test = resolve_dataset("digits", regs).test()
    x, y = next(iter(torch.utils.data.DataLoader(test, batch_size=min(n, len(test)))))
    eps = {"inf": 0.1, "2": 0.4, "1": 2.0}
    return Workload("digits-cnn", model.eval(), x.to(device), y.to(device), eps, f"digits CNN (trained), {len(x)} test points, 1x8x8")


def cifar_workload(device: torch.device, n: int, width: int) -> Workload:
    """Random-weight PreAct-ResNet-like net on uniform-noise 3x32x32 images, labelled by its own predictions.

    The radii are a small fraction of CIFAR-10's (8/255, 0.5, 12): random networks are far less robust
    than trained ones, and the comparison needs radii where some but not all points break.
    """
    torch.manual_seed(0)
    model = PreActResNetLike(width).to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(n, 3, 32, 32, generator=gen).to(device)
    # BatchNorm statistics of this batch: with the initial ones (mean 0, variance 1) a random network maps
    # every input to nearly the same logits, and no attack has anything to work with.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        model.train()(x)
        y = model.eval()(x).argmax(1)
    eps = {"inf": 0.25 / 255, "2": 0.03, "1": 1.0}
    return Workload(f"preact-w{width}", model, x, y, eps, f"PreAct-ResNet-18 layout, width {width}, random weights, {n} points, 3x32x32")


def broken(model: nn.Module, x_adv: Tensor, y: Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) != y).sum())
