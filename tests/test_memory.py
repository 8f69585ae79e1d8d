"""robustft.memory: a peak belongs to the stretch of work after its reset (each epoch's own)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustft import memory

CPU = torch.device("cpu")


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the resident high-water mark resets on Linux only")
def test_a_reset_forgets_the_earlier_peak_on_the_cpu() -> None:
    memory.reset_peak(CPU)
    block = torch.ones(96 * 2**20 // 4)  # 96 MiB, touched
    block += 1
    first = memory.peak_mib(CPU)
    del block
    baseline = memory.reset_peak(CPU)
    second = memory.peak_mib(CPU)
    assert first is not None and second is not None and baseline is not None
    assert first - second > 64  # the 96 MiB belong to the first stretch only
    assert second == pytest.approx(baseline, abs=16)


def test_the_peak_is_a_size_in_mib() -> None:
    memory.reset_peak(CPU)
    peak = memory.peak_mib(CPU)
    assert peak is not None and 1 < peak < 1e6
