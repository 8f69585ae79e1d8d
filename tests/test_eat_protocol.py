"""The E-AT evaluation suite: which attacks per norm, and their outputs on a small model."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

from robustft.contracts import Attack, AttackFactory, EvalSuite
from robustft.lp import check_in_ball_and_box
from robustft.norms import Norm
from robustft_plugins.attacks.apgd import APGD, APGDFactory
from robustft_plugins.suites.eat_protocol import EATProtocol, register_suites

pytestmark = pytest.mark.usefixtures("one_thread")


class StandInRegistry:
    """The one method of the attack registry a suite uses, recording what was asked for."""

    def __init__(self) -> None:
        self.factory = APGDFactory()
        self.asked: list[str] = []

    def get(self, name: str) -> AttackFactory:
        self.asked.append(name)
        if name != "apgd":
            raise KeyError(name)
        return self.factory


def attacks(norm: Norm, eps: float = 0.5, num_classes: int = 10, steps: int = 100, seed: int = 0) -> list[tuple[str, Attack]]:
    registry = StandInRegistry()
    return EATProtocol().attacks(norm, eps, num_classes=num_classes, steps=steps, seed=seed, registry=registry)


def test_suite_identity_and_hook() -> None:
    suite = EATProtocol()
    assert isinstance(suite, EvalSuite)
    assert suite.name == "e-at" and suite.aliases == ("eat",) and suite.description
    registered: list = []
    register_suites(registered.append)
    assert len(registered) == 1 and registered[0].name == "e-at"


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_linf_and_l2_use_one_restart_and_nine_targets(norm: Norm) -> None:
    registry = StandInRegistry()
    chosen = EATProtocol().attacks(norm, 0.5, num_classes=10, steps=100, seed=3, registry=registry)
    assert registry.asked and set(registry.asked) == {"apgd"}
    assert [label for label, _ in chosen] == ["apgd-ce", "apgd-t"]
    ce, targeted = (a for _, a in chosen)
    assert isinstance(ce, APGD) and isinstance(targeted, APGD)
    ce_settings = (ce.norm, ce.eps, ce.steps, ce.loss, ce.restarts, ce.random_start, ce.seed)
    assert ce_settings == (norm, 0.5, 100, "ce", 1, True, 3)
    t_settings = (targeted.loss, targeted.restarts, targeted.n_target_classes, targeted.steps, targeted.seed)
    assert t_settings == ("dlr-targeted", 1, 9, 100, 3)
    assert not ce.use_largereps and not targeted.use_largereps


def test_l1_uses_five_restarts_five_targets_and_large_radii() -> None:
    ce, targeted = (a for _, a in attacks(Norm.L1, eps=12.0, steps=50))
    assert (ce.loss, ce.restarts, ce.use_largereps, ce.eps, ce.steps, ce.topk) == ("ce", 5, True, 12.0, 50, 0.2)
    assert (targeted.loss, targeted.n_target_classes, targeted.restarts, targeted.use_largereps) == (
        "dlr-targeted",
        5,
        1,
        True,
    )


@pytest.mark.parametrize("num_classes,expected", [(10, 9), (5, 4), (4, 3), (3, 2)])
def test_targets_capped_by_the_number_of_classes(num_classes: int, expected: int) -> None:
    _, (_, targeted) = attacks(Norm.LINF, num_classes=num_classes)
    assert targeted.n_target_classes == expected


def test_two_classes_run_apgd_ce_only() -> None:
    for norm in Norm:
        assert [label for label, _ in attacks(norm, num_classes=2)] == ["apgd-ce"]


@pytest.fixture(scope="module")
def small_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimizer.zero_grad()
        F.cross_entropy(model(x[:1200]), y[:1200]).backward()
        optimizer.step()
    for p in model.parameters():
        p.grad = None
    return model.eval(), x[1200:1264], y[1200:1264]


@pytest.mark.parametrize("norm,eps", [(Norm.LINF, 0.07), (Norm.L2, 0.4), (Norm.L1, 1.2)])
def test_running_the_suite_stays_in_the_ball(norm: Norm, eps: float, small_model: Any) -> None:
    model, x, y = small_model
    robust = torch.ones(len(x), dtype=torch.bool)
    with torch.no_grad():
        robust &= model(x).argmax(1) == y
    for label, attack in attacks(norm, eps=eps, steps=10):
        # As the evaluator does: attack only the points every earlier attack left correctly classified.
        idx = robust.nonzero().squeeze(1)
        result = attack(model, x[idx], y[idx])
        assert bool(check_in_ball_and_box(result.x_adv, x[idx], norm, eps).all()), label
        with torch.no_grad():
            robust[idx] &= model(result.x_adv).argmax(1) == y[idx]
    assert 0 < int(robust.sum()) < len(x)
