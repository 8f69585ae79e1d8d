"""Every user error: one sentence on stderr, a non-zero exit (2 for bad input), never a traceback.

The CLI runs in-process here (the same ``main`` the script calls); the subprocess path is exercised by
the plugin, geometry and end-to-end tests."""

from __future__ import annotations

import functools

import pytest
from helpers import cli_in_process


def assert_one_sentence(result, code: int | None = 2) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    if code is None:
        assert result.returncode != 0
    else:
        assert result.returncode == code, (result.returncode, result.stderr)
    # warnings before the error are allowed (a weights file without its checksum, say); the error is one line
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize(
    "args,suggestion",
    [
        (["finetune", "--scheme", "e-atx"], "'e-at'"),
        (["finetune", "--attack", "apgdd"], "'apgd'"),
        (["finetune", "--model", "digits-cnn-lin"], "'digits-cnn-linf'"),
        (["finetune", "--model", "builtn:digits-cnn-linf"], "'builtin'"),
        (["finetune", "--dataset", "digit"], "'digits'"),
        (["eval", "--model", "digits-cnn-linf", "--suite", "e-att"], "'e-at'"),
    ],
)
def test_unknown_names_suggest_the_closest(args, suggestion, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    line = assert_one_sentence(run_cli(*args))
    assert "did you mean" in line and suggestion in line


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--norms", "3"],
        ["eval", "--norms", "3"],
        ["finetune", "--eps", "inf=8/0"],
        ["finetune", "--eps", "2=-1"],
        ["finetune", "--eps", "foo"],
        ["eval", "--eps", "foo"],
        ["eval", "--eps", "inf=1/0"],
        ["geometry", "--eps", "1=12", "--eps", "inf=8/255"],
        ["finetune", "--option", "sampling=sometimes"],
        ["finetune", "--option", "noequals"],
        ["finetune", "--scheme", "lp-at", "--norms", "1,inf"],
        ["finetune", "--epochs", "0"],
        ["finetune", "--seed", "99999999999999999999999"],
        ["eval", "--batch-size", "0"],
        ["eval", "--model", "scratch:digits-cnn", "--eps", "inf=2"],  # the ball would hold every image, as finetune says
        ["eval", "--batch-size", "-3"],
        ["eval", "--seed", "-1"],
        ["finetune", "--eps", "inf=1/255", "--eps", "inf=2/255"],
        ["finetune", "--attack-steps", "inf=3", "--attack-steps", "inf=4"],
        ["finetune", "--attack-option", "3:topk=0.1"],
    ],
)
def test_malformed_input_exits_2(args, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    assert_one_sentence(run_cli(*args))


def test_robustbench_alias_offline_says_what_to_download(tmp_path, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    """The alias resolves to RobustBench's CIFAR-10 model; offline, pre-flight stops at the first missing
    piece (here the CIFAR-10 files) with where to put it. tests/test_zoos.py covers the checkpoint."""
    result = run_cli("finetune", "--model", "Gowal2020_WRN70", "--scheme", "e-at", "--epochs", "3", env={"ROBUSTFT_CACHE": str(tmp_path)})
    line = assert_one_sentence(result, code=1)
    assert "CIFAR-10" in line and str(tmp_path / "data") in line and "--download" in line


def test_missing_config_file(tmp_path, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    line = assert_one_sentence(run_cli("finetune", "--config", str(tmp_path / "nope.toml")), code=None)
    assert "nope.toml" in line


def test_malformed_config_file(tmp_path, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = [\n")
    assert_one_sentence(run_cli("finetune", "--config", str(bad)))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("epoch = 3\n")
    assert "did you mean 'epochs'" in assert_one_sentence(run_cli("finetune", "--config", str(unknown)))


def test_missing_run_and_no_latest_run(tmp_path, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    line = assert_one_sentence(run_cli("eval", "--run", str(tmp_path / "missing")), code=None)
    assert "missing" in line
    line = assert_one_sentence(run_cli("eval", env={"ROBUSTFT_RUNS_DIR": str(tmp_path / "empty")}), code=None)
    assert "robustft finetune" in line


def test_damaged_and_malicious_weights_are_refused(tmp_path, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    """A run whose final weights are damaged, or a pickle that would run code, ends in one sentence."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"base_model": "digits-cnn-linf", "dataset": "digits", "scheme": "e-at", "eps": {}}))
    (run / "model.pt").write_bytes(b"not a checkpoint")
    assert "damaged" in assert_one_sentence(run_cli("eval", "--run", str(run), "--n-ex", "5"), code=None)

    marker = tmp_path / "pwned"
    import torch

    torch.save({"model": Exploit(str(marker))}, run / "model.pt")
    line = assert_one_sentence(run_cli("eval", "--run", str(run), "--n-ex", "5"), code=None)
    assert "refused" in line and "open" in line
    assert not marker.exists()


class Exploit:
    """Unpickling this would create a file: the payload of a malicious checkpoint."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_folder_given_as_config_and_a_file_given_as_out_are_named_for_what_they_are(tmp_path, capsys, monkeypatch):
    run_cli = functools.partial(cli_in_process, capsys, monkeypatch)
    line = assert_one_sentence(run_cli("finetune", "--config", str(tmp_path)), code=1)
    assert "is a folder; give the TOML file" in line
    file = tmp_path / "taken"
    file.write_text("x")
    line = assert_one_sentence(run_cli("finetune", "--out", str(file)), code=1)
    assert "is a file, not a folder" in line


@pytest.mark.parametrize("command", [["finetune"], ["compare", "--schemes", "e-at"]], ids=["finetune", "compare"])
def test_a_non_utf8_out_is_refused_and_leaves_nothing(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "bad\udcffname"  # the byte 0xff of a Latin-1 file name, as Python passes it on
    result = cli_in_process(capsys, monkeypatch, *command, "--out", name, "--epochs", "1", "--n-train", "16")
    line = assert_one_sentence(result)
    assert line == "error: --out 'bad\\\\xffname' is not valid UTF-8, which robustft's files need to record it; choose a UTF-8 name."
    assert list(tmp_path.iterdir()) == []
