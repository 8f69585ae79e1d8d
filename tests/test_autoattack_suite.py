"""The ``autoattack`` suite: pyautoattack's standard AutoAttack per norm, and its agreement with ``e-at``."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

from robustft.contracts import EvalSuite
from robustft.evaluation import evaluate_model
from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft_plugins.suites.autoattack import AutoAttackComponent, AutoAttackSuite, register_suites
from robustft_plugins.suites.eat_protocol import EATProtocol

#: Largest difference in robust accuracy allowed between the suites on 60 points (see the test).
TOLERANCE = 0.10


pytestmark = pytest.mark.usefixtures("one_thread")


def test_suite_identity_and_registration() -> None:
    suite = AutoAttackSuite()
    assert isinstance(suite, EvalSuite) and suite.name == "autoattack" and "aa" in suite.aliases
    found: list = []
    register_suites(found.append)
    assert [s.name for s in found] == ["autoattack"]
    assert "autoattack" in registries().suites


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2, Norm.L1])
def test_standard_attacks_with_pyautoattack_settings(norm: Norm) -> None:
    chosen = AutoAttackSuite().attacks(norm, 0.5, num_classes=10, steps=20, seed=4, registry=None)
    assert [label for label, _ in chosen] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 10))
    built = {label: attack._attack_for(model, torch.device("cpu")) for label, attack in chosen}
    ce, targeted, fab, square = built["apgd-ce"], built["apgd-t"], built["fab-t"], built["square"]
    assert (ce.norm, ce.eps, ce.n_iter, ce.loss, ce.seed) == (norm.autoattack_name, 0.5, 20, "ce", 4)
    assert (ce.n_restarts, targeted.n_target_classes) == ((5, 5) if norm is Norm.L1 else (1, 9))
    assert ce.use_largereps == targeted.use_largereps == (norm is Norm.L1)
    assert (fab.targeted, fab.n_iter, fab.n_target_classes) == (True, 20, 9)
    assert square.n_queries == 1000


def test_few_classes_cap_or_skip_the_targeted_attacks() -> None:
    five = dict(AutoAttackSuite().attacks(Norm.LINF, 0.1, num_classes=5, steps=5, seed=0, registry=None))
    assert five["apgd-t"]._attack_for(nn.Linear(2, 5), torch.device("cpu")).n_target_classes == 4
    three = AutoAttackSuite().attacks(Norm.LINF, 0.1, num_classes=3, steps=5, seed=0, registry=None)
    assert [label for label, _ in three] == ["apgd-ce", "square"]


def test_component_returns_points_in_the_ball_and_box() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10)).eval()
    x, y = torch.rand(6, 3, 4, 4), torch.randint(0, 10, (6,))
    for norm, eps in ((Norm.LINF, 0.05), (Norm.L2, 0.3), (Norm.L1, 1.0)):
        result = AutoAttackComponent("apgd-ce", norm, eps, steps=5, seed=0, num_classes=10)(model, x, y)
        delta = (result.x_adv - x).flatten(1)
        assert (result.x_adv >= 0).all() and (result.x_adv <= 1).all()
        assert (delta.norm(p=norm.p, dim=1) <= eps * (1 + 1e-4) + 1e-6).all()


def small_digits_model() -> nn.Module:
    """A small CNN trained cleanly on the digits for a few seconds: weak but not trivially broken at eps 0.05."""
    from robustft_plugins.datasets.digits import Digits

    data = Digits().train()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 32), nn.ReLU(), nn.Linear(32, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    for _ in range(8):
        for x, y in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model.eval()


def test_both_suites_agree_on_a_small_model() -> None:
    """E-AT's APGD-CE + APGD-T and full standard AutoAttack give the same union table within TOLERANCE.

    60 digits test points, 10 attack steps (both suites), l-inf 0.05 and l1 1. AutoAttack adds FAB-T and
    Square to the two APGD attacks, so its robust accuracy can only be lower or equal up to the attacks'
    randomness; on this model both find the same weak points within a few percent.
    """
    from robustft_plugins.datasets.digits import Digits

    model, data, reg = small_digits_model(), Digits(), registries()
    eps = {Norm.LINF: Fraction(1, 20), Norm.L1: Fraction(1)}
    common = dict(registries=reg, n_ex=60, steps=10, batch_size=60, device=torch.device("cpu"), seed=0)
    eat = evaluate_model(model, data, list(eps), eps, suite=EATProtocol(), **common)
    aa = evaluate_model(model, data, list(eps), eps, suite=AutoAttackSuite(), **common)
    assert (eat.suite, aa.suite, eat.n, aa.n) == ("e-at", "autoattack", 60, 60)
    assert eat.clean == aa.clean > 0.8
    for norm in eps:
        assert 0.0 < eat.robust[norm] < eat.clean  # the comparison is not vacuous
        assert abs(eat.robust[norm] - aa.robust[norm]) <= TOLERANCE, (norm, eat.robust, aa.robust)
    assert abs(eat.union - aa.union) <= TOLERANCE
    assert not any(aa.invalid.values())  # every AutoAttack point lay in its ball and [0, 1]


class _DigitsInColour:
    """The digits test set with its grey channel repeated three times (channels-last differs from NCHW
    only with more than one channel)."""

    name, num_classes = "digits-rgb", 10

    def test(self) -> torch.utils.data.Dataset:
        from robustft_plugins.datasets.digits import Digits

        x, y = next(iter(torch.utils.data.DataLoader(Digits().test(), batch_size=10_000)))
        return torch.utils.data.TensorDataset(x.repeat(1, 3, 1, 1), y)


def test_channels_last_evaluation_sees_channels_last_batches_and_gives_the_same_table() -> None:
    """``channels_last`` (on by default on CUDA) changes the memory layout only; on the CPU the table is equal."""
    grey = small_digits_model()
    colour = nn.Conv2d(3, 8, 3, padding=1)
    with torch.no_grad():  # the grey network lifted to three equal channels
        colour.weight.copy_(grey[0].weight.repeat(1, 3, 1, 1) / 3)
        colour.bias.copy_(grey[0].bias)
    model = nn.Sequential(colour, *list(grey)[1:]).eval()
    layouts: list[bool] = []
    model.register_forward_pre_hook(lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    eps = {Norm.LINF: Fraction(1, 20), Norm.L1: Fraction(1)}
    common = dict(registries=registries(), n_ex=40, steps=5, batch_size=40, device=torch.device("cpu"), seed=0, suite=EATProtocol())
    plain = evaluate_model(model, _DigitsInColour(), list(eps), eps, **common)
    assert layouts and not any(layouts)
    layouts.clear()
    model.to(memory_format=torch.channels_last)
    converted = evaluate_model(model, _DigitsInColour(), list(eps), eps, channels_last=True, **common)
    assert layouts[0] is False and all(layouts[1:])  # the clean pass takes the loader's batch; every attack's are channels-last
    assert 0 < plain.union < plain.clean  # the attacks did something
    assert (converted.clean, converted.robust, converted.union) == (plain.clean, plain.robust, plain.union)
