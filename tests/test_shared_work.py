"""benchmarks/shared_work.py: processes of one machine split work items; a dead process's claim is free at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from shared_work import claimed, do_once  # noqa: E402

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.readline()  # hold until told
if len(sys.argv) > 2:
    open(sys.argv[2], "w").close()  # the item is done
"""


def holder(lock: Path, done_marker: Path | None = None) -> subprocess.Popen:
    """Another process holding ``lock`` until a line arrives on its stdin (then it marks the item done, if asked)."""
    args = [sys.executable, "-c", HOLDER, str(lock), *([str(done_marker)] if done_marker else [])]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_claim_is_exclusive_and_freed_when_its_process_dies(tmp_path: Path) -> None:
    lock = tmp_path / "inf.lock"
    other = holder(lock)
    with claimed(lock) as mine:
        assert not mine
    other.kill()  # killed while holding: the kernel releases its lock, no stale claim to clean up
    other.wait()
    with claimed(lock) as mine:
        assert mine and lock.read_text() == str(os.getpid())
        with claimed(lock) as again:  # exclusive within one process too (a second open file)
            assert not again
    with claimed(lock) as mine:
        assert mine  # released at the end of the block


def test_do_once_shares_items_and_waits_for_the_ones_others_hold(tmp_path: Path) -> None:
    done_items, calls = {"2"}, []

    def work(item: str) -> None:
        calls.append(item)
        done_items.add(item)

    def done(item: str) -> bool:
        return item in done_items or (tmp_path / f"{item}.done").exists()

    other = holder(tmp_path / "1.lock", tmp_path / "1.done")
    assert not do_once(["inf", "2", "1"], done, work, tmp_path, poll=0.01, wait=False)  # 1 is held elsewhere
    assert calls == ["inf"]
    other.stdin.write("finish\n")
    other.stdin.flush()
    assert do_once(["inf", "2", "1"], done, work, tmp_path, poll=0.01)  # waits until the other process is done
    other.wait()
    assert calls == ["inf"]  # nothing was done twice


def test_do_once_takes_over_an_item_whose_process_died(tmp_path: Path) -> None:
    other = holder(tmp_path / "inf.lock")
    done_items: set[str] = set()
    assert not do_once(["inf"], done_items.__contains__, done_items.add, tmp_path, poll=0.01, wait=False)
    other.kill()
    other.wait()
    assert do_once(["inf"], done_items.__contains__, done_items.add, tmp_path, poll=0.01) and done_items == {"inf"}
