"""E-AT's defining behaviour: the sampling of Eq. 5 and attacks in l1 and l-inf only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustft.contracts import AttackResult, TrainContext
from robustft.errors import BadInputError, UnknownNameError
from robustft.norms import Norm
from robustft_plugins.schemes.eat import EAT, EATUniform


class ScriptedContext(TrainContext):
    """A training context whose attack fails on a chosen fraction of points per norm and records calls."""

    def __init__(self, error_rate: dict[Norm, float], seed: int = 0) -> None:
        self.rng = torch.Generator().manual_seed(seed)
        self.error_rate = error_rate
        self.calls: list[Norm] = []
        self.epoch = self.batch = 0

    def attack(self, norm, x, y, model=None):
        self.calls.append(norm)
        n = x.shape[0]
        success = torch.arange(n) < round(self.error_rate[norm] * n)
        return AttackResult(x_adv=x.clone(), loss=torch.zeros(n), success=success)

    def count_passes(self, forward=0, backward=0, *, images=1):
        pass

    def adversarial_loss(self, model, x, x_adv, y):
        return torch.nn.functional.cross_entropy(model(x_adv), y, reduction="none")

    def lr_at(self, position):
        return 0.1

    def make_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=0.1)


MODEL = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
X, Y = torch.rand(100, 1, 2, 2), torch.randint(0, 3, (100,))


def test_default_norms_are_the_extremes():
    assert set(EAT.default_norms) == {Norm.L1, Norm.LINF}


def test_only_l1_and_linf_are_attacked_by_default():
    scheme = EAT(EAT.default_norms)
    ctx = ScriptedContext({Norm.L1: 0.5, Norm.LINF: 0.3, Norm.L2: 0.9})
    scheme.on_epoch_start(ctx)
    for _ in range(50):
        scheme.loss(MODEL, X, Y, ctx)
    assert set(ctx.calls) == {Norm.L1, Norm.LINF}
    assert len(ctx.calls) == 50  # one attack per batch: the cost of single-norm AT


@pytest.mark.parametrize("r1,rinf", [(0.6, 0.2), (0.1, 0.7), (0.5, 0.5)])
def test_probabilities_follow_eq5(r1, rinf):
    scheme = EAT(EAT.default_norms)
    scheme.errors = {Norm.L1: r1 * 200, Norm.LINF: rinf * 300}
    scheme.counts = {Norm.L1: 200, Norm.LINF: 300}
    probs = scheme.probabilities()
    assert probs[Norm.L1] == pytest.approx(r1 / (r1 + rinf))
    assert probs[Norm.LINF] == pytest.approx(rinf / (r1 + rinf))


def test_draw_frequencies_match_eq5():
    scheme = EAT(EAT.default_norms)
    scheme.errors = {Norm.L1: 80.0, Norm.LINF: 20.0}
    scheme.counts = {Norm.L1: 100, Norm.LINF: 100}
    ctx = ScriptedContext({}, seed=1)
    draws = [scheme.draw(ctx) for _ in range(4000)]
    share = draws.count(Norm.L1) / len(draws)
    assert share == pytest.approx(0.8, abs=3 * (0.8 * 0.2 / 4000) ** 0.5)


def test_running_error_drives_sampling_towards_the_weak_norm():
    """The model is weak in l1 (90% robust error) and strong in l-inf (10%): l1 gets ~90% of batches."""
    scheme = EAT(EAT.default_norms)
    ctx = ScriptedContext({Norm.L1: 0.9, Norm.LINF: 0.1}, seed=3)
    scheme.on_epoch_start(ctx)
    for _ in range(400):
        scheme.loss(MODEL, X, Y, ctx)
    assert scheme.robust_errors() == {Norm.L1: pytest.approx(0.9), Norm.LINF: pytest.approx(0.1)}
    share = ctx.calls.count(Norm.L1) / len(ctx.calls)
    assert 0.83 < share < 0.95


def test_uniform_until_every_norm_was_drawn():
    scheme = EAT(EAT.default_norms)
    scheme.errors, scheme.counts = {Norm.L1: 50.0, Norm.LINF: 0.0}, {Norm.L1: 100, Norm.LINF: 0}
    assert scheme.probabilities() == {Norm.L1: 0.5, Norm.LINF: 0.5}


def test_paper_variant_resets_every_epoch_and_reference_variant_does_not():
    ctx = ScriptedContext({Norm.L1: 0.9, Norm.LINF: 0.1})
    paper, cumulative = EAT(EAT.default_norms), EAT(EAT.default_norms, sampling="cumulative")
    for scheme in (paper, cumulative):
        scheme.on_epoch_start(ctx)
        for _ in range(20):
            scheme.loss(MODEL, X, Y, ctx)
        scheme.on_epoch_start(ctx)  # the next epoch
    assert paper.counts == {Norm.L1: 0, Norm.LINF: 0}
    assert sum(cumulative.counts.values()) == 20 * len(X)


def test_state_round_trip():
    scheme = EAT(EAT.default_norms)
    ctx = ScriptedContext({Norm.L1: 0.4, Norm.LINF: 0.2})
    for _ in range(5):
        scheme.loss(MODEL, X, Y, ctx)
    restored = EAT(EAT.default_norms)
    restored.load_state_dict(scheme.state_dict())
    assert restored.probabilities() == scheme.probabilities()


def test_uniform_variant_ignores_errors():
    scheme = EATUniform(EAT.default_norms)
    scheme.errors, scheme.counts = {Norm.L1: 90.0, Norm.LINF: 1.0}, {Norm.L1: 100, Norm.LINF: 100}
    assert scheme.probabilities() == {Norm.L1: 0.5, Norm.LINF: 0.5}


def test_any_set_of_norms():
    scheme = EAT((Norm.L1, Norm.L2, Norm.LINF))
    ctx = ScriptedContext({Norm.L1: 0.5, Norm.L2: 0.5, Norm.LINF: 0.5})
    for _ in range(60):
        scheme.loss(MODEL, X, Y, ctx)
    assert set(ctx.calls) == {Norm.L1, Norm.L2, Norm.LINF}


def test_bad_options():
    with pytest.raises(BadInputError, match="paper, cumulative"):
        EAT(EAT.default_norms, sampling="sometimes")
    with pytest.raises(UnknownNameError, match="sampling"):
        EAT(EAT.default_norms, samplin="paper")


def test_warns_when_the_hull_does_not_cover_the_l2_radius():
    from fractions import Fraction

    from robustft_plugins.schemes.eat import EAT

    mnist = {Norm.L1: Fraction(10), Norm.L2: Fraction(2), Norm.LINF: Fraction(3, 10)}
    (message,) = EAT((Norm.LINF, Norm.L1)).threat_model_warnings(mnist, 784)
    assert "radius 1.74" in message and "l2 radius 2 " in message and "--scheme max or --norms 1,2,inf" in message
    cifar = {Norm.L1: Fraction(12), Norm.L2: Fraction(1, 2), Norm.LINF: Fraction(8, 255)}
    assert EAT((Norm.LINF, Norm.L1)).threat_model_warnings(cifar, 3072) == []
    (wide,) = EAT((Norm.LINF, Norm.L1)).threat_model_warnings({**cifar, Norm.L2: Fraction(3, 2)}, 3072)
    assert "radius 0.614" in wide and "l2 radius 1.5 " in wide
    assert EAT((Norm.LINF, Norm.L2, Norm.L1)).threat_model_warnings(mnist, 784) == []  # l2 trained itself


def test_a_single_norm_is_named_as_single_norm_training():
    from fractions import Fraction

    from robustft_plugins.schemes.eat import EAT, EATUniform

    cifar = {Norm.L1: Fraction(12), Norm.L2: Fraction(1, 2), Norm.LINF: Fraction(8, 255)}
    (message,) = EAT((Norm.L2,)).threat_model_warnings(cifar, 3072)
    assert "draws nothing: it is l2 adversarial training (--scheme l2-at)" in message
    (uniform,) = EATUniform((Norm.LINF,)).threat_model_warnings(cifar, 3072)
    assert "(--scheme linf-at)" in uniform


def test_finetune_prints_the_hull_warning(capsys, monkeypatch, base_model):
    from helpers import cli_in_process

    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--epochs",
        "1",
        "--n-train",
        "8",
        "--batch-size",
        "8",
        "--attack-steps",
        "1",
        "--eps",
        "2=1.5",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--scheme max or --norms 1,2,inf" in warnings[0]
