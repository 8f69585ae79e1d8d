"""No half-written files, checksums verified on load, and checkpoints that cannot run code."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

import robustft
from robustft.errors import UserError
from robustft.io import (
    UnsafeFileError,
    append_jsonl,
    atomic_write_text,
    checksum_path,
    load_torch,
    read_jsonl,
    save_torch,
)


class Exploit:
    """Unpickling this would create a file: the payload of a malicious checkpoint."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def write_with_checksum(path, obj) -> None:
    """What an attacker who can write the folder would plant: a pickle and a matching checksum."""
    torch.save(obj, path)
    checksum_path(path).write_text(hashlib.sha256(path.read_bytes()).hexdigest() + f"  {path.name}\n")


def test_save_torch_writes_a_verified_checksum(tmp_path):
    path = tmp_path / "state.pt"
    save_torch({"w": torch.arange(4.0)}, path)
    assert checksum_path(path).read_text().split() == [hashlib.sha256(path.read_bytes()).hexdigest(), "state.pt"]
    assert torch.equal(load_torch(path, require_checksum=True)["w"], torch.arange(4.0))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temporary left over


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-checksum", "bad-checksum-file"])
def test_damaged_checkpoint_is_refused_with_a_sentence_naming_it(tmp_path, damage):
    path = tmp_path / "epoch-001.pt"
    save_torch({"w": torch.randn(1000)}, path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:500] + bytes([data[500] ^ 1]) + data[501:])
    elif damage == "no-checksum":
        checksum_path(path).unlink()
    else:
        checksum_path(path).write_text("garbage\n")
    with pytest.raises(UserError) as raised:
        load_torch(path, "checkpoint", require_checksum=True)
    message = str(raised.value)
    assert "epoch-001.pt" in message and len(message.splitlines()) == 1


def test_truncated_file_without_checksum_is_refused_too(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(UserError, match="weights.pt.*damaged"):
        load_torch(path, "weights file")


def test_atomic_write_leaves_the_old_file_when_it_fails(tmp_path, monkeypatch):
    path = tmp_path / "run.json"
    atomic_write_text(path, "old")

    def broken_replace(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_torn_last_metrics_line_is_harmless(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"kind": "batch", "epoch": 1, "batch": 1, "loss": 0.5})
    with open(path, "a") as handle:
        handle.write('{"kind": "batch", "ep')
    assert read_jsonl(path) == [{"kind": "batch", "epoch": 1, "batch": 1, "loss": 0.5}]


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "epoch-001.pt"
    write_with_checksum(path, {"model": Exploit(str(marker))})
    with pytest.raises(UnsafeFileError, match="refused"):
        load_torch(path, "checkpoint", require_checksum=True)
    assert not marker.exists()


def test_resume_refuses_a_planted_checkpoint_and_runs_nothing(tmp_path, base_model):
    run = robustft.finetune(epochs=2, n_train=32, batch_size=32, attack_steps=1, out=str(tmp_path / "run")).run_dir
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    marker = tmp_path / "pwned"
    write_with_checksum(run / "checkpoints" / "epoch-002.pt", {"format": "robustft-checkpoint", "model": Exploit(str(marker))})
    with pytest.raises(UnsafeFileError) as raised:
        robustft.finetune(resume=run)
    message = str(raised.value)
    assert "epoch-002.pt" in message and "refused" in message and "open" in message and len(message.splitlines()) == 1
    assert not marker.exists()
    assert raised.value.exit_code == 1


def test_final_weights_corrupted_are_refused_by_eval(tmp_path, base_model):
    run = robustft.finetune(epochs=1, n_train=32, batch_size=32, attack_steps=1, out=str(tmp_path / "run")).run_dir
    data = bytearray((run / "model.pt").read_bytes())
    data[-100] ^= 0xFF
    (run / "model.pt").write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.pt.*is corrupted"):
        robustft.evaluate(run=run, n_ex=5, steps=1)


def test_weights_without_their_checksum_warn_and_strict_refuses(tmp_path, base_model, caplog):
    run = robustft.finetune(epochs=1, n_train=32, batch_size=32, attack_steps=1, out=str(tmp_path / "run")).run_dir
    (run / "model.pt.sha256").unlink()
    with caplog.at_level("WARNING", logger="robustft"):
        robustft.evaluate(run=run, n_ex=5, steps=1, norms="inf")
    assert any("has no checksum file (model.pt.sha256), so it cannot be checked" in r.getMessage() for r in caplog.records)
    with pytest.raises(UserError, match=r"cannot be checked; robustft writes one with every model\.pt \(--strict\)\."):
        robustft.evaluate(run=run, n_ex=5, steps=1, norms="inf", strict=True)


def test_every_torch_load_is_weights_only():
    """The audit: every torch.load call in robustft and its plugins passes weights_only=True."""
    import ast
    import pathlib

    root = pathlib.Path(robustft.__file__).resolve().parent.parent
    calls = []
    for folder in ("robustft", "plugins"):
        for source in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name)
                    and node.func.value.id == "torch"
                ):
                    safe = any(
                        k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords
                    )
                    calls.append((source.relative_to(root).as_posix(), node.lineno, safe))
    assert calls and all(safe for _, _, safe in calls), calls
