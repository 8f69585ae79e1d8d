"""`robustft export`: a finished, evaluated run as a Hugging Face model folder that `eval --model file:DIR` loads back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import cli_in_process

from robustft.errors import UserError
from robustft.export import EVAL_FILES, export_run, read_stored_eval, reproduce_command, to_yaml

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_EVAL = {"norms": "1,2,inf", "n_ex": 40, "steps": 3}


@pytest.fixture(scope="module")
def evaluated_run(base_model, tmp_path_factory):
    """A one-epoch E-AT run on digits with its stored evaluation (``eval --run`` writes eval.json)."""
    from robustft.evaluation import evaluate
    from robustft.training import finetune

    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROBUSTFT_RUNS_DIR", str(root / "runs"))
        run = finetune(epochs=1, n_train=64, attack_steps=1, out=str(root / "run"), device="cpu").run_dir
        evaluate(run=run, device="cpu", **TINY_EVAL)
    assert (run / EVAL_FILES[0]).is_file()
    return run


@pytest.fixture
def run_copy(evaluated_run, tmp_path) -> Path:
    """A copy of the run that a test may damage."""
    return Path(shutil.copytree(evaluated_run, tmp_path / "run"))


def front_matter(card: str) -> dict:
    yaml = pytest.importorskip("yaml")
    head, sep, _ = card.partition("\n---\n")
    assert card.startswith("---\n") and sep, "the card opens with YAML front matter"
    return yaml.safe_load(head[len("---\n") :])


@pytest.mark.slow
def test_export_then_eval_gives_the_runs_numbers(evaluated_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "hf"
    result = cli_in_process(capsys, monkeypatch, "export", str(evaluated_run), "--out", str(out), "--name", "digits-eat")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert "model.safetensors, config.json, README.md" in result.stdout

    stored = json.loads((evaluated_run / "eval.json").read_text())
    tuned = next(r for r in stored["results"] if r.get("run"))
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == "digits-cnn" and config["num_classes"] == 10 and config["input_size"] == [1, 8, 8]
    assert config["dataset"] == "digits" and config["base_model"] == "digits-cnn-linf" and config["scheme"] == "e-at"
    assert "Croce & Hein" in config["scheme_paper"] and "ICML 2022" in config["scheme_paper"]
    assert config["threat_model"]["eps"] == tuned["eps"]
    assert config["evaluation"]["points"] == 40 and config["evaluation"]["steps"] == 3
    assert "out" not in config["finetune"]  # a path on the training machine is not published

    # The weights are the run's, tensor for tensor.
    from safetensors.torch import load_file

    run_state = torch.load(evaluated_run / "model.pt", weights_only=True)["model"]
    exported = load_file(str(out / "model.safetensors"))
    assert exported.keys() == run_state.keys()
    assert all(torch.equal(exported[k], run_state[k]) for k in run_state)

    # The card's model-index states the stored numbers: clean, each norm, union.
    meta = front_matter((out / "README.md").read_text())
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert meta["model-index"][0]["name"] == "digits-eat"
    expected = [tuned["clean"], tuned["robust"]["inf"], tuned["robust"]["2"], tuned["robust"]["1"], tuned["union"]]
    assert [m["value"] for m in metrics] == [round(100 * v, 2) for v in expected]
    assert [m["args"]["norm"] for m in metrics[1:4]] == ["inf", "2", "1"]
    assert metrics[-1]["args"]["norms"] == ["inf", "2", "1"] and metrics[-1]["args"]["points"] == 40
    card = (out / "README.md").read_text()
    assert "@inproceedings{croce2022eat" in card and "digits-cnn-linf" in card

    # Evaluated back through the file zoo, with the card's own command, the numbers are the run's.
    command = reproduce_command(config, str(out)).split()[2:]
    again = cli_in_process(capsys, monkeypatch, "eval", *command, "--json", "--quiet", "--device", "cpu")
    assert again.returncode == 0, again.stderr
    row = json.loads(again.stdout)["results"][0]
    assert (row["clean"], row["robust"], row["union"], row["n"]) == (tuned["clean"], tuned["robust"], tuned["union"], tuned["n"])
    assert not (out / "eval.json").exists()  # evaluating a folder leaves it as exported


def test_a_non_empty_out_needs_force_and_keeps_other_files(evaluated_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = cli_in_process(capsys, monkeypatch, "export", str(evaluated_run), "--out", str(out))
    assert refused.returncode == 1 and "is not empty" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr and sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    forced = cli_in_process(capsys, monkeypatch, "export", str(evaluated_run), "--out", str(out), "--force", "--json")
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["files"] == ["model.safetensors", "config.json", "README.md"]
    assert (out / "notes.txt").read_text() == "mine"


def test_unfinished_run_is_one_sentence(run_copy, tmp_path, capsys, monkeypatch):
    info = json.loads((run_copy / "run.json").read_text())
    (run_copy / "run.json").write_text(json.dumps({**info, "status": "interrupted"}))
    result = cli_in_process(capsys, monkeypatch, "export", str(run_copy), "--out", str(tmp_path / "hf"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "is not finished (status 'interrupted')" in result.stderr and "--resume" in result.stderr
    assert not (tmp_path / "hf").exists()


def test_weights_failing_their_checksum_are_refused(run_copy, tmp_path, capsys, monkeypatch):
    weights = run_copy / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = cli_in_process(capsys, monkeypatch, "export", str(run_copy), "--out", str(tmp_path / "hf"))
    assert result.returncode == 1 and "is corrupted: its SHA-256 does not match" in result.stderr
    assert not (tmp_path / "hf").exists()
    (run_copy / "model.pt.sha256").unlink()
    with pytest.raises(UserError, match="has no checksum file"):
        export_run(run_copy, tmp_path / "hf")


def test_a_run_without_a_stored_evaluation_says_what_to_run(run_copy, tmp_path, capsys, monkeypatch):
    (run_copy / "eval.json").unlink()
    result = cli_in_process(capsys, monkeypatch, "export", str(run_copy), "--out", str(tmp_path / "hf"))
    assert result.returncode == 1
    assert f"run 'robustft eval --run {run_copy}' first" in result.stderr


def test_an_evaluation_of_other_weights_is_refused(run_copy, tmp_path):
    path = run_copy / "eval.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "weights_sha256": "0" * 64}))
    with pytest.raises(UserError, match="is of other weights than the run's model.pt"):
        export_run(run_copy, tmp_path / "hf")


def test_the_stored_evaluation_formats(run_copy):
    stored = read_stored_eval(run_copy)
    assert stored.base is not None and stored.base["name"] == "digits-cnn-linf" and stored.result.get("run")
    assert stored.settings["steps"] == 3
    # What robustft compare stores per run is read too.
    row = dict(stored.result)
    (run_copy / "eval.json").unlink()
    (run_copy / "compare-eval.json").write_text(json.dumps({"settings": {"steps": 7}, "result": row}))
    again = read_stored_eval(run_copy)
    assert again.result == row and again.base is None and again.settings == {"steps": 7}
    (run_copy / "compare-eval.json").write_text(json.dumps({"result": {**row, "robust": {}}}))
    with pytest.raises(UserError, match="lacks a clean, per-norm and union accuracy"):
        read_stored_eval(run_copy)
    (run_copy / "compare-eval.json").write_text("{not json")
    with pytest.raises(UserError, match="is damaged"):
        read_stored_eval(run_copy)


def test_file_folder_errors(evaluated_run, tmp_path, capsys, monkeypatch):
    empty = tmp_path / "not-exported"
    empty.mkdir()
    result = cli_in_process(capsys, monkeypatch, "eval", "--model", f"file:{empty}", "--n-ex", "4", "--steps", "1")
    assert result.returncode == 1 and "is not an exported robustft model (it has no config.json)" in result.stderr
    out = tmp_path / "hf"
    export_run(evaluated_run, out)
    with_arch = cli_in_process(capsys, monkeypatch, "eval", "--model", f"file:{out}", "--arch", "digits-cnn", "--n-ex", "4")
    assert with_arch.returncode == 2 and "takes no --arch" in with_arch.stderr
    wrong_data = cli_in_process(capsys, monkeypatch, "eval", "--model", f"file:{out}", "--dataset", "cifar10", "--n-ex", "4")
    assert wrong_data.returncode == 2 and "classifies 10 classes of 1-channel images" in wrong_data.stderr


def test_the_shipped_cifar_model_rebuilds_from_its_description():
    """The builtin zoo's CIFAR-10 model maps to preact-resnet18 at width 16: its weights load key for key."""
    from robustft.export import describe_architecture
    from robustft.pluginmanager import registries
    from robustft_plugins.zoos.builtin import load_shipped
    from robustft_plugins.zoos.file_zoo import build_exported, load_weights

    data = registries().datasets.get("cifar10")
    arch, options, norm = describe_architecture({"zoo": "builtin", "model_name": "cifar10-preact-w16-linf"}, data)
    net = build_exported(
        {"architecture": arch, "architecture_options": options, "normalization": norm, "num_classes": 10, "input_size": [3, 32, 32]}
    )
    shipped = load_shipped("cifar10-preact-w16-linf").eval()
    load_weights(net, shipped.state_dict(), "shipped", "the description")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(net.eval()(x), shipped(x))


def test_timm_networks_rebuild_with_their_normalisation():
    pytest.importorskip("timm")
    from robustft.export import describe_architecture
    from robustft.models import resolve_model
    from robustft.pluginmanager import registries
    from robustft_plugins.zoos.file_zoo import build_exported, load_weights

    reg = registries()
    data = reg.datasets.get("digits")
    zoo, info = resolve_model("timm:test_byobnet", reg)
    original = zoo.load(info, device=torch.device("cpu"), dataset=data, download=False).eval()
    arch, options, norm = describe_architecture({"zoo": "timm", "model_name": "test_byobnet"}, data)
    net = build_exported(
        {"architecture": arch, "architecture_options": options, "normalization": norm, "num_classes": 10, "input_size": [1, 8, 8]}
    )
    load_weights(net, original.state_dict(), "timm", "the description")
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(net.eval()(x), original(x))


def test_unsupported_zoo_is_one_sentence():
    from robustft.export import describe_architecture

    with pytest.raises(UserError, match="comes from the 'robustbench' zoo"):
        describe_architecture({"zoo": "robustbench", "model_name": "Carmon2019Unlabeled", "base_model": "Carmon2019Unlabeled"}, None)


def test_yaml_strings_stay_strings():
    yaml = pytest.importorskip("yaml")
    data = {"a": ["yes", "1", "x: y", 'q"uote', "- item", ""], "2": {"n": 1.5, "b": True, "none": None, "empty": []}}
    assert yaml.safe_load(to_yaml(data)) == data


def test_export_asks_the_zoo_and_refuses_a_description_the_weights_do_not_fit(evaluated_run, tmp_path, monkeypatch):
    """The architecture comes from the base model's zoo (ModelZoo.describe_architecture); a folder that would not
    load back is refused in one sentence and nothing is left in --out."""
    from robustft.registry import PluginFault
    from robustft_plugins.zoos.builtin import BuiltinZoo

    asked = []

    def wrong(self, info, *, dataset, **options):
        asked.append(info.name)
        return {"architecture": "preact-resnet18", "architecture_options": {"width": 16}, "normalization": None}

    monkeypatch.setattr(BuiltinZoo, "describe_architecture", wrong)
    out = tmp_path / "hf"
    with pytest.raises(UserError, match=r"cannot be exported: the folder would not load back \(The checkpoint .*hf"):
        export_run(evaluated_run, out)
    assert asked == ["digits-cnn-linf"] and not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="would not load back"):
        export_run(evaluated_run, out, force=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # no staging folder, no exported file left behind

    monkeypatch.setattr(BuiltinZoo, "describe_architecture", lambda self, info, **kw: "digits-cnn")
    with pytest.raises(PluginFault, match=r"describe_architecture\(\) returned str"):
        export_run(evaluated_run, tmp_path / "other")
    monkeypatch.setattr(BuiltinZoo, "describe_architecture", lambda self, info, **kw: None)
    with pytest.raises(UserError, match="comes from the 'builtin' zoo, whose networks export cannot rebuild"):
        export_run(evaluated_run, tmp_path / "other")
