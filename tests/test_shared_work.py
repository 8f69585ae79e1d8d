"""benchmarks/shared_work.py: processes of one machine split work items, and a dead process's claim is taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from shared_work import claimed, do_once, try_claim  # noqa: E402


def finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_claim_is_exclusive_released_and_taken_over_from_a_dead_process(tmp_path: Path) -> None:
    lock = tmp_path / "inf.lock"
    lock.write_text(str(os.getppid()))  # a live process holds it
    assert not try_claim(lock) and lock.read_text() == str(os.getppid())
    lock.write_text(str(finished_pid()))  # its process has ended: the claim is taken over
    with claimed(lock) as mine:
        assert mine and lock.read_text() == str(os.getpid())
    assert not lock.exists()


def test_do_once_skips_done_items_waits_for_held_ones_and_takes_over_a_dead_holder(tmp_path: Path) -> None:
    done_items, calls = {"2"}, []

    def work(item: str) -> None:
        calls.append(item)
        done_items.add(item)

    (tmp_path / "inf.lock").write_text(str(finished_pid()))  # left by a killed process
    do_once(["inf", "2", "1"], done_items.__contains__, work, tmp_path, poll=0.01)
    assert calls == ["inf", "1"] and not list(tmp_path.glob("*.lock"))


def test_do_once_leaves_an_item_a_live_process_holds_until_it_is_done(tmp_path: Path) -> None:
    (tmp_path / "1.lock").write_text(str(os.getppid()))
    done_items, polls = set(), []

    def done(item: str) -> bool:
        if item == "1" and "inf" in done_items:
            polls.append(item)
            if len(polls) > 2:  # the other process finishes it
                done_items.add("1")
        return item in done_items

    do_once(["inf", "1"], done, done_items.add, tmp_path, poll=0.01)
    assert done_items == {"inf", "1"} and len(polls) >= 3
