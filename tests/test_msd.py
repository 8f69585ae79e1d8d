"""MSD (Maini et al. 2020): every candidate and iterate is feasible, each step is the per-point best candidate,
the best iterate is returned, and the attack costs one gradient per step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli_in_process
from torch import nn
from torch.nn import functional as F

from robustft.config import FinetuneConfig
from robustft.contracts import AttackFactory
from robustft.errors import BadInputError
from robustft.lp import check_in_ball_and_box, project
from robustft.norms import Norm
from robustft.training import EngineContext
from robustft_plugins.schemes.msd import MSD, MultiSteepestDescent

NORMS = (Norm.LINF, Norm.L2, Norm.L1)
EPS = {Norm.LINF: 0.1, Norm.L2: 0.5, Norm.L1: 2.0}


def toy_model(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.Softplus(), nn.Flatten(), nn.Linear(64, 5)]
    return nn.Sequential(*layers)


def batch(seed: int = 0, n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 4, 4, generator=g)
    x[x < 0.15] = 0.0  # many coordinates on the box edges, where projections and the l1 edge rule matter
    x[x > 0.85] = 1.0
    return x, torch.randint(0, 5, (n,), generator=g)


class RecordingMSD(MultiSteepestDescent):
    """Records every step: the candidates, their losses and the chosen iterate."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.trace: list[tuple[list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def choose(self, candidates, losses):
        delta, loss, winner = MultiSteepestDescent.choose(candidates, losses)
        self.trace.append(([c.clone() for c in candidates], losses.clone(), delta.clone(), winner.clone()))
        return delta, loss, winner


@pytest.mark.parametrize("seed", range(4))
def test_every_candidate_lies_in_its_ball_and_the_box(seed):
    x, _ = batch(seed)
    g = torch.Generator().manual_seed(100 + seed)
    attack = MultiSteepestDescent(EPS, steps=2)  # few steps: large steps that must be projected
    # start from feasible points of each ball (the iterates MSD produces), on and inside the boundary
    for start_norm in NORMS:
        raw = torch.randn(x.shape, generator=g) * 3
        delta = project(raw, x, start_norm, EPS[start_norm])
        grad = torch.randn(x.shape, generator=g)
        for norm, cand in zip(attack.norms, attack.candidates(x, delta, grad)):
            assert check_in_ball_and_box(x + cand, x, norm, EPS[norm]).all(), (start_norm, norm)


def test_iterates_stay_in_the_union_and_the_box_and_each_step_is_the_best_candidate():
    model = toy_model().eval()
    x, y = batch(1)
    attack = RecordingMSD(EPS, steps=6)
    result = attack(model, x, y)
    assert len(attack.trace) == 6
    for candidates, losses, delta, winner in attack.trace:
        # the candidates' losses really are the CE at the candidates
        recomputed = torch.stack([F.cross_entropy(model(x + c), y, reduction="none") for c in candidates])
        assert torch.allclose(losses, recomputed, atol=1e-6)
        # the step is, per point, the candidate with the highest loss
        assert torch.equal(winner, losses.argmax(dim=0))
        for i in range(x.shape[0]):
            assert torch.equal(delta[i], candidates[int(winner[i])][i])
            assert losses[int(winner[i]), i] >= losses[:, i].max() - 1e-7
        # the iterate lies in the box and in the ball of the norm that produced it
        for k, norm in enumerate(NORMS):
            mine = winner == k
            if mine.any():
                assert check_in_ball_and_box(x[mine] + delta[mine], x[mine], norm, EPS[norm]).all()
    in_some_ball = torch.zeros(x.shape[0], dtype=torch.bool)
    for norm in NORMS:
        in_some_ball |= check_in_ball_and_box(result.x_adv, x, norm, EPS[norm])
    assert in_some_ball.all()


def test_returns_the_best_iterate():
    model = toy_model(2).eval()
    x, y = batch(2)
    attack = RecordingMSD(EPS, steps=8)
    result = attack(model, x, y)
    start = F.cross_entropy(model(x), y, reduction="none")
    seen = torch.stack([start] + [losses.max(dim=0).values for _, losses, _, _ in attack.trace])
    assert torch.allclose(result.loss, seen.max(dim=0).values, atol=1e-6)
    assert torch.allclose(F.cross_entropy(model(result.x_adv), y, reduction="none"), result.loss, atol=1e-5)
    assert (result.loss >= start - 1e-7).all()
    assert (result.loss > start).float().mean() > 0.5  # the attack does raise the loss


def test_step_sizes_scale_with_radius_and_steps():
    attack = MultiSteepestDescent(EPS, steps=10)
    assert attack.step_size[Norm.LINF] == pytest.approx(EPS[Norm.LINF] / 4)  # E-AT's PGD step at 10 steps
    assert attack.step_size[Norm.L2] == pytest.approx(EPS[Norm.L2] / 3)
    assert attack.step_size[Norm.L1] == pytest.approx(EPS[Norm.L1] / 4)
    assert MultiSteepestDescent(EPS, steps=5).step_size[Norm.LINF] == pytest.approx(2 * attack.step_size[Norm.LINF])


def test_l1_step_skips_coordinates_at_the_box_edge():
    x = torch.full((1, 1, 4, 4), 0.5)
    x[0, 0, 0, :] = 1.0  # top row at the upper edge
    grad = torch.full_like(x, 0.01)
    grad[0, 0, 0, :] = 10.0  # the largest gradients point out of the box there
    attack = MultiSteepestDescent({Norm.L1: 1.0}, steps=1, l1_topk=0.25)
    (cand,) = attack.candidates(x, torch.zeros_like(x), grad)
    assert (cand[0, 0, 0, :] == 0).all()  # not wasted on the blocked row
    assert cand.abs().sum() == pytest.approx(1.0, rel=1e-5)  # the whole step went elsewhere


def test_with_one_norm_every_step_is_that_norm():
    model = toy_model().eval()
    x, y = batch(3)
    result = MultiSteepestDescent({Norm.L2: 0.5}, steps=4)(model, x, y)
    assert result.steps_taken.tolist() == [4 * x.shape[0]]
    assert check_in_ball_and_box(result.x_adv, x, Norm.L2, 0.5).all()


class NoAttackFactory(AttackFactory):
    name = "none"

    def build(self, norm, eps, *, steps, purpose="train", **options):
        raise AssertionError("MSD runs its own attack, never the run's training attack")


def test_scheme_attacks_in_eval_mode_restores_train_mode_and_counts_passes():
    model = toy_model(batchnorm=True).train()
    modes: list[bool] = []
    model[1].register_forward_hook(lambda m, i, o: modes.append(m.training))
    stats = model[1].running_mean.clone()
    steps, (x, y) = 4, batch(4)
    ctx = EngineContext(
        model=model,
        device=torch.device("cpu"),
        eps=EPS,
        attack_factory=NoAttackFactory(),
        attack_steps=steps,
        epochs=1,
        batches_per_epoch=1,
        rng=torch.Generator().manual_seed(0),
        num_classes=5,
        config=FinetuneConfig(lr=0.05),
    )
    scheme = MSD(NORMS)
    result = scheme.attack(model, x, y, ctx)
    assert modes and not any(modes)  # every forward pass of the attack ran in eval mode
    assert model.training
    assert torch.equal(model[1].running_mean, stats)  # BatchNorm statistics frozen while attacking
    assert all(p.grad is None for p in model.parameters())
    n = x.shape[0]
    assert ctx.passes.attack_backward == steps * n  # one gradient per step
    assert ctx.passes.attack_forward == steps * (1 + len(NORMS)) * n  # plus one forward pass per candidate
    assert result.steps_taken.sum() == steps * n
    loss, logs = scheme.loss(model, x, y, ctx)
    assert loss.requires_grad and sum(logs[f"step_{m.value}"] for m in NORMS) == pytest.approx(1.0)
    assert 0.0 <= logs["rerr_union"] <= 1.0


def test_bad_options():
    with pytest.raises(BadInputError, match="travel-inf"):
        MSD(NORMS, **{"travel-inf": "-1"})
    with pytest.raises(BadInputError, match="l1-topk"):
        MSD(NORMS, **{"l1-topk": "2"})
    assert MSD(NORMS, **{"l1-topk": "0.005"}).options.l1_topk == pytest.approx(0.005)


def test_cli_runs_msd(tmp_path: Path, base_model, capsys, monkeypatch):
    out = tmp_path / "run"
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--scheme",
        "msd",
        "--epochs",
        "1",
        "--n-train",
        "128",
        "--attack-steps",
        "3",
        "--quiet",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch["passes"]["attack_backward"] == 3 * 128
    assert epoch["passes"]["attack_forward"] == 3 * 4 * 128
    assert sum(epoch["steps_taken"].values()) == pytest.approx(1.0)
    # its config.toml records the default family per norm, which a resume must not take for a user's --attack
    from robustft.config import build_config
    from robustft.training.preflight import attack_settings_given

    assert attack_settings_given(build_config(out / "config.toml"), NORMS) == []


@pytest.mark.parametrize(
    "flags,named",
    [
        (["--attack", "inf=fgsm-rs"], "--attack would"),
        (["--attack-option", "1:topk=0.1"], "--attack-option would"),
        (["--attack", "fgsm-rs", "--attack-option", "alpha=1"], "--attack and --attack-option"),
    ],
)
def test_msd_refuses_attack_settings_it_would_not_use(tmp_path: Path, capsys, monkeypatch, flags, named):
    result = cli_in_process(capsys, monkeypatch, "finetune", "--scheme", "msd", *flags, "--out", str(tmp_path / "run"), "--quiet")
    assert result.returncode == 2
    assert f"Scheme 'msd' runs an attack of its own, so {named}" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


def test_a_resumed_run_that_recorded_attack_settings_continues_with_a_warning(caplog):
    """Runs made before MSD refused --attack recorded it; resuming cannot leave it out, so it only warns."""
    from robustft.config import build_config
    from robustft.training.preflight import refuse_attack_settings

    config = build_config(scheme="msd", attack={"inf": "fgsm-rs"})
    with pytest.raises(BadInputError, match="runs an attack of its own"):
        refuse_attack_settings(config, MSD)
    with caplog.at_level("WARNING", logger="robustft"):
        refuse_attack_settings(config, MSD, resumed=True)
    assert "the settings --attack that the run recorded are not used" in caplog.text
