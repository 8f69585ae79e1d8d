"""Fault injection: a disk that fills up mid-run, writes killed before a run's first files, stale temporaries.

Each fault ends in one sentence, and the run continues afterwards to the weights an uninterrupted run gives.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch

import robustft
import robustft.io
from robustft.errors import UserError
from robustft.io import DiskFullError, append_jsonl, atomic_write_text, load_torch, remove_stale_temporaries

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = dict(epochs=2, n_train=64, batch_size=32, attack_steps=1, seed=4)


def fill_disk_at(monkeypatch, name: str) -> list[str]:
    """Make ``fsync`` of the first file written whose name contains ``name`` fail with ENOSPC, as a full
    disk does (the write itself may succeed into the page cache; fsync is where the kernel reports it)."""
    real_fsync, hits = os.fsync, []

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        if name in target and not hits:
            hits.append(target)
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(robustft.io.os, "fsync", fsync)
    return hits


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to name the file behind a descriptor")
def test_a_full_disk_mid_run_is_one_sentence_and_the_resumed_run_is_bitwise_the_same(tmp_path, base_model, monkeypatch):
    reference = robustft.finetune(out=str(tmp_path / "reference"), **OPTIONS)
    run = tmp_path / "run"
    hits = fill_disk_at(monkeypatch, "epoch-002.pt")
    with pytest.raises(DiskFullError) as full:
        robustft.finetune(out=str(run), **OPTIONS)
    assert hits and full.value.message.startswith(f"No space left in {str(run / 'checkpoints')!r} to write epoch-002.pt (")
    assert "free at least that much there" in full.value.message and "--resume" in full.value.message
    # nothing half-written: no temporary file, the first epoch's checkpoint intact
    assert not [p for p in run.rglob("*.tmp")]
    assert load_torch(run / "checkpoints" / "epoch-001.pt", require_checksum=True)["position"] == [1, 0]
    monkeypatch.undo()  # space freed
    info = json.loads((run / "run.json").read_text())
    assert info["status"] != "finished"
    resumed = robustft.finetune(resume=run)
    mine, theirs = load_torch(resumed.weights)["model"], load_torch(reference.weights)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_the_cli_names_the_folder_of_a_full_disk(tmp_path, base_model, monkeypatch, capsys):
    from helpers import cli_in_process

    fill_disk_at(monkeypatch, "config.toml")
    result = cli_in_process(capsys, monkeypatch, "finetune", "--epochs", "1", "--n-train", "16", "--out", str(tmp_path / "r"), "--quiet")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith(f"error: No space left in {str(tmp_path / 'r')!r} to write config.toml (")


def test_appending_a_metric_to_a_full_disk_is_one_sentence(tmp_path, monkeypatch):
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        handle = real_open(path, mode, *args, **kwargs)
        if "a" in mode:

            def write(_text):
                raise OSError(errno.ENOSPC, "No space left on device")

            handle.write = write
        return handle

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(DiskFullError, match=r"to write metrics\.jsonl \(\d+ bytes\)"):
        append_jsonl(tmp_path / "metrics.jsonl", {"loss": 1.0})


def test_other_write_errors_are_not_mistaken_for_a_full_disk(tmp_path, monkeypatch):
    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(robustft.io.os, "fsync", failing)
    with pytest.raises(OSError) as info:
        atomic_write_text(tmp_path / "x.json", "{}")
    assert not isinstance(info.value, UserError) and info.value.errno == errno.EIO
    assert not list(tmp_path.iterdir())  # the temporary file is gone


def test_stale_temporaries_are_removed_by_pattern_only(tmp_path):
    keep = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "run.json"]
    stale = [tmp_path / ".run.json.ab12cd.tmp", tmp_path / ".config.toml.x9.tmp"]
    for path in keep + stale:
        path.write_text("x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in keep) and not any(p.exists() for p in stale)


def test_a_run_killed_before_its_first_files_can_be_reused_or_resumed(tmp_path, base_model):
    # killed while writing config.toml: the folder holds only what robustft made, and --out may reuse it
    early = tmp_path / "early"
    (early / "checkpoints").mkdir(parents=True)
    (early / ".lock").write_text("123")
    (early / ".config.toml.k3j2.tmp").write_text("epochs = ")
    done = robustft.finetune(out=str(early), epochs=1, n_train=16, batch_size=16, attack_steps=1)
    assert (done.run_dir / "model.pt").is_file() and not list(early.glob("*.tmp"))
    # killed after config.toml, before run.json: --resume starts it from the beginning with that config
    late = tmp_path / "late"
    (late / "checkpoints").mkdir(parents=True)
    (late / "config.toml").write_text((early / "config.toml").read_text())
    (late / ".run.json.zz.tmp").write_text("{")
    resumed = robustft.finetune(resume=late)
    assert json.loads((late / "run.json").read_text())["status"] == "finished" and not list(late.glob("*.tmp"))
    mine, theirs = load_torch(resumed.weights)["model"], load_torch(done.weights)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    # a folder with anything else in it is still refused
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("my notes")
    with pytest.raises(UserError, match="is not empty"):
        robustft.finetune(out=str(tmp_path / "mine"), epochs=1, n_train=16)


def test_a_malicious_pickle_names_its_culprit(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, path)
    with pytest.raises(UserError, match=r"\(it calls posix\.system\)"):
        load_torch(path)


def test_written_files_get_the_permissions_a_plain_open_would_give(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic_write_text(tmp_path / "atomic.txt", "x")  # used to be 0600 (mkstemp's), whatever the umask
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
