"""The training engine: schedule, modes, run folder, configuration, checkpoints."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from torch import nn

import robustft
from robustft.contracts import Attack, AttackFactory, AttackResult
from robustft.engine import EngineContext
from robustft.schedules import lr_at
from robustft.io import load_torch
from robustft.norms import Norm


def test_schedule_divides_by_ten_at_each_epoch_boundary():
    assert [lr_at("step", 0.05, t, 3, 1.0) for t in (0, 0.99, 1.0, 1.5, 2.0)] == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005])
    assert lr_at("step", 0.01, 0.34, 1, 1 / 3) == pytest.approx(0.001)  # ImageNet: every third of the epoch


def test_from_scratch_schedules():
    assert [lr_at("piecewise", 0.1, t, 100) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert [lr_at("cyclic", 0.2, t, 10) for t in (0, 2, 4, 7, 10)] == pytest.approx([0, 0.1, 0.2, 0.1, 0])


class ModeRecordingAttack(Attack):
    norm, eps = Norm.LINF, 0.1

    def __init__(self) -> None:
        self.modes: list[bool] = []

    def __call__(self, model, x, y):
        self.modes.append(model.training)
        return AttackResult(x_adv=x, loss=torch.zeros(len(x)), success=torch.zeros(len(x), dtype=torch.bool))


class Factory(AttackFactory):
    name = "recording"

    def __init__(self) -> None:
        self.attack = ModeRecordingAttack()

    def build(self, norm, eps, *, steps, purpose="train", **options):
        return self.attack


def test_model_is_in_eval_mode_while_attacked_and_back_in_train_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    factory = Factory()
    ctx = EngineContext(model, torch.device("cpu"), {Norm.LINF: 0.1}, factory, 10, 1, 1, torch.Generator(), 2)
    model.train()
    ctx.attack(Norm.LINF, torch.rand(3, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    assert factory.attack.modes == [False]
    assert model.training
    assert ctx.passes.attack_forward == 3 * 11 and ctx.passes.attack_backward == 3 * 10


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_folder_contents(tmp_path, base_model):
    result = robustft.finetune(epochs=2, n_train=128, batch_size=64, out=str(tmp_path / "run"))
    run = result.run_dir
    config = tomllib.loads((run / "config.toml").read_text())
    assert config["scheme"] == "e-at" and config["dataset"] == "digits" and config["norms"] == ["inf", "1"]
    assert config["eps"] == {"inf": "0.1", "1": "2"}
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["base_model"] == "digits-cnn-linf"
    metrics = read_metrics(run)
    batches = [m for m in metrics if m["kind"] == "batch"]
    epochs = [m for m in metrics if m["kind"] == "epoch"]
    assert [b["lr"] for b in batches] == pytest.approx([0.05, 0.05, 0.005, 0.005])
    assert {b["norm"] for b in batches} <= {"1", "inf"}
    assert len(epochs) == 2 and epochs[0]["passes"]["attack_forward"] == 128 * 11
    checkpoint = load_torch(run / "checkpoints" / "epoch-002.pt")
    assert {"model", "optimizer", "scheme", "rng", "epoch"} <= set(checkpoint)
    assert checkpoint["epoch"] == 2
    assert (run / "model.pt").is_file()
    assert (tmp_path / "runs" / "latest").read_text().strip() == str(run.resolve())


def test_config_file_with_command_line_override(tmp_path, base_model):
    config = tmp_path / "run.toml"
    config.write_text('scheme = "e-at-uniform"\nepochs = 5\nn_train = 64\nbatch_size = 64\n[eps]\ninf = "1/20"\n')
    result = robustft.finetune(config_file=config, epochs=1, out=str(tmp_path / "run"))
    saved = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert saved["scheme"] == "e-at-uniform" and saved["epochs"] == 1 and saved["eps"]["inf"] == "0.05"
    # the saved configuration repeats the run
    again = robustft.finetune(config_file=result.run_dir / "config.toml", out=str(tmp_path / "again"))
    first = load_torch(result.weights)["model"]
    second = load_torch(again.weights)["model"]
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_out_folder_must_be_empty(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("precious")
    with pytest.raises(robustft.UserError, match="not empty"):
        robustft.finetune(out=str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "file").read_text() == "precious"


def test_trades_outer_loss_matches_its_formula():
    from robustft.engine import FinetuneConfig
    from robustft.losses import outer_loss

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, x_adv, y = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2), torch.tensor([0, 1, 2, 0, 1])
    p, q = model(x).softmax(1), model(x_adv).softmax(1)
    expected = -p.log().gather(1, y[:, None]).squeeze(1) + 2.5 * (p * (p.log() - q.log())).sum(1)
    assert torch.allclose(outer_loss("trades", model, x, x_adv, y, beta=2.5), expected, atol=1e-6)
    assert torch.allclose(outer_loss("ce", model, x, x_adv, y), -q.log().gather(1, y[:, None]).squeeze(1), atol=1e-6)
    # zero KL when the adversarial point is the clean one: TRADES reduces to clean CE
    assert torch.allclose(outer_loss("trades", model, x, x, y), -p.log().gather(1, y[:, None]).squeeze(1), atol=1e-6)
    ctx = EngineContext(model, torch.device("cpu"), {}, Factory(), 1, 1, 1, torch.Generator(), 3,
                        config=FinetuneConfig(lr=0.1, outer_loss="trades", trades_beta=2.5))
    assert torch.allclose(ctx.adversarial_loss(model, x, x_adv, y), expected, atol=1e-6)
