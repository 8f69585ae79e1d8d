"""The training engine: schedule, modes, run folder, configuration, checkpoints."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from torch import nn

import robustft
from robustft.contracts import Attack, AttackFactory, AttackResult
from robustft.io import load_torch
from robustft.norms import Norm
from robustft.schedules import lr_at
from robustft.training import EngineContext


def test_schedule_divides_by_ten_at_each_epoch_boundary():
    assert [lr_at("step", 0.05, t, 3, 1.0) for t in (0, 0.99, 1.0, 1.5, 2.0)] == pytest.approx([0.05, 0.05, 0.005, 0.005, 0.0005])
    assert lr_at("step", 0.01, 0.34, 1, 1 / 3) == pytest.approx(0.001)  # ImageNet: every third of the epoch


def test_step_schedule_defaults_to_thirds_of_the_run():
    # 15 epochs (E-AT Table 11, RAMP Table 7): lr, lr/10, lr/100 for five epochs each
    assert [lr_at("step", 0.05, e, 15) for e in range(15)] == pytest.approx([0.05] * 5 + [0.005] * 5 + [0.0005] * 5)
    # 1 epoch (ImageNet): every third of the epoch
    assert [lr_at("step", 0.01, t, 1) for t in (0, 0.33, 0.34, 0.4, 0.66, 0.67, 0.99)] == pytest.approx(
        [0.01, 0.01, 0.001, 0.001, 0.001, 0.0001, 0.0001]
    )
    assert [lr_at("step", 0.05, e, 3) for e in (0, 1, 2)] == pytest.approx([0.05, 0.005, 0.0005])  # unchanged


def test_runs_of_15_and_1_epochs_follow_the_thirds(tmp_path, base_model):
    long = robustft.finetune(scheme="clean", epochs=15, n_train=16, batch_size=16, out=str(tmp_path / "long"))
    first_of_epoch = [m["lr"] for m in read_metrics(long.run_dir) if m["kind"] == "batch" and m["batch"] == 1]
    assert first_of_epoch == pytest.approx([0.05] * 5 + [0.005] * 5 + [0.0005] * 5)
    short = robustft.finetune(scheme="clean", epochs=1, n_train=80, batch_size=8, out=str(tmp_path / "short"))
    by_position = {(m["batch"] - 1) / 10: m["lr"] for m in read_metrics(short.run_dir) if m["kind"] == "batch"}
    assert by_position[0.0] == pytest.approx(0.05) and by_position[0.4] == pytest.approx(0.005)
    assert by_position[0.9] == pytest.approx(0.0005)
    explicit = robustft.finetune(scheme="clean", epochs=2, lr_step=1.0, n_train=16, batch_size=16, out=str(tmp_path / "step"))
    assert [m["lr"] for m in read_metrics(explicit.run_dir) if m["kind"] == "batch"] == pytest.approx([0.05, 0.005])


def test_from_scratch_schedules():
    assert [lr_at("piecewise", 0.1, t, 100) for t in (0, 49, 50, 74, 75, 99)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert [lr_at("cyclic", 0.2, t, 10) for t in (0, 2, 4, 7, 10)] == pytest.approx([0, 0.1, 0.2, 0.1, 0])


class ModeRecordingAttack(Attack):
    norm, eps = Norm.LINF, 0.1

    def __init__(self) -> None:
        self.modes: list[bool] = []

        self.autocast: list[bool] = []

    def perturb(self, model, x, y):
        self.modes.append(model.training)
        self.autocast.append(torch.is_autocast_enabled(x.device.type))
        # passes unlike a 10-step attack's 11 and 10: the context books what the result reports
        return AttackResult(
            x_adv=x, loss=torch.zeros(len(x)), success=torch.zeros(len(x), dtype=torch.bool), forward_passes=7, backward_passes=5
        )


class Factory(AttackFactory):
    name = "recording"

    def __init__(self) -> None:
        self.attack = ModeRecordingAttack()

    def build(self, norm, eps, *, steps, purpose="train", **options):
        return self.attack


@pytest.mark.parametrize("precision,expected", [("fp32", False), ("amp", True)])
def test_attacks_run_without_the_runs_autocast_unless_asked(precision, expected):
    """Both papers' code attacks in fp32; the update keeps the run's bf16/fp16 autocast."""
    from robustft.config import FinetuneConfig

    factory = Factory()
    config = FinetuneConfig(lr=0.05, amp="bf16", attack_precision=precision)
    ctx = EngineContext(nn.Linear(4, 2), torch.device("cpu"), {Norm.LINF: 0.1}, factory, 10, 1, 1, torch.Generator(), 2, config=config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ctx.attack(Norm.LINF, torch.rand(3, 4), torch.zeros(3, dtype=torch.long))
        assert torch.is_autocast_enabled("cpu")  # restored for the update
    assert factory.attack.autocast == [expected]


def test_msd_attacks_in_fp32_too():
    from robustft.config import FinetuneConfig
    from robustft_plugins.schemes.msd import MSD

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.is_autocast_enabled("cpu")))
    config = FinetuneConfig(lr=0.05, amp="bf16")
    eps = {Norm.LINF: 0.1, Norm.L2: 0.3, Norm.L1: 1.0}
    ctx = EngineContext(model, torch.device("cpu"), eps, Factory(), 2, 1, 1, torch.Generator(), 3, config=config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        MSD((Norm.LINF, Norm.L2, Norm.L1)).loss(model, torch.rand(5, 4), torch.zeros(5, dtype=torch.long), ctx)
    assert seen[:-1] and not any(seen[:-1])  # every attack pass in fp32
    assert seen[-1]  # the update's forward pass under the run's autocast


def test_model_is_in_eval_mode_while_attacked_and_back_in_train_mode():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.BatchNorm1d(2))
    factory = Factory()
    ctx = EngineContext(model, torch.device("cpu"), {Norm.LINF: 0.1}, factory, 10, 1, 1, torch.Generator(), 2)
    model.train()
    ctx.attack(Norm.LINF, torch.rand(3, 1, 2, 2), torch.zeros(3, dtype=torch.long))
    assert factory.attack.modes == [False]
    assert model.training
    assert ctx.passes.attack_forward == 3 * 7 and ctx.passes.attack_backward == 3 * 5


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
    # thirds of 2 epochs: positions 0, 0.5, 1.0, 1.5 lie in thirds 0, 0, 1, 2
    assert [b["lr"] for b in batches] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
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
    from robustft.config import FinetuneConfig
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
    ctx = EngineContext(
        model,
        torch.device("cpu"),
        {},
        Factory(),
        1,
        1,
        1,
        torch.Generator(),
        3,
        config=FinetuneConfig(lr=0.1, outer_loss="trades", trades_beta=2.5),
    )
    assert torch.allclose(ctx.adversarial_loss(model, x, x_adv, y), expected, atol=1e-6)
