"""lp-ball geometry for attacks: norms, projections onto ball ∩ box, steepest-ascent steps.

Every function works on a batch ``(N, ...)`` at once, on any device, without per-sample Python loops.
On an accelerator none reads a tensor on the host (no ``.item()``, ``bool(tensor)`` or ``nonzero``), so
attacks built on them never wait for the GPU inside their step loops; on the CPU, where a read waits for
nothing, the l1 step and projection read one count per call to sort less (:func:`_largest_first`).
Perturbations ``delta`` are taken around clean points ``x`` in ``[0, 1]``; a radius ``eps`` is a float or a
per-sample tensor of shape ``(N,)``.

The per-norm step classes (:class:`LinfStep`, :class:`L2Step`, :class:`L1Step`, found with
:func:`step_for`) follow MadryLab robustness's ``attack_steps.py``: one small object per norm with
``step`` (the steepest-ascent direction scaled to a step size), ``project`` and ``random_init``. They hold
no state, so APGD, PGD and MSD can share them.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import Tensor

from robustft.norms import Norm

Radius = float | Tensor

__all__ = [
    "L1Step",
    "L2Step",
    "LinfStep",
    "LpStep",
    "Radius",
    "check_in_ball_and_box",
    "l0_norms",
    "lp_norms",
    "project",
    "project_l1_box",
    "step_for",
]


def _per_sample(value: Radius, ref: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``value`` (a float, a one-element tensor or an ``(N,)`` tensor) shaped ``(N, 1, ..., 1)`` like ``ref``."""
    dtype = dtype or ref.dtype
    shape = (ref.shape[0],) + (1,) * (ref.dim() - 1)
    if not isinstance(value, Tensor):
        return torch.full(shape, float(value), device=ref.device, dtype=dtype)
    t = value.to(device=ref.device, dtype=dtype)
    if t.numel() == 1:
        return t.reshape(()).expand(shape)
    if t.numel() != ref.shape[0]:
        raise ValueError(f"expected one value per sample ({ref.shape[0]}), got shape {tuple(t.shape)}")
    return t.reshape(shape)


def _wide_dtype(t: Tensor) -> torch.dtype:
    """float64 where the device has it: the l1 solve and norm checks need its precision (MPS lacks it)."""
    return torch.float32 if t.device.type == "mps" else torch.float64


def lp_norms(delta: Tensor, norm: Norm, *, dtype: torch.dtype | None = None) -> Tensor:
    """Per-sample lp norms of ``delta`` (shape ``(N,)``), computed in ``dtype`` (default: ``delta``'s)."""
    flat = delta.flatten(1)
    if dtype is not None:
        flat = flat.to(dtype)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    if norm is Norm.L2:
        return torch.linalg.vector_norm(flat, ord=2, dim=1)
    if norm is Norm.L1:
        return flat.abs().sum(dim=1)
    raise ValueError(f"unsupported norm {norm!r}")


def l0_norms(delta: Tensor) -> Tensor:
    """Per-sample number of non-zero coordinates (float, shape ``(N,)``)."""
    return (delta.flatten(1) != 0).sum(dim=1).to(delta.dtype if delta.is_floating_point() else torch.float32)


def _into_box(delta: Tensor, x: Tensor) -> Tensor:
    # Coordinates already in the box keep their exact value (feasible points are fixed points); the others
    # become clamp(x + d) - x, and x + that, evaluated in x's dtype, lands in [0, 1] because rounding is
    # monotone and cannot push a sum whose exact value is in [0, 1] outside it.
    moved = x + delta
    inside = (moved >= 0.0) & (moved <= 1.0)
    return torch.where(inside, delta, moved.clamp(0.0, 1.0) - x)


def _reads_are_free(t: Tensor) -> bool:
    """Whether the host may read ``t``'s values for free: on the CPU no device has queued work to wait for."""
    return t.device.type == "cpu"


def _largest_first(values: Tensor, count: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, values in descending order with their indices, at least the ``count`` largest of each row.

    On the CPU, ``topk`` of the largest count in the batch: the l1 step and projection need only the few
    hundred largest of CIFAR's 3,072 (6,144) values, and ``topk`` finds them several times faster than a
    sort (``benchmarks/l1_geometry.py``). Elsewhere a full sort, since reading the count would make the host
    wait for the device. Both give the same values in the same order, up to the order of equal values.
    """
    if _reads_are_free(values):
        k = min(int(count.max()), values.shape[1]) if count.numel() else 0
        return values.topk(k, dim=1, largest=True, sorted=True)
    return values.sort(dim=1, descending=True)


def project_l1_box(delta: Tensor, x: Tensor, eps: Radius) -> Tensor:
    """Euclidean projection of ``delta`` onto ``{d : ||d||_1 <= eps, 0 <= x + d <= 1}``, exactly.

    The minimiser of ``||d - v||_2`` over that set is box-constrained soft-thresholding,
    ``d_i = sign(v_i) * clip(|v_i| - lam, 0, c_i)``, with ``c_i = 1 - x_i`` where ``v_i > 0`` and ``x_i``
    where ``v_i < 0``, and ``lam >= 0`` the smallest value with ``sum_i clip(|v_i| - lam, 0, c_i) <= eps``.
    That sum is a non-increasing piecewise-linear function of ``lam`` with kinks at ``|v_i| - c_i`` (the
    coordinate leaves its cap) and ``|v_i|`` (it reaches zero). Sorting the ``2d`` kinks and accumulating the
    slopes gives the function at every kink; ``lam`` is then found on the segment where it crosses ``eps``
    by linear interpolation. Only ``lam >= 0`` matters, so every kink at or below 0 merges into one kink at
    0; only the positive kinks are sorted, and an attack's sparse l1 iterates have few (on the CPU they are
    taken with ``topk``, see :func:`_largest_first`). The solve runs in float64 (where the device has it):
    float32 was measured too; it stays within 3e-6 of the exact projection for perturbations of size 1,
    but its error grows with the magnitude of ``delta`` (6e-5 at 1e3, 2e-2 at 1e6) and it saved only 20%.
    A final rescale by ``min(1, eps / ||d||_1)`` guards against rounding leaving the ball.
    """
    shape, out_dtype = delta.shape, delta.dtype
    work = _wide_dtype(delta)
    v = delta.flatten(1).to(work)
    xf = x.flatten(1).to(work)
    n, d = v.shape
    radius = _per_sample(eps, v, work).reshape(n)

    u = v.abs()
    cap = torch.where(v > 0, 1.0 - xf, torch.where(v < 0, xf, torch.zeros_like(xf))).clamp_min(0.0)
    # f(lam) = sum_i clip(u_i - lam, 0, cap_i): constant cap_i below u_i - cap_i, slope -1 up to u_i, then 0.
    # On [0, inf), f starts from f(0) = sum_i min(u_i, cap_i) with slope minus the number of coordinates whose
    # linear piece has begun at 0 (u_i > 0 and u_i - cap_i <= 0); one leading kink at 0 carries that slope,
    # and after it come the positive kinks in ascending order (zero ones there add no slope).
    leave_cap = (u - cap).clamp_min(0.0)
    every_kink = torch.cat((leave_cap, u), dim=1)
    largest, order = _largest_first(every_kink, (every_kink > 0).sum(dim=1))
    positive, order = largest.flip(1), order.flip(1)
    slope_at_zero = -((leave_cap == 0) & (u > 0)).sum(dim=1, keepdim=True).to(work)
    change = torch.where(positive > 0, torch.where(order < d, -1.0, 1.0).to(work), torch.zeros_like(positive))
    kinks = torch.cat((torch.zeros_like(radius)[:, None], positive), dim=1)
    # Slope of f just right of each kink (integers): reaching a cap lowers it by one, reaching zero raises it.
    slope = torch.cat((slope_at_zero, change), dim=1).cumsum(dim=1)
    rise = slope[:, :-1] * (kinks[:, 1:] - kinks[:, :-1])
    f_zero = torch.minimum(u, cap).sum(dim=1, keepdim=True)
    f_at = torch.cat((f_zero, f_zero + rise.cumsum(dim=1)), dim=1)

    below = f_at <= radius[:, None]
    below[:, -1] = True  # f is 0 at the last kink; rounding must not hide that
    k = below.to(torch.int8).argmax(dim=1)  # first kink where f <= eps
    prev = (k - 1).clamp_min(0)[:, None]
    f_prev = f_at.gather(1, prev).squeeze(1)
    p_prev = kinks.gather(1, prev).squeeze(1)
    s_prev = slope.gather(1, prev).squeeze(1).clamp_max(-1.0)  # f falls on the crossing segment, so slope <= -1
    lam = p_prev + (radius - f_prev) / s_prev
    lam = torch.where(k == 0, torch.zeros_like(lam), lam).clamp_min(0.0)

    out = torch.sign(v) * torch.minimum((u - lam[:, None]).clamp_min(0.0), cap)
    l1 = out.abs().sum(dim=1)
    scale = torch.where(l1 > radius, radius / l1.clamp_min(torch.finfo(work).tiny), torch.ones_like(l1))
    out = out * scale[:, None]
    # Rounding to float32 may nudge a capped coordinate by half an ulp; settle it inside the box.
    return _into_box(out.to(out_dtype).reshape(shape), x)


def project(delta: Tensor, x: Tensor, norm: Norm, eps: Radius) -> Tensor:
    """A perturbation near ``delta`` with ``x + result`` in ``[0, 1]`` and ``||result||_p <= eps``.

    * l-inf: clamp to ``[-eps, eps]``, then into the box (this is the exact projection onto ball ∩ box);
    * l2: radial rescale onto the ball, then clamp ``x + delta`` into ``[0, 1]`` (as APGD does; clamping
      only shrinks each coordinate, so the result stays in the ball);
    * l1: the exact Euclidean projection onto ball ∩ box, :func:`project_l1_box` (projecting onto the ball
      and then clipping would spend budget on coordinates the box then clips away).

    ``x + result`` evaluated in ``x``'s dtype lies in ``[0, 1]``; the norm holds up to float rounding, see
    :func:`check_in_ball_and_box`.
    """
    norm = Norm.parse(norm)
    if norm is Norm.LINF:
        r = _per_sample(eps, delta)
        return _into_box(torch.maximum(torch.minimum(delta, r), -r), x)
    if norm is Norm.L2:
        work = _wide_dtype(delta)
        length = lp_norms(delta, Norm.L2, dtype=work)
        radius = _per_sample(eps, length[:, None], work).reshape(-1)
        scale = torch.where(length > radius, radius / length.clamp_min(torch.finfo(work).tiny), torch.ones_like(length))
        return _into_box(delta * _per_sample(scale.to(delta.dtype), delta), x)
    if norm is Norm.L1:
        return project_l1_box(delta, x, eps)
    raise ValueError(f"unsupported norm {norm!r}")


def check_in_ball_and_box(x_adv: Tensor, x: Tensor, norm: Norm, eps: Radius, rtol: float = 1e-5, atol: float = 1e-6) -> Tensor:
    """Per-sample booleans: ``x_adv`` is finite, in ``[0, 1]`` exactly and within ``eps`` of ``x`` in lp.

    The box is checked without tolerance. The norm is computed in float64 on the exact difference of the
    stored values and compared with ``eps * (1 + rtol) + atol``: attacks build points in float32, where
    ``x + delta`` rounds each coordinate by up to half a unit in the last place (about 6e-8 near 1) and a
    float32 norm of ``d`` coordinates carries a relative error of order ``log2(d) * 6e-8``; the defaults
    leave room for that and for nothing a real attack could exploit.
    """
    norm = Norm.parse(norm)
    work = _wide_dtype(x_adv)
    a = x_adv.flatten(1).to(work)
    diff = a - x.flatten(1).to(work)
    finite = torch.isfinite(a).all(dim=1)
    in_box = ((a >= 0.0) & (a <= 1.0)).all(dim=1)
    radius = _per_sample(eps, a, work).reshape(-1)
    in_ball = lp_norms(diff, norm) <= radius * (1.0 + rtol) + atol
    return finite & in_box & in_ball


# ------------------------------------------------------------------------------------------ step classes


class LpStep(abc.ABC):
    """Steepest-ascent steps, projection and random starts for one lp norm (stateless).

    ``step(grad, step_size, ...)`` returns the increment ``step_size * u`` where ``u`` maximises
    ``<grad, u>`` over the unit ball of the norm (a sparse variant for l1); ``project(delta, x, eps)`` maps a
    perturbation into ball ∩ box; ``random_init(x, eps, generator)`` draws a starting perturbation in it.
    ``step_size`` and ``eps`` are floats or per-sample tensors.
    """

    norm: ClassVar[Norm]

    @abc.abstractmethod
    def direction(self, grad: Tensor, **kwargs: object) -> Tensor:
        """The steepest-ascent direction for ``grad``, of unit norm (zero where ``grad`` is zero)."""

    def step(self, grad: Tensor, step_size: Radius, **kwargs: object) -> Tensor:
        return _per_sample(step_size, grad) * self.direction(grad, **kwargs)

    def project(self, delta: Tensor, x: Tensor, eps: Radius) -> Tensor:
        return project(delta, x, self.norm, eps)

    @abc.abstractmethod
    def random_init(self, x: Tensor, eps: Radius, generator: torch.Generator | None = None) -> Tensor:
        """A random perturbation in ball ∩ box around ``x``."""


class LinfStep(LpStep):
    """l-inf: the sign of the gradient; random start uniform in the cube."""

    norm = Norm.LINF

    def direction(self, grad: Tensor, **kwargs: object) -> Tensor:
        return grad.sign()

    def random_init(self, x: Tensor, eps: Radius, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2.0 - 1.0
        return self.project(noise * _per_sample(eps, x), x, eps)


class L2Step(LpStep):
    """l2: the gradient divided by its l2 norm; random start on the sphere (as AutoAttack's APGD)."""

    norm = Norm.L2

    def direction(self, grad: Tensor, **kwargs: object) -> Tensor:
        length = lp_norms(grad, Norm.L2)
        return grad / _per_sample(length + 1e-12, grad)

    def random_init(self, x: Tensor, eps: Radius, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.project(self.direction(noise) * _per_sample(eps, x), x, eps)


class L1Step(LpStep):
    """l1: the sign of the gradient on its largest coordinates, scaled to l1 length one.

    The true l1 steepest-ascent direction moves a single coordinate, which makes progress slow; the
    "Mind the box" l1-APGD (Croce & Hein, 2021) takes the top ``topk`` fraction of coordinates by
    ``|grad|`` instead. With ``x_adv`` given and ``skip_box_edge=True`` (MSD's and SLIDE's variant),
    coordinates that sit within ``edge_gap`` of the box boundary the gradient points at are never chosen,
    since a step there would be clipped away.
    """

    norm = Norm.L1

    def direction(
        self,
        grad: Tensor,
        *,
        topk: Radius = 0.05,
        x_adv: Tensor | None = None,
        skip_box_edge: bool = False,
        edge_gap: float = 0.0,
        **kwargs: object,
    ) -> Tensor:
        g = grad
        if skip_box_edge:
            if x_adv is None:
                raise ValueError("skip_box_edge needs x_adv")
            blocked = ((g > 0) & (x_adv >= 1.0 - edge_gap)) | ((g < 0) & (x_adv <= edge_gap))
            g = g.masked_fill(blocked, 0.0)
        flat = g.flatten(1).abs()
        n, d = flat.shape
        frac = _per_sample(topk, flat).reshape(n)
        # Threshold at the (1 - topk) quantile of |grad|, the value at ascending index floor((1 - topk) d), i.e.
        # the rank-th largest; ties at the threshold are all kept (as AutoAttack).
        rank = d - ((1.0 - frac) * d).clamp(0, d - 1).long()
        threshold = _largest_first(flat, rank)[0].gather(1, rank[:, None] - 1)
        signs = torch.where(flat >= threshold, g.flatten(1).sign(), torch.zeros_like(flat))
        count = signs.abs().sum(dim=1, keepdim=True)
        return (signs / (count + 1e-10)).reshape(grad.shape)

    def random_init(self, x: Tensor, eps: Radius, generator: torch.Generator | None = None) -> Tensor:
        # Gaussian noise projected onto ball ∩ box, as AutoAttack's l1-APGD starts.
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.project(noise, x, eps)


_STEPS: dict[Norm, LpStep] = {Norm.LINF: LinfStep(), Norm.L2: L2Step(), Norm.L1: L1Step()}


def step_for(norm: Norm | str) -> LpStep:
    """The shared step object of ``norm``."""
    return _STEPS[Norm.parse(norm)]
