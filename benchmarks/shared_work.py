"""Work items shared by processes of one machine: each item is done once, by whichever process claims it.

``benchmarks/reproduce.py`` caches each evaluation per model and norm. Several processes started with the same
``--part`` then split the norms between them: a process claims a norm by creating ``<item>.lock`` holding its
process id (an exclusive create, atomic on a local file system), computes it, writes the result and removes the
lock. A lock whose process no longer runs (killed, machine restarted) is taken over. Locks name processes of
this machine only, so the processes must share a machine and a folder.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _holder(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip() or 0) or None
    except (FileNotFoundError, ValueError):
        return None


def try_claim(lock: Path) -> bool:
    """Claim ``lock`` for this process: True when it is ours (new, or left by a process that has ended)."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = _holder(lock)
            if holder is not None and (holder == os.getpid() or _alive(holder)):
                return holder == os.getpid()
            lock.unlink(missing_ok=True)  # a dead process's claim (or a half-written one): take it over
            continue
        with os.fdopen(fd, "w") as file:
            file.write(str(os.getpid()))
        return True
    return False


@contextlib.contextmanager
def claimed(lock: Path) -> Iterator[bool]:
    """``try_claim`` for the ``with`` block, released at its end (also when it raises)."""
    mine = try_claim(lock)
    try:
        yield mine
    finally:
        if mine:
            lock.unlink(missing_ok=True)


def do_once(
    items: list[str], done: Callable[[str], bool], work: Callable[[str], None], folder: Path, poll: float = 30.0, wait: bool = True
) -> bool:
    """Do every item of ``items`` not ``done`` yet, sharing them with other processes running the same call:
    take each free item in turn, then wait for those other processes hold, taking over any whose process ends.
    With ``wait=False`` return at once instead of waiting, False while other processes still hold items (so the
    caller can do other work first and call again)."""
    while True:
        waiting = []
        for item in items:
            if done(item):
                continue
            with claimed(folder / f"{item}.lock") as mine:
                if mine and not done(item):
                    work(item)
                elif not mine:
                    waiting.append(item)
        if not waiting:
            return True
        if not wait:
            return False
        time.sleep(poll)
