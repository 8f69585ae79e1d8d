"""RAMP's defining behaviour: the pairing loss (Eq. 1, 10, 11), MAX over the pair (Eq. 2), gradient
projection (Eq. 4-7), the key-pair heuristic, and a run from the CLI."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import cli_in_process
from torch import nn
from torch.nn import functional as F

from robustft.contracts import AttackResult, TrainContext
from robustft.errors import BadInputError
from robustft.losses import outer_loss
from robustft.norms import Norm
from robustft_plugins.schemes.ramp import RAMP, gradient_projection, max_over_pair, pairing_loss, update_cosine

K = 4  # classes


class Logits(nn.Module):
    """A "model" whose logits are its input: the test writes the logits as the adversarial points."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class ScriptedContext(TrainContext):
    """Attacks return the adversarial points (here: logits) the test chose; the robust error per norm is scripted."""

    def __init__(
        self, adversarial: dict[Norm, torch.Tensor] | None = None, error_rate: dict[Norm, float] | None = None, outer: str = "ce"
    ) -> None:
        self.adversarial = adversarial or {}
        self.error_rate = error_rate or {}
        self.outer = outer
        self.calls: list[Norm] = []
        self.passes = {"forward": 0, "backward": 0}
        self.device = torch.device("cpu")
        self.epoch = self.batch = 0
        self.epochs = 1
        self.batches_per_epoch = 1
        self.rng = torch.Generator().manual_seed(0)
        self.model: nn.Module = Logits()
        self.lrs: list[float] = []

    def attack(self, norm, x, y, model=None):
        self.calls.append(norm)
        n = x.shape[0]
        x_adv = self.adversarial.get(norm, x)
        success = torch.arange(n) < round(self.error_rate.get(norm, 0.0) * n)
        return AttackResult(x_adv=x_adv, loss=torch.zeros(n), success=success)

    def count_passes(self, forward=0, backward=0, *, images=1):
        self.passes["forward"] += forward * images
        self.passes["backward"] += backward * images

    def adversarial_loss(self, model, x, x_adv, y):
        return outer_loss(self.outer, model, x, x_adv, y)

    def lr_at(self, position):
        lr = 0.1 * 0.5**position
        self.lrs.append(lr)
        return lr

    def make_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row, straight from the definition."""
    return (p * (p / q).log()).sum(dim=1)


# ----------------------------------------------------------------------------------- pairing loss

LOGITS_Q = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0], [1.0, 0.0, 2.0, 0.0]])
LOGITS_R = torch.tensor([[0.5, 1.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
Y = torch.tensor([0, 1, 2, 3])  # q-adversarial predictions 0, 1, 3, 2: points 0 and 1 qualify


def test_kl_pairing_is_kl_of_q_against_r_on_qualifying_points():
    mask = LOGITS_Q.argmax(1) == Y
    assert mask.tolist() == [True, True, False, False]
    p_q, p_r = LOGITS_Q.softmax(1), LOGITS_R.softmax(1)
    value = pairing_loss("kl", LOGITS_Q, LOGITS_R, mask)
    assert value == pytest.approx(float(kl(p_q, p_r)[:2].mean()), rel=1e-6)
    # The direction matters: KL(p_r || p_q) is a different number here.
    assert float(kl(p_r, p_q)[:2].mean()) != pytest.approx(float(value), rel=1e-3)
    # torch's kl_div(log p_r, p_q) is KL(p_q || p_r) as well.
    reference = F.kl_div(LOGITS_R[:2].log_softmax(1), p_q[:2], reduction="batchmean")
    assert value == pytest.approx(float(reference), rel=1e-6)


def test_pairing_pulls_r_towards_q():
    """A small step on the r logits against the gradient of the pairing loss brings p_r closer to p_q."""
    logits_r = LOGITS_R.clone().requires_grad_(True)
    mask = torch.tensor([True, True, False, False])
    pairing_loss("kl", LOGITS_Q, logits_r, mask).backward()
    moved = (logits_r - 0.1 * logits_r.grad).detach()
    before = kl(LOGITS_Q.softmax(1), LOGITS_R.softmax(1))[:2]
    after = kl(LOGITS_Q.softmax(1), moved.softmax(1))[:2]
    assert (after < before).all()
    assert logits_r.grad[2:].abs().sum() == 0  # non-qualifying points get no pairing gradient


def test_non_qualifying_points_do_not_count():
    mask = torch.tensor([True, True, False, False])
    changed = LOGITS_R.clone()
    changed[2:] = torch.tensor([[9.0, -9.0, 0.0, 3.0], [-5.0, 5.0, 5.0, 0.0]])
    for kind in ("kl", "mse", "cosine"):
        assert pairing_loss(kind, LOGITS_Q, changed, mask) == pytest.approx(float(pairing_loss(kind, LOGITS_Q, LOGITS_R, mask)))


def test_pairing_is_zero_without_qualifying_points():
    mask = torch.zeros(4, dtype=torch.bool)
    for kind in ("kl", "mse", "cosine"):
        assert float(pairing_loss(kind, LOGITS_Q, LOGITS_R, mask)) == 0.0


def test_mse_and_cosine_variants_follow_appendix_b3():
    mask = torch.tensor([True, False, True, False])
    p_q, p_r = LOGITS_Q.softmax(1)[mask], LOGITS_R.softmax(1)[mask]
    mse = (0.5 * ((p_q - p_r) ** 2).sum(1)).mean()  # Eq. 10
    cos = (1 - (p_q * p_r).sum(1) / (p_q.norm(dim=1) * p_r.norm(dim=1))).mean()  # Eq. 11
    assert pairing_loss("mse", LOGITS_Q, LOGITS_R, mask) == pytest.approx(float(mse), rel=1e-6)
    assert pairing_loss("cosine", LOGITS_Q, LOGITS_R, mask) == pytest.approx(float(cos), rel=1e-6)


# ------------------------------------------------------------------------------ the scheme's loss


def _as_inputs(logits: torch.Tensor) -> torch.Tensor:
    return logits.reshape(logits.shape[0], 1, 1, K)


def test_loss_is_max_over_pair_plus_lambda_times_pairing():
    ctx = ScriptedContext({Norm.LINF: _as_inputs(LOGITS_Q), Norm.L1: _as_inputs(LOGITS_R)})
    scheme = RAMP(RAMP.default_norms, **{"lambda": "1.5"})
    x = torch.zeros(4, 1, 1, K)
    loss, logs = scheme.loss(ctx.model, x, Y, ctx)
    ce_q = F.cross_entropy(LOGITS_Q, Y, reduction="none")
    ce_r = F.cross_entropy(LOGITS_R, Y, reduction="none")
    expected_max = torch.maximum(ce_q, ce_r).mean()
    expected_pair = kl(LOGITS_Q.softmax(1), LOGITS_R.softmax(1))[:2].mean()
    assert logs["loss_max"] == pytest.approx(float(expected_max), rel=1e-6)
    assert logs["loss_pair"] == pytest.approx(float(expected_pair), rel=1e-6)
    assert float(loss) == pytest.approx(float(expected_max + 1.5 * expected_pair), rel=1e-6)
    assert logs["qualifying"] == 0.5
    assert ctx.calls == [Norm.LINF, Norm.L1]  # only the pair is attacked, q first: l2 is never used
    assert ctx.passes == {"forward": 4, "backward": 4}  # the second outer loss, counted by the scheme


def test_loss_without_qualifying_points_is_the_max_part():
    wrong_q = torch.roll(torch.eye(K) * 5, 1, dims=1)  # every q prediction wrong
    ctx = ScriptedContext({Norm.LINF: _as_inputs(wrong_q), Norm.L1: _as_inputs(LOGITS_R)})
    loss, logs = RAMP(RAMP.default_norms).loss(ctx.model, torch.zeros(4, 1, 1, K), Y, ctx)
    assert logs["loss_pair"] == 0.0 and logs["qualifying"] == 0.0
    assert float(loss) == pytest.approx(logs["loss_max"])


def test_max_over_pair_takes_the_worse_example_per_point():
    loss_q, loss_r = torch.tensor([1.0, 5.0, 2.0]), torch.tensor([3.0, 4.0, 2.0])
    worst, from_r = max_over_pair(loss_q, loss_r)
    assert worst.tolist() == [3.0, 5.0, 2.0]
    assert from_r.tolist() == [True, False, False]


def test_pair_order_and_trades_outer_loss():
    """pair=1,inf makes l1 the q norm; with TRADES the pairing still uses the adversarial logits."""
    adversarial = {Norm.LINF: _as_inputs(LOGITS_Q), Norm.L1: _as_inputs(LOGITS_R)}
    x = torch.zeros(4, 1, 1, K)
    ce_ctx = ScriptedContext(adversarial)
    swapped = RAMP(RAMP.default_norms, pair="1,inf")
    _, logs = swapped.loss(ce_ctx.model, x, Y, ce_ctx)
    assert ce_ctx.calls == [Norm.L1, Norm.LINF]
    mask = LOGITS_R.argmax(1) == Y
    assert logs["loss_pair"] == pytest.approx(float(pairing_loss("kl", LOGITS_R, LOGITS_Q, mask)), rel=1e-6)
    trades_ctx = ScriptedContext(adversarial, outer="trades")
    _, trades_logs = RAMP(RAMP.default_norms).loss(trades_ctx.model, x, Y, trades_ctx)
    _, ce_logs = RAMP(RAMP.default_norms).loss(ScriptedContext(adversarial).model, x, Y, ScriptedContext(adversarial))
    assert trades_logs["loss_pair"] == pytest.approx(ce_logs["loss_pair"])
    assert trades_logs["loss_max"] != pytest.approx(ce_logs["loss_max"])


# ---------------------------------------------------------------------------- gradient projection


def test_gradient_projection_matches_eq_4_to_7():
    w = {"keep": torch.tensor([1.0, 1.0, 1.0]), "drop": torch.tensor([[0.0, 0.0], [0.0, 0.0]]), "orth": torch.tensor([0.0, 0.0])}
    d_a = {"keep": torch.tensor([1.0, 0.0, 1.0]), "drop": torch.tensor([[1.0, 2.0], [0.0, 1.0]]), "orth": torch.tensor([1.0, 0.0])}
    d_n = {"keep": torch.tensor([2.0, 2.0, 0.0]), "drop": torch.tensor([[-1.0, -1.0], [0.0, 0.0]]), "orth": torch.tensor([0.0, 3.0])}
    adv = {k: w[k] + d_a[k] for k in w}
    nat = {k: w[k] + d_n[k] for k in w}
    beta = 0.3
    new, cosines = gradient_projection(w, adv, nat, beta)
    c_keep = 2.0 / (math.sqrt(2) * math.sqrt(8))  # Eq. 4: 0.5
    assert cosines["keep"] == pytest.approx(c_keep)
    assert cosines["drop"] < 0 and cosines["orth"] == 0.0
    # Eq. 7 with Eq. 5: positive cosine keeps c * g_n weighted by 1 - beta ...
    assert torch.allclose(new["keep"], w["keep"] + beta * d_a["keep"] + (1 - beta) * c_keep * d_n["keep"])
    # ... a non-positive one drops the natural update entirely.
    assert torch.allclose(new["drop"], w["drop"] + beta * d_a["drop"])
    assert torch.allclose(new["orth"], w["orth"] + beta * d_a["orth"])


def test_gradient_projection_limits():
    w = {"a": torch.randn(5)}
    adv, nat = {"a": w["a"] + torch.randn(5)}, {"a": w["a"] + torch.randn(5)}
    assert torch.allclose(gradient_projection(w, adv, nat, 1.0)[0]["a"], adv["a"])  # beta 1: plain AT
    same, cos = gradient_projection(w, adv, adv, 0.5)  # natural update = adversarial: cos 1, full step
    assert cos["a"] == pytest.approx(1.0) and torch.allclose(same["a"], adv["a"])
    assert update_cosine(torch.zeros(3), torch.ones(3)) == 0.0


def test_gradient_projection_handles_batchnorm_buffers():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    start = copy.deepcopy(net.state_dict())
    adv_net, nat_net = copy.deepcopy(net), copy.deepcopy(net)
    adv_net.train()(torch.randn(8, 1, 5, 5) + 1)
    nat_net.train()(torch.randn(8, 1, 5, 5) - 1)
    with torch.no_grad():
        for p in adv_net.parameters():
            p.add_(0.1)
    adv, nat = adv_net.state_dict(), nat_net.state_dict()
    new, cosines = gradient_projection(start, adv, nat, 0.5)
    assert {"1.running_mean", "1.running_var"} <= set(cosines)  # BatchNorm statistics are layers too
    assert "1.num_batches_tracked" not in cosines  # an integer buffer is not projected ...
    assert new["1.num_batches_tracked"].dtype == torch.long and int(new["1.num_batches_tracked"]) == 1  # ... it follows AT
    for key in ("1.running_mean", "1.running_var"):
        d_a, d_n = adv[key] - start[key], nat[key] - start[key]
        c = update_cosine(d_a, d_n)
        expected = start[key] + 0.5 * d_a + (0.5 * c * d_n if c > 0 else 0)
        assert torch.allclose(new[key], expected)
    net.load_state_dict(new)  # the result fits the model


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.lin(x.flatten(1)))


def test_run_epoch_projects_the_adversarial_and_natural_epochs():
    torch.manual_seed(1)
    ctx = ScriptedContext()
    ctx.model = TinyNet()
    ctx.batches_per_epoch = 3
    batches = [(torch.randn(6, 1, 2, 2), torch.randint(0, 3, (6,))) for _ in range(3)]
    start = copy.deepcopy(ctx.model.state_dict())
    adv_sgd = torch.optim.SGD(ctx.model.parameters(), lr=0.2)

    def step(x, y):  # the engine's update, here plain SGD on clean CE with a different rate
        adv_sgd.zero_grad()
        F.cross_entropy(ctx.model(x + 0.3), y).backward()
        adv_sgd.step()

    # What the natural copy should do: the same batches, its own SGD with momentum, lr from lr_at.
    natural = copy.deepcopy(ctx.model)
    nat_sgd = torch.optim.SGD(natural.parameters(), lr=0.1, momentum=0.9)
    adv_reference = copy.deepcopy(ctx.model)
    ref_sgd = torch.optim.SGD(adv_reference.parameters(), lr=0.2)
    for i, (x, y) in enumerate(batches):
        for group in nat_sgd.param_groups:
            group["lr"] = 0.1 * 0.5 ** (i / 3)
        nat_sgd.zero_grad()
        F.cross_entropy(natural(x), y).backward()
        nat_sgd.step()
        ref_sgd.zero_grad()
        F.cross_entropy(adv_reference(x + 0.3), y).backward()
        ref_sgd.step()
    expected, _ = gradient_projection(start, adv_reference.state_dict(), natural.state_dict(), 0.5)

    scheme = RAMP(RAMP.default_norms, gp="on")
    scheme.run_epoch(ctx, batches, step)
    for key, value in ctx.model.state_dict().items():
        assert torch.allclose(value, expected[key], atol=1e-6), key
    assert ctx.passes == {"forward": 18, "backward": 18}  # one clean pass per image, counted
    summary = scheme.on_epoch_end(ctx)
    assert summary["gp"]["layers"] == 6  # linear weight and bias, BN weight, bias, running mean and var
    # Alg. 2 line 3: the next epoch's natural copy restarts from the projected weights.
    ctx.epoch = 1
    restarted, optimizer = scheme._natural_copy(ctx, {k: v.clone() for k, v in ctx.model.state_dict().items()})
    assert optimizer is scheme.clean_optimizer and len(optimizer.state) > 0  # momentum kept
    for key, value in restarted.state_dict().items():
        assert torch.equal(value, ctx.model.state_dict()[key])


def test_gp_off_is_the_engines_epoch():
    ctx = ScriptedContext()
    seen = []
    RAMP(RAMP.default_norms).run_epoch(ctx, [(torch.zeros(1), torch.zeros(1))] * 3, lambda x, y: seen.append(x))
    assert len(seen) == 3 and ctx.passes == {"forward": 0, "backward": 0}


# ------------------------------------------------------------------------------------- key pair


@pytest.mark.parametrize(
    "errors,pair",
    [
        ({Norm.LINF: 0.5, Norm.L2: 0.2, Norm.L1: 0.9}, (Norm.LINF, Norm.L1)),  # an l-inf-robust model
        ({Norm.LINF: 0.8, Norm.L2: 0.3, Norm.L1: 0.4}, (Norm.L1, Norm.LINF)),  # an l1-robust model
        ({Norm.LINF: 0.3, Norm.L2: 0.7, Norm.L1: 0.9}, (Norm.L2, Norm.L1)),
        ({Norm.LINF: 0.5, Norm.L2: 0.5, Norm.L1: 0.5}, (Norm.LINF, Norm.L2)),  # ties: l-inf, l2, l1
    ],
)
def test_auto_pair_takes_the_two_weakest_norms(errors, pair):
    ctx = ScriptedContext(error_rate=errors)
    scheme = RAMP(RAMP.default_norms, pair="auto")
    assert scheme.key_pair is None
    batches = [(torch.zeros(10, 1, 1, K), torch.zeros(10, dtype=torch.long))] * 6
    trained = []
    scheme.run_epoch(ctx, batches, lambda x, y: trained.append(x))
    assert scheme.key_pair == pair
    assert len(trained) == 6  # the probed batches are trained on as well
    assert ctx.calls.count(Norm.L2) == 4  # every norm on the first auto-batches (4) batches
    restored = RAMP(RAMP.default_norms, pair="auto")
    restored.load_state_dict(scheme.state_dict())
    assert restored.key_pair == pair


def test_options_are_checked():
    with pytest.raises(BadInputError, match="needs l2"):
        RAMP((Norm.LINF, Norm.L1), pair="inf,2")
    with pytest.raises(BadInputError, match="pair"):
        RAMP(RAMP.default_norms, pair="1,1")
    with pytest.raises(BadInputError, match="pair"):
        RAMP(RAMP.default_norms, pair="inf,7")
    with pytest.raises(BadInputError, match="gp"):
        RAMP(RAMP.default_norms, gp="maybe")
    with pytest.raises(BadInputError, match="beta"):
        RAMP(RAMP.default_norms, beta="1.5")
    with pytest.raises(BadInputError, match="lambda"):
        RAMP(RAMP.default_norms, **{"lambda": "-1"})
    with pytest.raises(BadInputError, match="kl, mse, cosine"):
        RAMP(RAMP.default_norms, pairing="l2")
    with pytest.raises(BadInputError, match="at least 2"):
        RAMP((Norm.LINF,))
    scheme = RAMP(RAMP.default_norms, gp="true", beta="0.25", pair="2,inf")
    assert scheme.options.gp is True and scheme.options.beta == 0.25 and scheme.key_pair == (Norm.L2, Norm.LINF)


# ------------------------------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_ramp_runs_end_to_end_from_the_cli(base_model, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--scheme",
        "ramp",
        "--epochs",
        "1",
        "--n-train",
        "128",
        "--attack-steps",
        "3",
        "--option",
        "gp=on",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["status"] == "finished" and info["scheme"] == "ramp"
    epochs = [
        json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line and '"kind": "epoch"' in line
    ]
    (summary,) = epochs
    assert summary["pair"] == "inf,1"
    assert summary["gp"]["layers"] > 0
    # Two outer losses and one natural step per image; attacks: 2 x (3 + 1) forward passes per image.
    assert summary["passes"] == {
        "attack_forward": 128 * 8,
        "attack_backward": 128 * 6,
        "update_forward": 128 * 3,
        "update_backward": 128 * 3,
    }
    assert (out / "model.pt").is_file()
