"""Files robustft reads back are checked against their declared schema: damage is one sentence, never a traceback."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from helpers import cli_in_process

from robustft.schemas import Checkpoint, RunInfo, SchemaError

GOOD_RUN = {"base_model": "digits-cnn-linf", "dataset": "digits", "scheme": "e-at", "eps": {"inf": "1/10"}, "status": "finished"}


@pytest.mark.parametrize(
    "content,message",
    [
        ([], "it holds list, not a table of fields"),
        ({}, "it has no 'base_model'"),
        ({**GOOD_RUN, "base_model": 7}, "'base_model' must be a string, not 7"),
        ({**GOOD_RUN, "model_options": "x"}, "'model_options' must be a table (JSON object), not 'x'"),
        ({**GOOD_RUN, "eps": {"inf": 0.1}}, "'eps' must be a table (JSON object)"),
        ({**GOOD_RUN, "format": 99}, "has format 99, which this robustft (format 1) cannot read"),
    ],
)
def test_damaged_run_information_is_named(content, message, tmp_path):
    with pytest.raises(SchemaError, match=message.replace("(", r"\(").replace(")", r"\)")):
        RunInfo.check(content, tmp_path / "run.json")
    assert RunInfo.check(GOOD_RUN, tmp_path / "run.json") == GOOD_RUN  # older files have no format: 1


@pytest.mark.parametrize("content", [[], {}, {**GOOD_RUN, "base_model": 7}, {**GOOD_RUN, "model_options": "x"}])
def test_eval_of_a_run_with_damaged_run_json_is_one_sentence(content, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(content))
    result = functools.partial(cli_in_process, capsys, monkeypatch)("eval", "--run", str(run), "--n-ex", "4")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.strip()]
    assert line.startswith(f"error: The run information {str(run / 'run.json')!r} is damaged")


def checkpoint(**changes):
    state = {
        "format": "robustft-checkpoint",
        "epoch": 1,
        "position": [1, 0],
        "model": {"w": torch.zeros(2)},
        "optimizer": {"state": {}, "param_groups": []},
        "rng": {"torch": torch.zeros(3), "data": torch.zeros(3), "scheme": torch.zeros(3)},
        "scheme": {},
        "passes": {"forward": 3},
        "nan_batches": 0,
        "epoch_stats": {"images": 0},
        "config": {},
    }
    state.update(changes)
    return {k: v for k, v in state.items() if v is not None}


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"position": [1]}, "'position' must be a list"),
        ({"position": [-1, 0]}, "position \\[-1, 0\\] is negative"),
        ({"rng": None}, "it has no 'rng'"),
        ({"rng": {"torch": torch.zeros(1)}}, "random states lack 'data'"),
        (
            {"rng": {"torch": torch.zeros(1), "data": torch.zeros(1), "scheme": torch.zeros(1), "attacks": {"7": {}}}},
            "training attacks' states are not a table",
        ),
        (
            {"rng": {"torch": torch.zeros(1), "data": torch.zeros(1), "scheme": torch.zeros(1), "attacks": {"inf": 3}}},
            "training attacks' states are not a table",
        ),
        ({"epoch_stats": {"images": 3, "bogus": 1}}, "unknown field 'bogus'"),
        ({"passes": {"forward": "many"}}, "'passes' must be a table"),
    ],
)
def test_a_checkpoint_with_the_wrong_structure_is_named(changes, message, tmp_path):
    Checkpoint.check(checkpoint(), tmp_path / "epoch-001.pt")
    with pytest.raises(SchemaError, match=message):
        Checkpoint.check(checkpoint(**changes), tmp_path / "epoch-001.pt")


def test_resume_falls_back_past_a_checkpoint_with_a_valid_checksum_but_the_wrong_structure(tmp_path, base_model, caplog):
    import logging

    import robustft
    from robustft.io import load_torch, save_torch

    options = dict(epochs=2, n_train=32, batch_size=16, attack_steps=1, seed=2)
    reference = robustft.finetune(out=str(tmp_path / "reference"), **options)
    run = robustft.finetune(out=str(tmp_path / "run"), **options).run_dir
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    (run / "model.pt").unlink()
    newest = run / "checkpoints" / "epoch-002.pt"
    state = load_torch(newest)
    state["position"] = [2]
    save_torch(state, newest)  # a fresh, valid checksum over the wrong structure
    with caplog.at_level(logging.WARNING, logger="robustft"):
        resumed = robustft.finetune(resume=run)
    assert any("'position' must be a list" in r.getMessage() for r in caplog.records)
    mine, theirs = load_torch(resumed.weights)["model"], load_torch(reference.weights)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
