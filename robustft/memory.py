"""Peak memory of a stretch of work (an epoch, a benchmark): what runs record and print.

On CUDA the caching allocator's peak since the last reset. On a Linux CPU the process's resident
high-water mark (``VmHWM``), which writing ``5`` to ``/proc/self/clear_refs`` resets to the current
resident set; where neither file exists (macOS) the process's lifetime peak (``ru_maxrss``), which
cannot be reset.
"""

from __future__ import annotations

import gc
import sys

import torch


def reset_peak(device: torch.device) -> float | None:
    """Start measuring a peak on ``device``; returns the memory in use now in MiB (None if unknown)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
    except OSError:
        pass
    return _proc_status_mib("VmRSS")


def peak_mib(device: torch.device) -> float | None:
    """The peak in MiB since :func:`reset_peak` (see the module for what it is on each platform)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _proc_status_mib("VmHWM")
    if hwm is not None:
        return hwm
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def _proc_status_mib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        return None
    return None
