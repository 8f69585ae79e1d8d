"""`robustft eval --radii`: robust accuracy against the radius, attacking from the largest radius down.

A linear two-class model with an exact attack (it finds the smallest perturbation that flips a point, when
there is one in the ball) makes the sweep's shortcut checkable: for such an attack robustness is monotone in the
radius, so the sweep must give exactly the accuracies of separate evaluations at each radius, while attacking
only the points it has to.
"""

from __future__ import annotations

import json
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from helpers import cli_in_process
from torch import nn
from torch.utils.data import TensorDataset

from robustft.contracts import Attack, AttackResult, EvalSuite
from robustft.errors import BadInputError
from robustft.evaluation import InvalidPointsError, evaluate_model
from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft.sweep import parse_sweep_items, sweep_radii

pytestmark = pytest.mark.usefixtures("one_thread")
DIM, N = 16, 60
OVERSHOOT = 1.001  # the exact attack steps this much past the decision boundary


# ------------------------------------------------------------------------------------------ parsing


def test_a_sweep_is_count_radii_from_start_to_stop_exactly():
    sweeps = parse_sweep_items(["inf=1/255:12/255:12", "1=2:16:8"])
    assert list(sweeps) == [Norm.LINF, Norm.L1]  # display order
    assert sweeps[Norm.LINF] == tuple(Fraction(k, 255) for k in range(1, 13))
    assert sweeps[Norm.L1] == tuple(Fraction(k) for k in range(2, 17, 2))
    assert sweep_radii(Fraction(1, 10), Fraction(3, 10), 3) == (Fraction(1, 10), Fraction(2, 10), Fraction(3, 10))


@pytest.mark.parametrize(
    "item,message",
    [
        ("inf=1/255:12/255", "is not of the form NORM=START:STOP:COUNT"),
        ("inf:1:2:3", "is not of the form NORM=START:STOP:COUNT"),
        ("inf=1/255:12/255:x", "is not a whole number"),
        ("inf=1/255:12/255:1", "from 2 to 100 radii, got 1"),
        ("inf=1/255:12/255:1000", "from 2 to 100 radii, got 1000"),
        ("inf=12/255:1/255:4", "from a smaller to a larger positive radius"),
        ("inf=abc:1:4", "is not a number"),
        ("inf=0:1:4", "must be positive"),
        ("3=1:2:3", "Unknown norm"),
    ],
)
def test_malformed_sweeps_are_one_sentence(item, message):
    with pytest.raises(BadInputError, match=message):
        parse_sweep_items([item])


def test_a_norm_swept_twice_is_refused():
    with pytest.raises(BadInputError, match="given twice"):
        parse_sweep_items(["inf=0.1:0.2:2", "linf=0.1:0.3:2"])


def test_the_cli_refuses_a_malformed_sweep_before_any_compute(capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "eval", "--model", "digits-cnn-linf", "--radii", "inf=8/255")
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: Radius sweep 'inf=8/255' is not of the form NORM=START:STOP:COUNT")
    assert len(result.stderr.strip().splitlines()) == 1


# --------------------------------------------------------------------------- an exact attack on a linear model


class TwoClassLinear(nn.Module):
    """Class 1 where ``w . x + b > 0``."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w), b

    def margin(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.margin(x)
        return torch.stack([-f / 2, f / 2], dim=1)


def smallest_flip(model: TwoClassLinear, x: torch.Tensor, norm: Norm) -> tuple[torch.Tensor, torch.Tensor]:
    """(radius r*, unit direction) of the smallest perturbation reaching the boundary (the box never binds here)."""
    w = model.w.detach()
    f = model.margin(x).detach()
    towards = -torch.sign(f)[:, None]
    if norm is Norm.LINF:
        return f.abs() / w.abs().sum(), towards * torch.sign(w)[None]
    return f.abs() / w.norm(), towards * (w / w.norm())[None]


class Exact(Attack):
    """Returns the point just past the boundary when it is in the ball, else the furthest point towards it."""

    def __init__(self, norm: Norm, eps: float, calls: list) -> None:
        self.norm, self.eps, self.calls = norm, eps, calls

    def perturb(self, model, x, y):
        self.calls.append((self.eps, len(x)))
        r_star, direction = smallest_flip(model, x, self.norm)
        step = torch.clamp(OVERSHOOT * r_star, max=self.eps)
        x_adv = x + (step[:, None] * direction).view_as(x)
        return AttackResult(x_adv=x_adv, loss=torch.zeros(len(x)), success=model(x_adv).argmax(1) != y, forward_passes=2, backward_passes=0)


class ExactSuite(EvalSuite):
    name = "exact"

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def attacks(self, norm, eps, *, num_classes, steps, seed, registry):
        return [("exact", Exact(norm, eps, self.calls))]


def linear_problem(seed: int = 0) -> tuple[TwoClassLinear, SimpleNamespace]:
    g = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(N, 1, 4, 4, generator=g)
    model = TwoClassLinear(torch.randn(DIM, generator=g), 0.0)
    middle = model.margin(x).detach().sort().values[N // 2 - 1 : N // 2 + 1]
    model.b = -float(middle.mean())  # half the points in each class, none on the boundary
    y = (model.margin(x) > 0).long()
    return model, SimpleNamespace(name="linear", num_classes=2, test=lambda: TensorDataset(x.detach(), y))


RADII = {Norm.LINF: [Fraction(k, 100) for k in (1, 2, 3, 5, 8)], Norm.L2: [Fraction(k, 100) for k in (5, 10, 15, 20, 25)]}


def _evaluate(model, data, suite, norms, eps, **kw):
    return evaluate_model(
        model, data, norms, eps, suite=suite, registries=registries(), n_ex=N, batch_size=16, device=torch.device("cpu"), **kw
    )


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_the_sweep_equals_separate_evaluations_for_an_exact_attack(norm):
    model, data = linear_problem()
    suite = ExactSuite()
    curve = _evaluate(model, data, suite, [], {}, sweep={norm: RADII[norm]}).curves[norm]
    assert curve.radii == tuple(RADII[norm])
    separate = [_evaluate(model, data, ExactSuite(), [norm], {norm: r}).robust[norm] for r in RADII[norm]]
    assert list(curve.robust) == separate
    assert separate == sorted(separate, reverse=True) and separate[0] > separate[-1]  # the sweep has something to show
    assert curve.invalid == 0


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2])
def test_the_sweep_attacks_only_the_points_it_has_to(norm):
    """At each smaller radius only the points broken at the larger one whose adversarial point does not already
    lie in the smaller ball are attacked; the count follows from each point's smallest flipping radius r*."""
    model, data = linear_problem()
    x, _ = data.test().tensors
    r_star = smallest_flip(model, x, norm)[0].double()
    suite = ExactSuite()
    curve = _evaluate(model, data, suite, [], {}, sweep={norm: RADII[norm]}).curves[norm]

    found = torch.full((N,), float("inf"), dtype=torch.float64)  # size of each point's adversarial perturbation
    expected = {}
    candidates = torch.ones(N, dtype=torch.bool)  # every point is clean-correct: labels come from the model
    for radius in sorted(RADII[norm], reverse=True):
        r = float(radius)
        settled = candidates & (found <= r * (1 + 1e-5) + 1e-6)
        attacked = candidates & ~settled
        expected[radius] = int(attacked.sum())
        broken_now = attacked & (r_star < r)
        found = torch.where(broken_now, torch.clamp(OVERSHOOT * r_star, max=r), found)
        candidates = settled | broken_now
    assert dict(zip(curve.radii, curve.attacked)) == expected
    assert sum(curve.attacked) < len(RADII[norm]) * N  # the work the shortcut saves
    attacked_per_radius: dict[float, int] = {}
    for eps, size in suite.calls:
        attacked_per_radius[eps] = attacked_per_radius.get(eps, 0) + size
    assert attacked_per_radius == {float(r): k for r, k in expected.items() if k}


def test_the_sweep_uses_the_main_evaluation_and_documents_its_assumption():
    """An attack that only works at the radius of --eps: what the main evaluation broke there is broken at every
    larger sweep radius (certain: the ball is larger), and the points it broke are attacked again at a smaller one,
    where this attack fails. The assumption (robust at a larger radius, robust at a smaller one) is visible: no
    point robust at 2 eps is attacked at eps / 2."""
    eps = Fraction(3, 100)

    class OnlyAtEps(Exact):
        def perturb(self, model, x, y):
            if self.eps == float(eps):
                return super().perturb(model, x, y)
            self.calls.append((self.eps, len(x)))
            return AttackResult(
                x_adv=x.clone(),
                loss=torch.zeros(len(x)),
                success=torch.zeros(len(x), dtype=torch.bool),
                forward_passes=0,
                backward_passes=0,
            )

    class Suite(ExactSuite):
        def attacks(self, norm, eps, **_):
            return [("only-at-eps", OnlyAtEps(norm, eps, self.calls))]

    model, data = linear_problem()
    result = _evaluate(model, data, Suite(), [Norm.LINF], {Norm.LINF: eps}, sweep={Norm.LINF: [eps / 2, eps, 2 * eps]})
    broken = N - round(result.robust[Norm.LINF] * N)
    assert 0 < broken < N
    curve = result.curves[Norm.LINF]
    assert list(curve.robust) == [1.0, result.robust[Norm.LINF], result.robust[Norm.LINF]]
    assert list(curve.attacked) == [broken, 0, N - broken]


def test_points_outside_the_ball_in_a_sweep_are_projected_counted_and_refused_under_strict():
    class Overshooting(Exact):
        def perturb(self, model, x, y):
            r_star, direction = smallest_flip(model, x, self.norm)
            x_adv = x + (1.5 * self.eps * direction).view_as(x)  # half again the radius: outside the ball
            return AttackResult(
                x_adv=x_adv, loss=torch.zeros(len(x)), success=torch.ones(len(x), dtype=torch.bool), forward_passes=1, backward_passes=0
            )

    class Suite(ExactSuite):
        def attacks(self, norm, eps, **_):
            return [("overshoot", Overshooting(norm, eps, self.calls))]

    model, data = linear_problem()
    radii = {Norm.LINF: RADII[Norm.LINF][:3]}
    curve = _evaluate(model, data, Suite(), [], {}, sweep=radii).curves[Norm.LINF]
    assert curve.invalid == sum(curve.attacked) > 0  # every point returned was outside its ball and was counted
    exact = _evaluate(model, data, ExactSuite(), [], {}, sweep=radii).curves[Norm.LINF]
    assert curve.robust == exact.robust  # projected onto the ball, the points are the exact attack's furthest ones
    with pytest.raises(InvalidPointsError, match="outside the l-inf ball"):
        _evaluate(model, data, Suite(), [], {}, sweep=radii, strict=True)


def test_the_curve_is_in_the_result_and_its_json():
    model, data = linear_problem()
    result = _evaluate(model, data, ExactSuite(), [Norm.LINF], {Norm.LINF: Fraction(3, 100)}, sweep={"inf": ["1/100", "0.05"]})
    row = result.as_dict()
    assert set(row["curves"]) == {"inf"}
    curve = row["curves"]["inf"]
    assert curve["radii"] == ["0.01", "0.05"] and len(curve["robust"]) == 2
    assert curve["robust"][0] >= row["robust"]["inf"] >= curve["robust"][1]  # 0.03 lies between the two radii
    assert "curves" not in _evaluate(model, data, ExactSuite(), [Norm.LINF], {Norm.LINF: Fraction(3, 100)}).as_dict()


# ------------------------------------------------------------------------------------- the real suite, the CLI


def test_eval_radii_on_the_cli(base_model, capsys, monkeypatch):
    result = cli_in_process(
        capsys,
        monkeypatch,
        "eval",
        "--model",
        "digits-cnn-linf",
        "--norms",
        "inf",
        "--radii",
        "inf=1/20:3/20:3",
        "--radii",
        "1=1:3:2",
        "--n-ex",
        "24",
        "--steps",
        "3",
        "--json",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert list(row["curves"]) == ["inf", "1"]
    inf = row["curves"]["inf"]
    assert inf["radii"] == ["0.05", "0.1", "0.15"]
    assert inf["robust"] == sorted(inf["robust"], reverse=True) and inf["robust"][0] <= row["clean"]
    # the largest radius attacks every correct point but those the table's own evaluation at 0.1 already broke
    assert inf["attacked_points"][-1] == round(row["robust"]["inf"] * row["n"])
    assert inf["robust"][1] <= row["robust"]["inf"]  # at the table's radius the curve never shows more robustness
    assert row["curves"]["1"]["radii"] == ["1", "3"]
    table = cli_in_process(
        capsys,
        monkeypatch,
        "eval",
        "--model",
        "digits-cnn-linf",
        "--norms",
        "inf",
        "--radii",
        "inf=1/20:3/20:3",
        "--n-ex",
        "24",
        "--steps",
        "3",
        "--quiet",
        env={"COLUMNS": "200"},
    )
    assert table.returncode == 0, table.stderr
    assert "against the radius" in table.stdout and "0.05:" in table.stdout


def test_a_two_process_sweep_equals_the_single_process_one(base_model, monkeypatch):
    """Under torchrun the sweep's batches are dealt over the ranks and its per-point results summed: the curves
    are those of one process, exactly (the batches being the same)."""
    import os
    import subprocess
    import sys

    from robustft.evaluation import evaluate

    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    args = [
        "--model",
        "digits-cnn-linf",
        "--norms",
        "inf",
        "--radii",
        "inf=1/20:3/20:3",
        "--n-ex",
        "40",
        "--steps",
        "3",
        "--batch-size",
        "10",
        "--seed",
        "3",
        "--json",
        "--quiet",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    multi = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "robustft", "eval", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert multi.returncode == 0, multi.stderr[-3000:]
    (two,) = json.loads(multi.stdout)["results"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers run
    try:
        single = evaluate(
            model="digits-cnn-linf",
            norms="inf",
            radii={"inf": ["1/20", "2/20", "3/20"]},
            n_ex=40,
            steps=3,
            batch_size=10,
            seed=3,
            device="cpu",
        )
    finally:
        torch.set_num_threads(threads)
    (one,) = json.loads(json.dumps(single.as_dict()))["results"]
    for row in (one, two):
        row.pop("seconds")
        row["curves"]["inf"].pop("seconds")
    assert one == two
    assert one["curves"]["inf"]["attacked_points"][0] < one["curves"]["inf"]["attacked_points"][-1]


def test_points_the_sweep_breaks_within_the_eps_ball_are_broken_in_the_table_too():
    """An attack that fails at --eps in the table's evaluation and works later: the sweep, attacking again
    at --eps the points broken at a larger radius, breaks some of them with verified points; they are broken at
    --eps, so the table counts them, and the table and the curve agree there."""
    eps = Fraction(3, 100)

    class FirstCallAtEpsFails(Exact):
        """Fails at --eps until it has been called at another radius (that is: in the table's evaluation)."""

        tried = False

        def perturb(self, model, x, y):
            if self.eps != float(eps):
                FirstCallAtEpsFails.tried = True
            elif not FirstCallAtEpsFails.tried:
                self.calls.append((self.eps, len(x)))
                return AttackResult(
                    x_adv=x.clone(),
                    loss=torch.zeros(len(x)),
                    success=torch.zeros(len(x), dtype=torch.bool),
                    forward_passes=0,
                    backward_passes=0,
                )
            return super().perturb(model, x, y)

    class Suite(ExactSuite):
        def attacks(self, norm, eps, **_):
            return [("flaky", FirstCallAtEpsFails(norm, eps, self.calls))]

    model, data = linear_problem()
    alone = _evaluate(model, data, Suite(), [Norm.LINF], {Norm.LINF: eps})
    assert alone.robust[Norm.LINF] == 1.0  # the table's own attack broke nothing
    FirstCallAtEpsFails.tried = False
    exact = _evaluate(model, data, ExactSuite(), [Norm.LINF], {Norm.LINF: eps}).robust[Norm.LINF]
    swept = _evaluate(model, data, Suite(), [Norm.LINF], {Norm.LINF: eps}, sweep={Norm.LINF: [eps, 2 * eps]})
    assert swept.robust[Norm.LINF] == exact < 1.0  # lowered to what the exact attack gives
    assert swept.curves[Norm.LINF].robust[0] == swept.robust[Norm.LINF]
    assert swept.union <= swept.robust[Norm.LINF]
