"""Adversarial points outside their ball or [0, 1] are projected, counted and flagged, never silently kept."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import Tensor, nn

from robustft.contracts import Attack, AttackResult, EvalSuite
from robustft.evaluation import EvalReport, InvalidPointsError, evaluate_model, valid_adversarial
from robustft.lp import check_in_ball_and_box, lp_norms, project
from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft.report import eval_table

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = {Norm.LINF: Fraction(1, 10), Norm.L2: Fraction(2, 5), Norm.L1: Fraction(2)}


def overshoot(model: nn.Module, x: Tensor, y: Tensor, norm: Norm, eps: float, factor: float) -> Tensor:
    """``x + factor * eps * d``, ``d`` the unit-norm steepest-ascent direction of the loss in ``norm``."""
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    flat = grad.flatten(1)
    if norm is Norm.LINF:
        d = flat.sign()
    elif norm is Norm.L2:
        d = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    else:  # all mass on the steepest coordinate
        d = torch.zeros_like(flat).scatter_(1, flat.abs().argmax(1, keepdim=True), 1.0) * flat.sign()
    return x.detach() + factor * eps * d.view_as(x)


class Overshooting(Attack):
    """Leaves the ball by 1% (and the box where it likes); with ``valid=True`` returns the projection itself."""

    def __init__(self, norm: Norm, eps: float, valid: bool) -> None:
        self.norm, self.eps, self.valid = norm, eps, valid

    def perturb(self, model, x, y):
        x_adv = overshoot(model, x, y, self.norm, self.eps, 1.01)
        if self.valid:
            x_adv = x + project(x_adv - x, x, self.norm, self.eps)
        return AttackResult(
            x_adv=x_adv, loss=torch.zeros(len(x)), success=torch.ones(len(x), dtype=torch.bool), forward_passes=1, backward_passes=1
        )


class OneAttack(EvalSuite):
    name = "one"

    def __init__(self, valid: bool) -> None:
        self.valid = valid

    def attacks(self, norm, eps, *, num_classes, steps, seed, registry):
        return [("overshoot", Overshooting(norm, eps, self.valid))]


def _evaluate(base_model, suite, **kw):
    from robustft_plugins.datasets.digits import Digits

    return evaluate_model(
        base_model,
        Digits(),
        list(EPS),
        EPS,
        suite=suite,
        registries=registries(),
        n_ex=120,
        batch_size=50,
        device=torch.device("cpu"),
        **kw,
    )


def test_points_outside_the_ball_are_projected_and_counted(base_model):
    invalid = _evaluate(base_model, OneAttack(valid=False))
    projected = _evaluate(base_model, OneAttack(valid=True))
    # every attacked (clean-correct) point left its ball and was counted as its projection classifies
    correct = round(invalid.clean * invalid.n)
    assert invalid.invalid == {Norm.LINF: correct, Norm.L2: correct, Norm.L1: correct}
    assert projected.invalid == {Norm.LINF: 0, Norm.L2: 0, Norm.L1: 0}
    assert invalid.robust == projected.robust and invalid.union == projected.union
    assert invalid.robust[Norm.LINF] < invalid.clean  # the projected points do break some: they were counted
    assert invalid.as_dict()["invalid_points"] == {"inf": correct, "2": correct, "1": correct}


def test_strict_makes_an_invalid_point_an_error(base_model):
    with pytest.raises(InvalidPointsError, match=r"Attack 'overshoot' returned \d+ point\(s\) outside the l-inf ball of radius 0.1"):
        _evaluate(base_model, OneAttack(valid=False), strict=True)
    assert _evaluate(base_model, OneAttack(valid=True), strict=True).invalid[Norm.LINF] == 0


def test_the_table_flags_invalid_points(base_model):
    from rich.console import Console

    result = _evaluate(base_model, OneAttack(valid=False))
    console = Console(width=200, record=True)
    console.print(eval_table(EvalReport(results=[result])))
    text = " ".join(console.export_text().split())
    assert "*" in text and "invalid adversarial points, projected onto their ball and [0, 1]" in text


@pytest.mark.parametrize("norm", list(EPS))
def test_projection_of_non_finite_and_out_of_box_points(norm):
    torch.manual_seed(0)
    x = torch.rand(4, 1, 8, 8)
    x_adv = x + 3 * torch.randn_like(x)
    x_adv[0, 0, 0, 0] = float("nan")
    x_adv[1] = x[1]  # already valid: kept as it is
    fixed, projected = valid_adversarial(x_adv, x, norm, float(EPS[norm]))
    assert projected.tolist() == [True, False, True, True]
    assert check_in_ball_and_box(fixed, x, norm, float(EPS[norm])).all()
    assert torch.equal(fixed[1], x[1])
    assert float(lp_norms((fixed - x)[2:], norm).min()) > 0  # a projection, not the clean point
