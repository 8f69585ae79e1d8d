"""A third party ships a scheme with pip: real installation, real entry-point discovery."""

from __future__ import annotations

import json

import pytest
from helpers import install_example, run_cli, with_path


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory):
    return install_example("robustft-myscheme", tmp_path_factory)


def test_installed_plugin_is_listed(installed_example):
    result = run_cli("list", "schemes", "--json", env=with_path(installed_example))
    assert result.returncode == 0, result.stderr
    schemes = {s["name"]: s for s in json.loads(result.stdout)["schemes"]}
    assert schemes["my-scheme"]["plugin"] == "my-scheme"
    plugins = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=with_path(installed_example)).stdout)["plugins"]}
    assert plugins["my-scheme"]["distribution"] == "robustft-myscheme"
    assert plugins["my-scheme"]["version"] == "0.1.0"


def test_not_listed_without_installation():
    result = run_cli("list", "schemes", "--json")
    assert "my-scheme" not in {s["name"] for s in json.loads(result.stdout)["schemes"]}


def test_finetune_with_the_installed_scheme(installed_example, tmp_path, base_model):
    out = tmp_path / "run"
    result = run_cli(
        "finetune",
        "--scheme",
        "my-scheme",
        "--epochs",
        "1",
        "--n-train",
        "128",
        "--option",
        "clean-weight=0.25",
        "--out",
        str(out),
        "--quiet",
        env=with_path(installed_example),
    )
    assert result.returncode == 0, result.stderr
    batches = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    batches = [b for b in batches if b["kind"] == "batch"]
    assert batches and all("clean_loss" in b and b["norm"] in {"1", "inf"} for b in batches)
    assert (out / "model.pt").is_file()
