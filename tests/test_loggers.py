"""Experiment trackers (``--log NAME``): every record reaches every logger, a raising logger is switched off."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import pytest
from helpers import cli_in_process, install_example, run_cli, with_path

from robustft import hookimpl
from robustft.errors import UserError
from robustft.io import read_jsonl
from robustft.loggers import Loggers, RunLogger, flatten

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"epochs": 2, "n_train": 64, "attack_steps": 1, "device": "cpu"}
TINY_CLI = ("--epochs", "2", "--n-train", "64", "--attack-steps", "1", "--device", "cpu", "--quiet")


def finetune(out: Path, **options):
    from robustft.training import finetune as run

    return run(out=str(out), **{**TINY, **options})


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_cell(cell: str, value) -> bool:
    """A CSV cell holds the JSON record's value: numbers exactly, None as empty, lists as JSON."""
    if value is None:
        return cell == ""
    if isinstance(value, bool):
        return cell == ("true" if value else "false")
    if isinstance(value, (int, float)):
        return float(cell) == float(value)
    if isinstance(value, list):
        return json.loads(cell) == value
    return cell == str(value)


def assert_csv_is_metrics(run_dir: Path) -> None:
    records = [flatten(r) for r in read_jsonl(run_dir / "metrics.jsonl")]
    rows = csv_rows(run_dir / "metrics.csv")
    assert len(rows) == len(records) and records
    for row, record in zip(rows, records):
        assert all(same_cell(row[k], v) for k, v in record.items()), (row, record)
        assert all(row[k] == "" for k in row if k not in record)  # no value the record does not have


def test_csv_content_equals_metrics(base_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    result = cli_in_process(capsys, monkeypatch, "finetune", *TINY_CLI, "--log", "csv", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert_csv_is_metrics(out)
    kinds = [r["kind"] for r in csv_rows(out / "metrics.csv")]
    assert kinds.count("epoch") == 2 and kinds.count("batch") == 2
    # The summary of a run that is not evaluated: its final epoch.
    final = csv_rows(out / "summary.csv")
    last_epoch = [r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "epoch"][-1]
    assert len(final) == 1 and final[0]["kind"] == "final"
    assert float(final[0]["loss"]) == last_epoch["loss"] and final[0]["epoch"] == "2"


def test_a_resumed_run_rewrites_the_csv_from_the_kept_records(base_model, tmp_path):
    from robustft.training import finetune as run

    out = tmp_path / "run"
    finetune(out, epochs=1, log=["csv"])
    # As if the run had crashed in its second epoch: a record past its last checkpoint, in both files.
    info = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    (out / "model.pt").unlink()
    stray = {"kind": "batch", "epoch": 2, "batch": 1, "lr": 0.05, "loss": 9.0}
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(stray) + "\n")
    with open(out / "metrics.csv", "a") as handle:
        handle.write("batch,2,1,0.05,9.0\n")
    run(resume=out, epochs=2, log=["csv"])
    assert_csv_is_metrics(out)
    kinds = [(r["kind"], r["epoch"]) for r in csv_rows(out / "metrics.csv")]
    # the stray record (loss exactly 9.0) is gone; a throughput such as 1049.0 may still contain "9.0"
    assert ("resume", "2") in kinds and not any(float(r.get("loss") or "nan") == 9.0 for r in csv_rows(out / "metrics.csv"))


class Boom(RunLogger):
    """Raises at its second record; counts every call it gets."""

    name = "boom"
    calls: list[str] = []

    def open(self, run_dir, config, history) -> None:
        Boom.calls.append("open")
        assert config["scheme"] == "e-at"  # the configuration reaches the loggers

    def log(self, record) -> None:
        Boom.calls.append("log")
        if Boom.calls.count("log") == 2:
            raise RuntimeError("tracker server went away")

    def summary(self, summary) -> None:
        Boom.calls.append("summary")

    def close(self) -> None:
        Boom.calls.append("close")


class BoomPlugin:
    @hookimpl
    def register_loggers(self, register) -> None:
        register(Boom)


def test_a_raising_logger_is_switched_off_and_the_run_finishes(base_model, tmp_path, caplog):
    from robustft.pluginmanager import PluginHost

    host = PluginHost()
    host.register(BoomPlugin(), name="boom-plugin")
    Boom.calls = []
    out = tmp_path / "run"
    with caplog.at_level("WARNING", logger="robustft"):
        result = finetune(out, host=host, log=["boom", "csv"])
    assert json.loads((out / "run.json").read_text())["status"] == "finished" and result.weights.is_file()
    assert Boom.calls == ["open", "log", "log"]  # nothing after it raised, not even close
    warnings = [r.getMessage() for r in caplog.records if "boom" in r.getMessage()]
    assert len(warnings) == 1
    assert "Logger 'boom' raised RuntimeError in log(): tracker server went away; it is switched off" in warnings[0]
    assert_csv_is_metrics(out)  # the other loggers saw every record
    assert len([r for r in read_jsonl(out / "metrics.jsonl") if r["kind"] == "batch"]) == 2


def test_an_unknown_log_name_lists_the_valid_ones(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    result = cli_in_process(capsys, monkeypatch, "finetune", "--log", "bogus", "--out", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Unknown logger 'bogus': valid loggers: csv, jsonl, tensorboard." in result.stderr
    close = cli_in_process(capsys, monkeypatch, "compare", "--schemes", "e-at", "--log", "cvs", "--out", str(tmp_path / "cmp"))
    assert close.returncode == 2 and "did you mean 'csv'? Valid --log names: csv, jsonl, tensorboard." in close.stderr
    assert not out.exists() and not (tmp_path / "cmp").exists()  # refused before any compute


def test_tensorboard_absent_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the package were not installed
    with pytest.raises(UserError, match=r"needs the tensorboard package: pip install 'robustft\[tensorboard\]'"):
        Loggers.create(["tensorboard"])


@pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None, reason="the tensorboard package is not installed (pip install 'robustft[tensorboard]')"
)
def test_tensorboard_scalars_equal_metrics(base_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    finetune(out, log=["tensorboard"])
    records = read_jsonl(out / "metrics.jsonl")
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    batches = [r for r in records if r["kind"] == "batch"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    for tag, rows, key in (
        ("batch/loss", batches, "loss"),
        ("batch/lr", batches, "lr"),
        ("epoch/loss", epochs, "loss"),
        ("epoch/passes/attack_forward", epochs, ("passes", "attack_forward")),
    ):
        expected = [r[key[0]][key[1]] if isinstance(key, tuple) else r[key] for r in rows]
        scalars = events.Scalars(tag)
        assert [s.value for s in scalars] == pytest.approx(expected, rel=1e-6), tag
    assert [s.step for s in events.Scalars("batch/loss")] == [1, 2]
    assert [s.step for s in events.Scalars("epoch/loss")] == [1, 2]  # each epoch at its last batch
    assert events.Scalars("final/loss")[0].value == pytest.approx(epochs[-1]["loss"], rel=1e-6)
    config_text = events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    assert '"scheme": "e-at"' in config_text and '"epochs": 2' in config_text  # the configuration, as text


@pytest.mark.slow
def test_compare_hands_each_run_its_union_table(base_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    args = ("--epochs", "1", "--n-train", "32", "--attack-steps", "1", "--n-ex", "16", "--steps", "2", "--norms", "1,inf")
    result = cli_in_process(
        capsys, monkeypatch, "compare", "--schemes", "e-at", "--seeds", "1", "--out", str(out), "--log", "csv", "--quiet", *args
    )
    assert result.returncode == 0, result.stderr
    run = out / "e-at-seed0"
    assert_csv_is_metrics(run)
    summary = csv_rows(run / "summary.csv")[0]
    stored = json.loads((run / "compare-eval.json").read_text())["result"]
    assert summary["kind"] == "eval"
    assert float(summary["union"]) == stored["union"] and float(summary["robust.inf"]) == stored["robust"]["inf"]


# ------------------------------------------------------------------------ the example MLflow plugin

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


@pytest.fixture(scope="module")
def installed_mlflow_example(tmp_path_factory):
    return install_example("robustft-mlflow", tmp_path_factory)


def test_mlflow_example_is_a_logger_plugin(installed_mlflow_example):
    listed = run_cli("plugins", "--json", env=with_path(installed_mlflow_example))
    plugins = {p["name"]: p for p in json.loads(listed.stdout)["plugins"]}
    assert plugins["mlflow-logger"]["distribution"] == "robustft-mlflow"
    assert "register_loggers" in plugins["mlflow-logger"]["hooks"]


@pytest.mark.skipif(HAS_MLFLOW, reason="mlflow is installed: the run test below covers the plugin")
def test_mlflow_example_without_mlflow_is_one_sentence(installed_mlflow_example, tmp_path):
    result = run_cli("finetune", "--log", "mlflow", "--out", str(tmp_path / "run"), env=with_path(installed_mlflow_example))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "The mlflow logger needs the mlflow package: pip install mlflow-skinny." in result.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed (pip install mlflow-skinny)")
def test_mlflow_example_records_the_run(installed_mlflow_example, base_model, tmp_path):
    out = tmp_path / "run"
    env = {**with_path(installed_mlflow_example), "MLFLOW_TRACKING_URI": "", "MLFLOW_EXPERIMENT_NAME": ""}
    result = run_cli("finetune", *TINY_CLI, "--log", "mlflow", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    from mlflow.tracking import MlflowClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 reads its file store only with this
        client = MlflowClient(tracking_uri=(out / "mlruns").resolve().as_uri())
        run_id = (out / "mlflow-run-id").read_text().strip()
        run = client.get_run(run_id)
        losses = [m.value for m in sorted(client.get_metric_history(run_id, "batch.loss"), key=lambda m: m.step)]
    records = read_jsonl(out / "metrics.jsonl")
    assert losses == pytest.approx([r["loss"] for r in records if r["kind"] == "batch"])
    assert run.data.params["scheme"] == "e-at" and run.data.params["epochs"] == "2"
    assert run.data.metrics["final.loss"] == pytest.approx([r for r in records if r["kind"] == "epoch"][-1]["loss"])
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
