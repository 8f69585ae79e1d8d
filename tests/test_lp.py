"""Properties of robustft.lp: projections land in ball and box, the l1 projection is exact, steps."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from helpers import count_host_syncs
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import robustft.lp
from robustft.lp import (
    L1Step,
    L2Step,
    LinfStep,
    check_in_ball_and_box,
    l0_norms,
    lp_norms,
    project,
    project_l1_box,
    step_for,
)
from robustft.norms import Norm

NORMS = (Norm.LINF, Norm.L2, Norm.L1)


@st.composite
def batches(draw: st.DrawFn, max_dim: int = 20, huge: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x in [0,1], delta, per-sample eps) with a few pixels exactly at 0 or 1 and deltas up to 1e6."""
    n = draw(st.integers(1, 4))
    d = draw(st.integers(1, max_dim))
    unit = st.floats(0.0, 1.0, width=32) | st.sampled_from([0.0, 1.0])
    x = draw(hnp.arrays(np.float32, (n, d), elements=unit))
    scale = draw(st.sampled_from([1e-3, 0.1, 1.0, 10.0] + ([1e3, 1e6] if huge else [])))
    delta = draw(hnp.arrays(np.float32, (n, d), elements=st.floats(-1.0, 1.0, width=32))) * np.float32(scale)
    eps = draw(hnp.arrays(np.float64, (n,), elements=st.floats(1e-3, 30.0)))
    return torch.from_numpy(x), torch.from_numpy(delta), torch.from_numpy(eps)


def reference_l1_box(delta: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Slow float64 reference: bisection on the soft threshold, one sample at a time."""
    v, xf = delta.double().flatten(1), x.double().flatten(1)
    u = v.abs()
    cap = torch.where(v > 0, 1.0 - xf, torch.where(v < 0, xf, torch.zeros_like(xf)))
    rows = []
    for i in range(v.shape[0]):

        def mass(lam: float) -> float:
            return float(torch.minimum((u[i] - lam).clamp_min(0.0), cap[i]).sum())  # noqa: B023 - used in this iteration only

        lo, hi = 0.0, float(u[i].max()) if u.shape[1] else 0.0
        if mass(0.0) <= float(eps[i]):
            hi = 0.0
        else:
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if mass(mid) > float(eps[i]) else (lo, mid)
        rows.append(torch.sign(v[i]) * torch.minimum((u[i] - hi).clamp_min(0.0), cap[i]))
    return torch.stack(rows).reshape(delta.shape)


@settings(max_examples=150, deadline=None)
@given(data=batches(), norm=st.sampled_from(NORMS))
def test_project_lands_in_ball_and_box(data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], norm: Norm) -> None:
    x, delta, eps = data
    out = project(delta, x, norm, eps)
    assert out.dtype == delta.dtype and out.shape == delta.shape
    x_adv = x + out
    assert bool(check_in_ball_and_box(x_adv, x, norm, eps).all())
    # The float64 check, spelled out: box exactly, ball up to the documented float32 tolerance.
    assert bool(((x_adv >= 0) & (x_adv <= 1)).all())
    assert bool((lp_norms(x_adv.double() - x.double(), norm) <= eps * (1 + 1e-5) + 1e-6).all())


@settings(max_examples=150, deadline=None)
@given(data=batches(huge=False))
def test_l1_projection_matches_slow_reference(data: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    x, delta, eps = data
    fast = project_l1_box(delta, x, eps).double()
    slow = reference_l1_box(delta, x, eps)
    assert torch.allclose(fast, slow, atol=1e-5, rtol=0)


@settings(max_examples=60, deadline=None)
@given(data=batches(max_dim=12))
def test_l1_projection_is_the_closest_feasible_point(data: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """No random feasible point is closer to delta than the projection (optimality, independently of the formula)."""
    x, delta, eps = data
    proj = project_l1_box(delta, x, eps).double()
    best = (proj - delta.double()).norm(dim=1)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = project_l1_box(proj.float() + 0.05 * torch.randn(proj.shape, generator=gen), x, eps).double()
        assert bool(((other - delta.double()).norm(dim=1) >= best - 1e-5).all())


@settings(max_examples=100, deadline=None)
@given(data=batches(huge=False), norm=st.sampled_from(NORMS))
def test_projection_is_idempotent(data: tuple[torch.Tensor, torch.Tensor, torch.Tensor], norm: Norm) -> None:
    x, delta, eps = data
    once = project(delta, x, norm, eps)
    twice = project(once, x, norm, eps)
    assert torch.allclose(once, twice, atol=1e-6, rtol=1e-5)


def test_feasible_points_are_fixed_points() -> None:
    x = torch.tensor([[0.0, 0.5, 1.0, 0.25]])
    delta = torch.tensor([[0.1, -0.2, -0.3, 0.05]])
    for norm in NORMS:
        assert torch.equal(project(delta, x, norm, 10.0), delta)


def test_l1_projection_uses_the_box_not_project_then_clip() -> None:
    # Mass pushed against the box must move to free coordinates: project-then-clip would waste it.
    x = torch.tensor([[1.0, 0.0, 0.5]])
    delta = torch.tensor([[5.0, 1.0, 0.2]])
    out = project_l1_box(delta, x, 1.0)
    assert out[0, 0] == 0.0  # already at the top of the box
    assert torch.allclose(out.abs().sum(), torch.tensor(1.0))
    assert torch.allclose(out, torch.tensor([[0.0, 0.9, 0.1]]), atol=1e-6)


def test_per_sample_and_float_radius_agree() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 4, 4, generator=gen)
    delta = torch.randn(3, 1, 4, 4, generator=gen)
    for norm in NORMS:
        assert torch.allclose(project(delta, x, norm, 0.7), project(delta, x, norm, torch.full((3,), 0.7)))


def test_check_rejects_points_outside() -> None:
    x = torch.full((2, 4), 0.5)
    inside = x + torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert check_in_ball_and_box(inside, x, Norm.L1, 0.1).tolist() == [True, True]
    outside = x + torch.tensor([[0.2, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.6]])
    assert check_in_ball_and_box(outside, x, Norm.L1, 0.1).tolist() == [False, False]
    assert check_in_ball_and_box(outside, x, Norm.LINF, 1.0).tolist() == [True, False]  # 1.1 leaves the box
    nan = inside.clone()
    nan[0, 0] = float("nan")
    assert check_in_ball_and_box(nan, x, Norm.LINF, 1.0).tolist() == [False, True]


def test_norms_and_l0() -> None:
    delta = torch.tensor([[3.0, -4.0, 0.0]])
    assert lp_norms(delta, Norm.L1).item() == 7.0
    assert lp_norms(delta, Norm.L2).item() == 5.0
    assert lp_norms(delta, Norm.LINF).item() == 4.0
    assert l0_norms(delta).item() == 2.0


@pytest.mark.parametrize("norm", NORMS)
def test_steps_have_unit_norm_and_ascend(norm: Norm) -> None:
    gen = torch.Generator().manual_seed(1)
    grad = torch.randn(4, 3, 5, 5, generator=gen)
    stepper = step_for(norm)
    step = stepper.step(grad, 0.3)
    assert torch.allclose(lp_norms(step, norm), torch.full((4,), 0.3), atol=1e-5)
    assert bool(((step * grad).flatten(1).sum(1) > 0).all())


def test_l1_step_keeps_the_top_fraction() -> None:
    grad = torch.tensor([[1.0, -5.0, 3.0, 0.5, -2.0, 0.1, 0.2, 4.0, -0.3, 0.05]])
    step = L1Step().step(grad, 1.0, topk=0.2)
    assert torch.allclose(step, torch.tensor([[0.0, -0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0]]))
    # Per-sample fractions: the first sample moves 1 coordinate, the second all of them.
    both = L1Step().step(grad.repeat(2, 1), 1.0, topk=torch.tensor([0.1, 1.0]))
    assert (both[0] != 0).sum() == 1 and (both[1] != 0).sum() == 10


def test_l1_step_skips_blocked_box_edges() -> None:
    grad = torch.tensor([[5.0, -4.0, 3.0, 1.0]])
    x_adv = torch.tensor([[1.0, 0.0, 0.5, 0.5]])  # the two largest gradients push out of the box
    step = L1Step().step(grad, 1.0, topk=0.5, x_adv=x_adv, skip_box_edge=True)
    assert torch.allclose(step, torch.tensor([[0.0, 0.0, 0.5, 0.5]]))
    plain = L1Step().step(grad, 1.0, topk=0.5)
    assert torch.allclose(plain, torch.tensor([[0.5, -0.5, 0.0, 0.0]]))


@pytest.mark.parametrize("cls", [LinfStep, L2Step, L1Step])
def test_random_init_is_feasible_and_seeded(cls: type) -> None:
    x = torch.rand(5, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    stepper = cls()
    a = stepper.random_init(x, 0.5, torch.Generator().manual_seed(7))
    b = stepper.random_init(x, 0.5, torch.Generator().manual_seed(7))
    assert torch.equal(a, b)
    assert bool(check_in_ball_and_box(x + a, x, stepper.norm, 0.5).all())
    assert bool((a != 0).any())


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_cifar_sized_batches_stay_far_inside_the_tolerance(scale: float) -> None:
    """With d = 3072 float32 rounding adds well under 1e-6 relative to the radius (the check allows 1e-5)."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(8, 3, 32, 32, generator=gen)
    delta = torch.randn(8, 3, 32, 32, generator=gen) * scale
    for norm, eps in ((Norm.L1, 12.0), (Norm.L2, 0.5), (Norm.LINF, 8 / 255)):
        x_adv = x + project(delta, x, norm, eps)
        assert bool(check_in_ball_and_box(x_adv, x, norm, eps, rtol=1e-6, atol=0.0).all())


def test_projections_and_steps_never_read_tensors_on_the_host() -> None:
    """No scalar reads, ``nonzero`` or boolean-mask indexing inside the geometry: on a GPU each would stall the attack."""
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(6, 3, 8, 8, generator=gen)
    delta = torch.randn(6, 3, 8, 8, generator=gen)
    eps = torch.rand(6, generator=gen) + 0.1
    with count_host_syncs() as syncs:
        for norm in NORMS:
            stepper = step_for(norm)
            project(delta, x, norm, eps)
            stepper.step(delta, eps, **({"topk": eps * 0.5} if norm is Norm.L1 else {}))
            stepper.random_init(x, eps, gen)
            check_in_ball_and_box(x + project(delta, x, norm, 0.5), x, norm, 0.5)
            lp_norms(delta, norm)
        l0_norms(delta)
    assert not syncs


def test_l1_projection_is_exact_on_sparse_cifar_sized_perturbations() -> None:
    """The case l1-APGD produces: most coordinates zero or inside the box (their kinks all move to 0)."""
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(3, 3072, generator=gen)
    x[:, :100] = 1.0  # pixels on the box edge
    delta = torch.randn(3, 3072, generator=gen) * 0.3 * (torch.rand(3, 3072, generator=gen) < 0.1)
    eps = torch.tensor([0.5, 4.0, 12.0], dtype=torch.float64)
    fast = project_l1_box(delta, x, eps).double()
    assert torch.allclose(fast, reference_l1_box(delta, x, eps), atol=1e-6, rtol=0)


def _both_paths(compute):  # noqa: ANN001, ANN202 - a test helper
    """``compute()`` on the CPU's path (``topk`` of a count read on the host) and on an accelerator's (a sort)."""
    results = []
    for free in (True, False):
        with mock.patch.object(robustft.lp, "_reads_are_free", lambda t, free=free: free):
            results.append(compute())
    return results


@settings(max_examples=150, deadline=None)
@given(data=batches())
def test_the_l1_projection_is_the_same_on_the_cpu_and_accelerator_paths(data: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    x, delta, eps = data
    cpu, accelerator = _both_paths(lambda: project_l1_box(delta, x, eps))
    assert torch.equal(cpu, accelerator)


@pytest.mark.parametrize("density", [0.0, 0.01, 0.1, 1.0])
def test_the_l1_projection_paths_agree_on_cifar_sized_iterates(density: float) -> None:
    """Sparse iterates (few positive kinks, where the CPU's ``topk`` pays), dense ones and none at all, with
    rows of different sparsity in one batch and pixels on the box edge."""
    gen = torch.Generator().manual_seed(7)
    x = torch.rand(4, 3072, generator=gen)
    x[:, :200] = 1.0
    keep = torch.rand(4, 3072, generator=gen) < density * torch.tensor([[1.0], [0.5], [0.1], [0.0]])
    delta = torch.randn(4, 3072, generator=gen) * 0.3 * keep
    eps = torch.tensor([0.5, 4.0, 12.0, 1.0], dtype=torch.float64)
    cpu, accelerator = _both_paths(lambda: project_l1_box(delta, x, eps))
    assert torch.equal(cpu, accelerator)
    assert torch.allclose(cpu.double(), reference_l1_box(delta, x, eps), atol=1e-6, rtol=0)


def test_the_l1_step_is_the_same_on_the_cpu_and_accelerator_paths() -> None:
    """Per-sample fractions (as APGD's sparsity update sets them), ties at the threshold and a zero gradient."""
    gen = torch.Generator().manual_seed(8)
    grad = torch.randn(5, 3, 32, 32, generator=gen)
    grad[1] = grad[1].round()  # many ties
    grad[2] = 0.0
    x_adv = torch.rand(5, 3, 32, 32, generator=gen)
    topk = torch.tensor([0.05, 0.2, 0.05, 1.0, 1e-4])
    cpu, accelerator = _both_paths(lambda: L1Step().step(grad, 12.0, topk=topk))
    assert torch.equal(cpu, accelerator)
    moved = (cpu != 0).flatten(1).sum(dim=1)
    assert moved[0] == 154 and moved[1] >= 615 and moved[2] == 0 and moved[3] == 3072 and moved[4] == 1
    edge = {"x_adv": x_adv, "skip_box_edge": True, "edge_gap": 0.1}
    cpu, accelerator = _both_paths(lambda: L1Step().step(grad, 12.0, topk=0.05, **edge))
    assert torch.equal(cpu, accelerator)
