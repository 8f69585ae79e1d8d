"""SAT, AVG and MAX: the defining reduction of each over the per-norm adversarial examples.

The scripted context's attacks return, for norm number ``k``, points whose first pixel carries the code
``(k + 1) / 10``; its outer loss per point reads that code back and returns a loss table entry the test
chose. So the value of each scheme's loss can be compared with the formula exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import cli_in_process
from torch import nn

from robustft.config import FinetuneConfig
from robustft.contracts import Attack, AttackFactory, AttackResult, TrainContext
from robustft.errors import BadInputError
from robustft.losses import outer_loss
from robustft.norms import Norm
from robustft.training import EngineContext
from robustft_plugins.schemes.multi_norm import AVG, MAX, SAT
from robustft_plugins.schemes.single_norm import L1AT, L2AT, LinfAT

NORMS = (Norm.LINF, Norm.L2, Norm.L1)
N = 6


class ScriptedContext(TrainContext):
    """Attacks and outer losses whose values the test controls; records every call."""

    def __init__(self, outer: torch.Tensor, attack_loss: torch.Tensor | None = None, error_rate: float = 0.0, seed: int = 0) -> None:
        self.rng = torch.Generator().manual_seed(seed)
        self.outer = outer  # (len(NORMS), N): outer loss of each norm's adversarial point
        self.attack_loss = attack_loss if attack_loss is not None else outer
        self.error_rate = error_rate
        self.calls: list[Norm] = []
        self.passes: list[tuple[int, int, int]] = []
        self.scale = nn.Parameter(torch.ones(()))  # makes the scripted loss differentiable
        self.epoch = self.batch = 0

    def attack(self, norm, x, y, model=None):
        self.calls.append(norm)
        k = NORMS.index(norm)
        x_adv = x.clone()
        x_adv[:, 0, 0, 0] = (k + 1) / 10
        n = x.shape[0]
        success = torch.arange(n) < round(self.error_rate * n)
        return AttackResult(x_adv=x_adv, loss=self.attack_loss[k, :n].clone(), success=success)

    def adversarial_loss(self, model, x, x_adv, y):
        k = (x_adv[:, 0, 0, 0] * 10).round().long() - 1
        return self.outer[k, torch.arange(x.shape[0])] * self.scale

    def count_passes(self, forward=0, backward=0, *, images=1):
        self.passes.append((forward, backward, images))

    def lr_at(self, position):
        return 0.1

    def make_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.1)


MODEL = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
X, Y = torch.rand(N, 1, 2, 2), torch.randint(0, 3, (N,))
OUTER = torch.tensor(
    [
        [0.5, 2.0, 0.1, 3.0, 1.0, 0.2],  # l-inf
        [1.5, 0.3, 0.2, 2.0, 4.0, 0.1],  # l2
        [2.5, 1.0, 0.9, 1.0, 0.5, 0.3],  # l1
    ]
)


def test_avg_is_the_mean_over_norms_of_the_outer_loss():
    ctx = ScriptedContext(OUTER)
    loss, logs = AVG(NORMS).loss(MODEL, X, Y, ctx)
    assert loss.item() == pytest.approx(OUTER.mean().item())
    assert ctx.calls == list(NORMS)  # one attack per norm per batch
    loss.backward()
    assert ctx.scale.grad.item() == pytest.approx(OUTER.mean().item())  # every norm's example contributes
    assert ctx.passes == [(2, 2, N)]  # two extra forward/backward passes beyond the engine's one


def test_max_takes_the_per_point_maximum():
    ctx = ScriptedContext(OUTER)
    scheme = MAX(NORMS)
    loss, logs = scheme.loss(MODEL, X, Y, ctx)
    worst = OUTER.max(dim=0).values
    assert loss.item() == pytest.approx(worst.mean().item())
    assert loss.item() > OUTER.mean(dim=1).max().item()  # more than the mean of any single norm
    # winners: points 1, 3 (l-inf); 4 (l2); 0, 2, 5 (l1)
    assert logs["win_inf"] == pytest.approx(2 / N) and logs["win_2"] == pytest.approx(1 / N) and logs["win_1"] == pytest.approx(3 / N)
    assert scheme.on_epoch_end(ctx)["wins"] == {"inf": pytest.approx(2 / N), "2": pytest.approx(1 / N), "1": pytest.approx(3 / N)}


def test_max_select_attack_picks_by_the_attack_loss_then_one_outer_pass():
    attack_loss = OUTER.flip(0)  # the attacks rank the norms the other way round
    ctx = ScriptedContext(OUTER, attack_loss=attack_loss)
    loss, _ = MAX(NORMS, select="attack").loss(MODEL, X, Y, ctx)
    chosen = attack_loss.argmax(dim=0)
    assert loss.item() == pytest.approx(OUTER[chosen, torch.arange(N)].mean().item())
    assert ctx.passes == []  # one outer-loss pass: what the engine counts already


def test_max_with_equal_losses_equals_avg():
    same = OUTER[:1].expand(3, N).clone()
    ctx = ScriptedContext(same)
    assert MAX(NORMS).loss(MODEL, X, Y, ctx)[0].item() == pytest.approx(AVG(NORMS).loss(MODEL, X, Y, ctx)[0].item())


def test_sat_draws_norms_uniformly():
    ctx = ScriptedContext(OUTER, seed=3)
    scheme = SAT(NORMS)
    draws = 3000
    for _ in range(draws):
        scheme.loss(MODEL, X, Y, ctx)
    assert len(ctx.calls) == draws  # one attack per batch: the cost of single-norm AT
    counts = torch.tensor([ctx.calls.count(n) for n in NORMS], dtype=torch.float64)
    expected = draws / 3
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001


def test_sat_loss_is_the_drawn_norms_outer_loss():
    ctx = ScriptedContext(OUTER)
    loss, logs = SAT(NORMS).loss(MODEL, X, Y, ctx)
    k = NORMS.index(Norm.parse(logs["norm"]))
    assert loss.item() == pytest.approx(OUTER[k].mean().item())


def test_sat_is_reproducible_from_the_context_rng():
    a, b = ScriptedContext(OUTER, seed=7), ScriptedContext(OUTER, seed=7)
    for ctx in (a, b):
        scheme = SAT(NORMS)
        for _ in range(30):
            scheme.loss(MODEL, X, Y, ctx)
    assert a.calls == b.calls


@pytest.mark.parametrize("cls", [SAT, AVG, MAX])
def test_robust_errors_are_logged_per_norm_and_reset_every_epoch(cls):
    ctx = ScriptedContext(OUTER, error_rate=0.5)
    scheme = cls(NORMS)
    scheme.on_epoch_start(ctx)
    for _ in range(30):
        _, logs = scheme.loss(MODEL, X, Y, ctx)
    assert {f"rerr_{n.value}" for n in set(ctx.calls)} <= set(logs)
    assert all(logs[f"rerr_{n.value}"] == pytest.approx(0.5) for n in set(ctx.calls))
    scheme.on_epoch_start(ctx)
    assert all(v is None for v in scheme.on_epoch_end(ctx)["rerr"].values())


@pytest.mark.parametrize("cls", [SAT, AVG, MAX])
def test_any_subset_of_norms(cls):
    ctx = ScriptedContext(OUTER)
    scheme = cls((Norm.LINF, Norm.L1))
    for _ in range(20):
        scheme.loss(MODEL, X, Y, ctx)
    assert set(ctx.calls) == {Norm.LINF, Norm.L1}


def test_state_round_trip():
    ctx = ScriptedContext(OUTER, error_rate=0.25)
    scheme = MAX(NORMS)
    for _ in range(4):
        scheme.loss(MODEL, X, Y, ctx)
    restored = MAX(NORMS)
    restored.load_state_dict(scheme.state_dict())
    assert restored.on_epoch_end(ctx) == scheme.on_epoch_end(ctx)


def test_bad_select_option():
    with pytest.raises(BadInputError, match="outer, attack"):
        MAX(NORMS, select="mean")


# -------------------------------------------------------------------- with the engine's real context


class ShiftAttack(Attack):
    """A deterministic 'attack': moves every pixel by eps (l-inf), or by a norm-specific amount, inside the box."""

    def __init__(self, norm: Norm, eps: float) -> None:
        self.norm, self.eps = norm, eps

    def perturb(self, model, x, y):
        shift = {Norm.LINF: 0.1, Norm.L2: -0.05, Norm.L1: 0.2}[self.norm]
        x_adv = (x + shift).clamp(0, 1)
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model(x_adv), y, reduction="none")
        return AttackResult(x_adv=x_adv, loss=loss, success=torch.zeros(x.shape[0], dtype=torch.bool), forward_passes=1, backward_passes=0)


class ShiftFactory(AttackFactory):
    name = "shift"

    def build(self, norm, eps, *, steps, purpose="train", **options):
        return ShiftAttack(norm, eps)


def engine_context(outer: str) -> EngineContext:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    return EngineContext(
        model=model,
        device=torch.device("cpu"),
        eps={n: 0.1 for n in NORMS},
        attack_factory=ShiftFactory(),
        attack_steps=3,
        epochs=1,
        batches_per_epoch=1,
        rng=torch.Generator().manual_seed(0),
        num_classes=3,
        config=FinetuneConfig(lr=0.05, outer_loss=outer),
    )


@pytest.mark.parametrize("outer", ["ce", "trades"])
def test_avg_and_max_use_the_runs_outer_loss(outer):
    ctx = engine_context(outer)
    model = ctx.model
    per_norm = torch.stack([outer_loss(outer, model, X, ShiftAttack(n, 0.1)(model, X, Y).x_adv, Y, ctx.config.trades_beta) for n in NORMS])
    assert AVG(NORMS).loss(model, X, Y, ctx)[0].item() == pytest.approx(per_norm.mean().item(), rel=1e-6)
    assert MAX(NORMS).loss(model, X, Y, ctx)[0].item() == pytest.approx(per_norm.max(0).values.mean().item(), rel=1e-6)


def test_fixed_norm_schemes_attack_their_norm_only():
    for cls, norm in ((LinfAT, Norm.LINF), (L2AT, Norm.L2), (L1AT, Norm.L1)):
        ctx = ScriptedContext(OUTER)
        loss, logs = cls(cls.default_norms).loss(MODEL, X, Y, ctx)
        assert ctx.calls == [norm] and loss.item() == pytest.approx(OUTER[NORMS.index(norm)].mean().item())
    with pytest.raises(BadInputError, match="l1-at"):
        L1AT((Norm.LINF,))


# ---------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("scheme", ["sat", "avg", "max"])
def test_cli_runs_each_scheme(tmp_path: Path, base_model, scheme, capsys, monkeypatch):
    out = tmp_path / "run"
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--scheme",
        scheme,
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
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    epoch = records[-1]
    assert epoch["kind"] == "epoch" and epoch["images"] == 128
    attacks_per_point = epoch["passes"]["attack_backward"] / epoch["images"]
    assert attacks_per_point == {"sat": 3, "avg": 9, "max": 9}[scheme]  # 3 steps per attack, one attack per norm
    if scheme == "max":
        assert sum(epoch["wins"].values()) == pytest.approx(1.0)
    assert any(k.startswith("rerr_") for k in records[0])
