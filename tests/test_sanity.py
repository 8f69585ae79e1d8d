"""eval --sanity: the gradient-masking checks pass on an honest model and catch masked ones.

Each check compares the evaluation suite under test with a stronger attack. The models below are built so
that the suite at ``steps`` overstates robustness: a one-sided check (fail only if the stronger attack
leaves MORE points robust) passes on them, the two-sided checks of robustft.sanity must not.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from helpers import cli_in_process
from torch import Tensor, nn

from robustft.contracts import Attack, EvalSuite
from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft.sanity import check_model, linear_surrogate, tolerance

pytestmark = pytest.mark.usefixtures("one_thread")

N = 60  # test points per check: the first N of the digits test set
CPU = torch.device("cpu")


class Masked(nn.Module):
    """The same function as ``model`` with a zero input gradient everywhere: gradient masking at its purest.

    Its robustness to gradient attacks is fake; points found on the unmasked model transfer exactly."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.detach()) + 0 * x.sum()


def nearest(x: Tensor, clean: Tensor) -> Tensor:
    """Index of the memorised clean point nearest to each input (no gradient: a piecewise constant choice)."""
    with torch.no_grad():
        return torch.cdist(x.flatten(1), clean).argmin(1)


class Staircase(nn.Module):
    """Right on the memorised clean points; wrong only after ``length`` pixels have each been pushed to the edge
    of the l-inf ball of radius ``eps`` (away from the nearer end of [0, 1]), and its input gradient shows the
    attack only the next pixel of that staircase: pixel k counts only once pixels 0..k-1 are at least 3/4 of
    the way out. A gradient attack climbs about one pixel per step, so with fewer steps than ``length`` it
    reports the point robust, with twice as many it breaks it: the suite at ``steps`` has not converged."""

    def __init__(self, clean: Tensor, labels: Tensor, eps: float, length: int, num_classes: int = 10) -> None:
        super().__init__()
        flat = clean.flatten(1)
        self.register_buffer("clean", flat)
        self.register_buffer("labels", labels)
        self.register_buffer("outwards", torch.where(flat[:, :length] < 0.5, 1.0, -1.0))
        self.eps, self.length, self.num_classes = eps, length, num_classes

    def forward(self, x: Tensor) -> Tensor:
        i = nearest(x, self.clean)
        flat = x.flatten(1)
        # Progress of each staircase pixel, 1 at the edge of the ball; not clamped below, so that a pixel
        # at the box edge (clean value 0) still has a gradient.
        out = ((flat[:, : self.length] - self.clean[i, : self.length]) * self.outwards[i] / self.eps).clamp(max=1.0)
        gate = ((out - 0.5) / 0.25).clamp(0.0, 1.0)
        reached = torch.cat([torch.ones_like(gate[:, :1]), gate[:, :-1].cumprod(1)], dim=1)
        climbed = (reached * out).sum(1)  # = length only with every pixel at the edge
        y = self.labels[i]
        other = F.one_hot((y + 1) % self.num_classes, self.num_classes).to(x.dtype)
        return F.one_hot(y, self.num_classes).to(x.dtype) + other * (climbed - self.length + 1.5)[:, None]


class FlatNearCleanPoints(nn.Module):
    """``model`` farther than ``radius`` (l1) from the nearest memorised clean point; within it, the constant
    ``model(clean point)``: a zero input gradient in a neighbourhood of each clean point, honest outside it.
    An attack that starts at the clean point never moves; one from a random start escapes and attacks
    ``model`` itself."""

    def __init__(self, model: nn.Module, clean: Tensor, radius: float) -> None:
        super().__init__()
        self.model, self.radius = model, radius
        self.register_buffer("clean", clean.flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        anchor = self.clean[nearest(x, self.clean)]
        with torch.no_grad():
            flat_logits = self.model(anchor.view_as(x))
        inside = (x.flatten(1) - anchor).abs().sum(1) <= self.radius
        return torch.where(inside[:, None], flat_logits, self.model(x))


class FromCleanPoint(EvalSuite):
    """APGD-CE started at the clean point, as training attacks start: a weak suite a plugin might register."""

    name = "apgd-ce-from-clean"

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        return [("apgd-ce", registry.get("apgd").build(norm, eps, steps=steps, purpose="eval", seed=seed, loss="ce", random_start=False))]


def digits():
    return registries().datasets.get("digits")


def test_tolerance_is_one_point_or_one_percent():
    assert [tolerance(n) for n in (10, 60, 199, 200, 1000)] == [1, 1, 1, 2, 10]


def test_honest_model_passes_every_check(base_model):
    data = digits()
    checks = check_model(
        base_model,
        data,
        [Norm.LINF],
        {Norm.LINF: Fraction(1, 10)},
        registries=registries(),
        suite=registries().suites.get("e-at"),
        surrogate=linear_surrogate(data, CPU),
        n_ex=N,
        steps=10,
        name="base",
    )
    assert {c.check for c in checks} == {"more-steps", "more-restarts", "transfer", "linf-radius-1"}
    assert all(c.passed for c in checks), [c.detail for c in checks if not c.passed]
    base = next(c for c in checks if c.check == "more-steps").values["steps"]
    assert base > 0.5  # the base model is l-inf robust: the checks compared something


def test_unconverged_suite_fails_more_steps():
    data = digits()
    x, y = data.test().tensors
    model = Staircase(x[:N], y[:N], eps=0.1, length=16)  # more pixels than 10 steps climb, fewer than 20
    checks = check_model(
        model,
        data,
        [Norm.LINF],
        {Norm.LINF: Fraction(1, 10)},
        registries=registries(),
        suite=registries().suites.get("e-at"),
        surrogate=linear_surrogate(data, CPU),
        n_ex=N,
        steps=10,
        device=CPU,
        name="staircase",
    )
    more_steps = next(c for c in checks if c.check == "more-steps")
    assert not more_steps.passed, more_steps.detail
    # The stronger attack leaves far FEWER points robust: the table's number at 10 steps is overstated.
    assert more_steps.values["steps"] >= 0.5
    assert more_steps.values["more_steps"] <= more_steps.values["steps"] - 0.3


def test_flat_gradients_near_clean_points_fail_more_restarts(base_model):
    data = digits()
    x, _ = data.test().tensors
    model = FlatNearCleanPoints(base_model, x[:N], radius=1.0)
    # l1 at radius 2: outside the flat neighbourhood the base model (l-inf robust) is weak.
    checks = check_model(
        model,
        data,
        [Norm.L1],
        {Norm.L1: Fraction(2)},
        registries=registries(),
        suite=FromCleanPoint(),
        surrogate=linear_surrogate(data, CPU),
        n_ex=N,
        steps=10,
        name="flat",
    )
    found = {c.check: c for c in checks}
    restarts = found["more-restarts"]
    assert not restarts.passed, restarts.detail
    assert restarts.values["suite"] >= 0.5  # the suite never left the clean points
    assert restarts.values["more_restarts"] <= restarts.values["suite"] - 0.3
    assert found["more-steps"].passed  # more steps from the clean point stay stuck: only the restarts tell


def test_masked_gradients_are_caught(base_model):
    data = digits()
    masked = Masked(base_model)
    # l1 at radius 2: the base model (l-inf robust) is weak there, so the transferred points break it.
    checks = check_model(
        masked,
        data,
        [Norm.L1],
        {Norm.L1: Fraction(2)},
        registries=registries(),
        suite=registries().suites.get("e-at"),
        surrogate=base_model,
        n_ex=N,
        steps=10,
        name="masked",
    )
    failed = {c.check for c in checks if not c.passed}
    assert "transfer" in failed  # the base model's points break what the white-box attack could not
    transfer = next(c for c in checks if c.check == "transfer")
    assert transfer.values["transfer"] < transfer.values["white_box"]


def test_eval_sanity_json(base_model, capsys, monkeypatch):
    result = cli_in_process(
        capsys,
        monkeypatch,
        "eval",
        "--model",
        "digits-cnn-linf",
        "--norms",
        "inf",
        "--n-ex",
        "40",
        "--steps",
        "5",
        "--sanity",
        "--json",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["results"][0]["n"] == 40
    checks = {(c["check"], c["norm"]): c for c in data["sanity"]}
    assert set(checks) == {("more-steps", "inf"), ("more-restarts", "inf"), ("transfer", "inf"), ("linf-radius-1", "inf")}
    assert all(isinstance(c["passed"], bool) and c["detail"] for c in checks.values())
    # The checks test the table's suite (--suite, default e-at), with the tolerance they applied.
    assert "e-at" in checks[("more-steps", "inf")]["detail"]
    assert checks[("more-steps", "inf")]["values"]["tolerance"] == 1 / 40


def test_eval_run_sanity_is_stored_beside_the_table(tmp_path, base_model, capsys, monkeypatch):
    import robustft

    run = robustft.finetune(epochs=1, n_train=16, batch_size=16, attack_steps=1, out=str(tmp_path / "run")).run_dir
    result = cli_in_process(
        capsys, monkeypatch, "eval", "--run", str(run), "--norms", "inf", "--n-ex", "12", "--steps", "2", "--sanity", "--json", "--quiet"
    )
    assert result.returncode == 0, result.stderr
    stored = json.loads((run / "eval.json").read_text())
    assert stored["sanity"] == json.loads(result.stdout)["sanity"] and len(stored["sanity"]) == 8  # 4 checks x 2 models


class CountingSuite(EvalSuite):
    """``suite``, counting per (norm, radius, steps) how often its attacks are built and how many batches they attack."""

    def __init__(self, suite: EvalSuite) -> None:
        self.suite, self.name = suite, suite.name
        self.built: dict[tuple[Norm, float, int], int] = {}
        self.calls: dict[tuple[Norm, float, int], int] = {}

    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        key = (Norm.parse(norm), float(eps), steps)
        self.built[key] = self.built.get(key, 0) + 1
        chosen = self.suite.attacks(norm, eps, num_classes=num_classes, steps=steps, seed=seed, registry=registry)
        return [(label, self._counted(attack, key)) for label, attack in chosen]

    def _counted(self, attack: Attack, key: tuple[Norm, float, int]) -> Any:
        def call(model, x, y):
            self.calls[key] = self.calls.get(key, 0) + 1
            return attack(model, x, y)

        return call


def test_more_restarts_continues_from_the_baseline_instead_of_running_the_suite_again(base_model):
    """Per norm the suite runs once at --steps (the baseline); more-restarts adds only its restarts, on the points
    the baseline left robust, and finds what the suite followed by the restarts found."""
    from robustft.evaluation import evaluate_model
    from robustft.sanity import MORE_RESTARTS, _Restarts

    data, reg = digits(), registries()
    suite = CountingSuite(reg.suites.get("e-at"))
    eps = {Norm.LINF: Fraction(1, 10), Norm.L1: Fraction(2)}
    checks = check_model(
        base_model,
        data,
        [Norm.L1, Norm.LINF],
        eps,
        registries=reg,
        suite=suite,
        surrogate=linear_surrogate(data, CPU),
        n_ex=N,
        steps=4,
        batch_size=20,
        name="base",
    )
    for norm in (Norm.L1, Norm.LINF):
        assert suite.built[(norm, float(eps[norm]), 4)] == 1, suite.built  # the baseline, once
        assert suite.built[(norm, float(eps[norm]), 8)] == 1  # more-steps
    assert suite.built[(Norm.LINF, 1.0, 4)] == 1  # linf-radius-1
    assert sum(suite.built.values()) == 5

    # The same numbers as the suite followed by the restarts, the way the check used to run them.
    class SuiteThenRestarts(EvalSuite):
        name = "e-at then restarts"

        def attacks(self, norm, eps_, **kwargs):
            return [*reg.suites.get("e-at").attacks(norm, eps_, **kwargs), *_Restarts(suite, "apgd").attacks(norm, eps_, **kwargs)]

    for norm in (Norm.L1, Norm.LINF):
        once = CountingSuite(reg.suites.get("e-at"))  # the attack calls of one run of the suite
        evaluate_model(base_model, data, [norm], eps, suite=once, registries=reg, n_ex=N, steps=4, batch_size=20)
        assert suite.calls[(norm, float(eps[norm]), 4)] == once.calls[(norm, float(eps[norm]), 4)] > 0
        whole = evaluate_model(base_model, data, [norm], eps, suite=SuiteThenRestarts(), registries=reg, n_ex=N, steps=4, batch_size=20)
        found = next(c for c in checks if c.check == "more-restarts" and c.norm == norm.value)
        assert round(found.values["more_restarts"] * N) == int(whole.per_point[norm.value].sum()), (norm, found.detail)
        assert f"{MORE_RESTARTS} more random restarts" in found.detail


def test_a_start_mask_of_the_wrong_length_is_one_sentence(base_model):
    from robustft.errors import BadInputError
    from robustft.evaluation import evaluate_model

    with pytest.raises(BadInputError, match="has 3 entries; the evaluation has 10 points"):
        evaluate_model(
            base_model,
            digits(),
            [Norm.LINF],
            {Norm.LINF: Fraction(1, 10)},
            suite=registries().suites.get("e-at"),
            registries=registries(),
            n_ex=10,
            steps=1,
            start={Norm.LINF: torch.ones(3, dtype=torch.bool)},
        )
