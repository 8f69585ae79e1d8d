"""The embedded default from the command line: fine-tune, then the before/after table."""

from __future__ import annotations

import json

import pytest
from helpers import cli_in_process, run_cli


@pytest.mark.slow
def test_embedded_default_shows_the_union_gain(tmp_path, base_model):
    """The paper's effect on digits: E-AT fine-tuning of an l-inf-robust model raises union accuracy.

    The full default (all 360 test points, 100-step attacks) is measured in docs/embedded-default.md;
    here the evaluation is cut to 150 points and 20 steps to keep the suite fast."""
    result = run_cli("finetune", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Run finished" in result.stdout
    result = run_cli("eval", "--norms", "1,2,inf", "--n-ex", "150", "--steps", "20", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    base, tuned = json.loads(result.stdout)["results"]
    assert base["name"] == "digits-cnn-linf" and tuned["name"].startswith("+ e-at")
    assert base["n"] == tuned["n"] == 150
    assert set(base["robust"]) == {"1", "2", "inf"}
    assert tuned["union"] >= base["union"] + 0.10
    assert base["robust"]["inf"] > base["robust"]["1"]  # the base model is l-inf robust, weak in l1
    for row in (base, tuned):
        assert row["union"] <= min(row["robust"].values()) <= row["clean"]
        assert sum(row["invalid_points"].values()) == 0


def test_eval_table_has_both_rows_with_deltas(tmp_path, base_model, capsys, monkeypatch):
    assert cli_in_process(capsys, monkeypatch, "finetune", "--epochs", "1", "--n-train", "128", "--quiet").returncode == 0
    result = cli_in_process(capsys, monkeypatch, "eval", "--n-ex", "30", "--steps", "5", "--quiet", env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "digits-cnn-linf" in result.stdout and "+ e-at" in result.stdout
    assert "union" in result.stdout and "(+" in result.stdout or "(-" in result.stdout
    assert result.stderr.strip() == ""  # --quiet: nothing on stderr, the table on stdout


def test_eval_single_model_json(base_model, capsys, monkeypatch):
    result = cli_in_process(
        capsys, monkeypatch, "eval", "--model", "digits-cnn-linf", "--norms", "inf", "--n-ex", "20", "--steps", "5", "--json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert set(row["robust"]) == {"inf"} and row["n"] == 20 and row["suite"] == "e-at"
