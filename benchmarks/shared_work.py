"""Work items shared by processes of one machine: each item is done once, by whichever process claims it.

``benchmarks/reproduce.py`` caches each evaluation per model and norm. Several processes started with the same
``--part`` then split the norms between them: a process claims a norm by holding an exclusive ``flock`` on
``<item>.lock``, computes it and writes the result. The kernel releases the lock when its process ends, however it
ends, so a killed process's item is free again at once and no process ids are trusted (they can be reused). The
lock files stay (they hold the last holder's process id, for people) and cost nothing. ``flock`` is POSIX
advisory locking on a local file system: the processes must share a machine and a folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def claimed(lock: Path) -> Iterator[bool]:
    """Try to claim ``lock`` for the ``with`` block without waiting: True when this process holds it, False when
    another one does. Released at the end of the block, also when it raises, and by the kernel if the process dies."""
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def do_once(
    items: list[str], done: Callable[[str], bool], work: Callable[[str], None], folder: Path, poll: float = 30.0, wait: bool = True
) -> bool:
    """Do every item of ``items`` not ``done`` yet, sharing them with other processes running the same call:
    take each free item in turn, then wait for those other processes hold (an item whose process ends is free
    again and taken). With ``wait=False`` return at once instead of waiting, False while other processes still
    hold items (so the caller can do other work first and call again)."""
    while True:
        waiting = []
        for item in items:
            if done(item):
                continue
            with claimed(folder / f"{item}.lock") as mine:
                if mine and not done(item):  # done while we asked: another process finished it
                    work(item)
                elif not mine:
                    waiting.append(item)
        if not waiting:
            return True
        if not wait:
            return False
        time.sleep(poll)
