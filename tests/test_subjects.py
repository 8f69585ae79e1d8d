"""What an evaluation is of (robustft/subjects.py): resolved once, every model loaded once per command.

A counting zoo, registered in a plugin host of the test, hands out the builtin digits model and counts its
loads; ``eval --sanity`` (the table, then four checks per model) and ``compare`` must load each model once.
"""

from __future__ import annotations

import json
from collections import Counter
from fractions import Fraction
from typing import Any

import pytest
import torch
from helpers import cli_in_process
from torch import nn

from robustft.contracts import DatasetPlugin, ModelInfo, ModelZoo
from robustft.errors import BadInputError, UserError
from robustft.hookspecs import hookimpl
from robustft.norms import Norm
from robustft.pluginmanager import PluginHost
from robustft.subjects import resolve

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingZoo(ModelZoo):
    """``counting:digits``: the builtin zoo's digits model, counting its loads."""

    name = "counting"
    loads: Counter[str] = Counter()

    def models(self) -> list[ModelInfo]:
        return [ModelInfo(name="digits", dataset="digits", threat=Norm.LINF)]

    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        from robustft.pluginmanager import get_host

        CountingZoo.loads[info.name] += 1
        builtin = get_host().registries.zoos.get("builtin")
        return builtin.load(builtin.resolve("digits-cnn-linf"), device=device, dataset=dataset, **options)


class CountingPlugin:
    @staticmethod
    @hookimpl
    def register_zoos(register) -> None:
        register(CountingZoo())


@pytest.fixture
def host(monkeypatch, base_model):
    host = PluginHost()
    host.register(CountingPlugin, name="counting-plugin")
    monkeypatch.setattr("robustft.pluginmanager._HOST", host)  # the CLI's process-wide host, restored afterwards
    CountingZoo.loads.clear()
    return host


def test_eval_sanity_of_a_model_loads_it_once(host, capsys, monkeypatch):
    result = cli_in_process(
        capsys,
        monkeypatch,
        "eval",
        "--model",
        "counting:digits",
        "--norms",
        "inf",
        "--n-ex",
        "12",
        "--steps",
        "2",
        "--sanity",
        "--json",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["sanity"]) == 4 and data["results"][0]["name"] == "counting:digits"
    assert CountingZoo.loads == {"digits": 1}  # the table and the four checks share one network


def test_eval_sanity_of_a_run_loads_the_run_and_its_base_once_each(host, tmp_path, capsys, monkeypatch):
    import robustft

    run = robustft.finetune(
        model="counting:digits", epochs=1, n_train=16, batch_size=16, attack_steps=1, out=str(tmp_path / "run"), host=host
    ).run_dir
    CountingZoo.loads.clear()
    result = cli_in_process(
        capsys, monkeypatch, "eval", "--run", str(run), "--norms", "inf", "--n-ex", "12", "--steps", "2", "--sanity", "--json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [r["name"] for r in data["results"]] == ["counting:digits", "+ e-at"] and len(data["sanity"]) == 8
    assert CountingZoo.loads == {"digits": 2}  # the base model once, the fine-tuned one (same architecture) once


def test_resolving_loads_nothing_and_a_subject_loads_once(host, tmp_path):
    import robustft

    run = robustft.finetune(
        model="counting:digits", epochs=1, n_train=16, batch_size=16, attack_steps=1, out=str(tmp_path / "run"), host=host
    ).run_dir
    CountingZoo.loads.clear()
    subjects = resolve(run=run, registries=host.registries)
    assert CountingZoo.loads == {} and [s.label for s in subjects.models] == ["counting:digits", "+ e-at"]
    assert subjects.has_base and subjects.run_dir == run and subjects.run_eps[Norm.LINF] > 0
    tuned = subjects.models[1]
    first = tuned.model(torch.device("cpu"))
    assert tuned.model(torch.device("cpu")) is first and CountingZoo.loads == {"digits": 1}
    alone = resolve(run=run, registries=host.registries, with_base=False, label="mine")
    assert [s.label for s in alone.models] == ["mine"] and not alone.has_base
    assert subjects.radii([Norm.LINF]) == {**subjects.dataset.default_eps, **subjects.run_eps}  # the run's radii first
    assert subjects.radii([Norm.LINF], {"inf": "1/10"})[Norm.LINF] == Fraction(1, 10)  # --eps wins


def test_radii_and_choice_errors_are_one_sentence(host, tmp_path):
    subjects = resolve(model="counting:digits", registries=host.registries)
    assert subjects.radii([Norm.LINF], {"inf": "3/10"})[Norm.LINF] == Fraction(3, 10)
    with pytest.raises(BadInputError, match="Give --model or --run, not both"):
        resolve(model="counting:digits", run=tmp_path, registries=host.registries)
    (tmp_path / "run.json").write_text(json.dumps({"base_model": "counting:digits", "dataset": "digits", "scheme": "e-at"}))
    with pytest.raises(UserError, match=r"has no final weights \(model.pt\)"):
        resolve(run=tmp_path, registries=host.registries)


def test_compare_loads_each_model_once_and_a_cached_evaluation_loads_none(host, tmp_path):
    from robustft.compare import compare

    settings = dict(
        seeds=1,
        out=tmp_path / "cmp",
        norms="inf",
        n_ex=8,
        steps=1,
        host=host,
        model="counting:digits",
        epochs=1,
        n_train=16,
        batch_size=16,
        attack_steps=1,
    )
    first = compare("e-at", **settings)
    # fine-tuning loads the base model once; the evaluation loads the base model and the run's model once each
    assert CountingZoo.loads == {"digits": 3} and first.base["name"] == "digits"
    CountingZoo.loads.clear()
    again = compare("e-at", **settings)  # the run and both evaluations are reused
    assert CountingZoo.loads == {} and again.base == first.base
    assert again.rows[0].union.values == first.rows[0].union.values
