"""Radius sweeps: robust accuracy against the radius of one norm's ball (``robustft eval --radii``).

A sweep is written ``NORM=START:STOP:COUNT`` (``inf=1/255:12/255:12``): COUNT radii evenly spaced from
START to STOP, both included, computed exactly with :class:`fractions.Fraction` (``1/255, 2/255, ...,
12/255`` above). START and STOP are parsed like ``--eps`` radii (:func:`robustft.norms.parse_radius`:
decimals or fractions, never ``eval``). The attacks themselves run in :mod:`robustft.evaluation`; this
module holds the specification, the result (:class:`Curve`) and its table, and imports no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

from robustft.errors import BadInputError
from robustft.norms import DISPLAY_ORDER, Norm, format_radius, parse_radius, sort_norms

if TYPE_CHECKING:  # rendering needs rich only
    from rich.table import Table

#: The most radii one sweep may have: each radius costs an attack on the points still in question.
MAX_SWEEP_RADII = 100
EXAMPLE = "inf=1/255:12/255:12"


def sweep_radii(start: Fraction, stop: Fraction, count: int) -> tuple[Fraction, ...]:
    """``count`` radii evenly spaced from ``start`` to ``stop``, both included, exactly."""
    if not 2 <= count <= MAX_SWEEP_RADII:
        raise BadInputError(f"A radius sweep has from 2 to {MAX_SWEEP_RADII} radii, got {count}.")
    if not 0 < start < stop:
        raise BadInputError(
            f"A radius sweep goes from a smaller to a larger positive radius, got {format_radius(start)} to {format_radius(stop)}."
        )
    step = (stop - start) / (count - 1)
    return tuple(start + i * step for i in range(count))


def parse_sweep_items(items: Iterable[str]) -> dict[Norm, tuple[Fraction, ...]]:
    """Parse repeated ``--radii NORM=START:STOP:COUNT`` items into each norm's radii, ascending."""
    sweeps: dict[Norm, tuple[Fraction, ...]] = {}
    for item in items:
        norm_text, sep, spec = str(item).partition("=")
        parts = spec.split(":")
        if not sep or not norm_text.strip() or len(parts) != 3 or not all(p.strip() for p in parts):
            raise BadInputError(f"Radius sweep {item!r} is not of the form NORM=START:STOP:COUNT, for example {EXAMPLE}.")
        norm = Norm.parse(norm_text)
        if norm in sweeps:
            raise BadInputError(f"The {norm.label} sweep is given twice (--radii {norm.value}=...): give each norm once.")
        count = parts[2].strip()
        if not count.isdigit():
            raise BadInputError(f"The count {count!r} of radius sweep {item!r} is not a whole number.")
        sweeps[norm] = sweep_radii(parse_radius(parts[0]), parse_radius(parts[1]), int(count))
    return {n: sweeps[n] for n in sort_norms(sweeps)}


def normalise_sweeps(sweeps: Mapping[Any, Iterable[Any]] | None) -> dict[Norm, tuple[Fraction, ...]]:
    """``{norm: radii}`` from Python (any spelling of norms and radii), each norm's radii ascending and distinct."""
    out: dict[Norm, tuple[Fraction, ...]] = {}
    for key, values in (sweeps or {}).items():
        radii = tuple(sorted({parse_radius(v) for v in values}))
        if not radii:
            raise BadInputError(f"The {Norm.parse(key).label} sweep has no radius.")
        if len(radii) > MAX_SWEEP_RADII:
            raise BadInputError(f"A radius sweep has at most {MAX_SWEEP_RADII} radii, got {len(radii)}.")
        out[Norm.parse(key)] = radii
    return {n: out[n] for n in sort_norms(out)}


@dataclass
class Curve:
    """Robust accuracy of one model in one norm at each radius of a sweep (radii ascending).

    ``attacked`` counts, per radius, the points the attacks ran on: a point robust at a larger radius is
    not attacked again, nor one whose adversarial point from a larger radius already lies in the smaller
    ball (see :func:`robustft.evaluation.evaluate_model`).
    """

    norm: Norm
    radii: tuple[Fraction, ...]
    robust: tuple[float, ...]
    attacked: tuple[int, ...]
    invalid: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "radii": [format_radius(r) for r in self.radii],
            "robust": list(self.robust),
            "attacked_points": list(self.attacked),
            "invalid_points": self.invalid,
            "seconds": self.seconds,
        }


def curve_table(rows: Sequence[tuple[str, Mapping[Norm, Curve]]], n: int, dataset: str) -> Table:
    """Robust accuracy (%) per radius, one row per model and norm (the numbers ``robustft plot curves`` draws)."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"Robust accuracy (%) against the radius on {n} {dataset} test points",
        title_justify="left",
        caption="points attacked at each radius in brackets (the rest were settled at a larger radius)",
        caption_justify="left",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("model", no_wrap=True)
    table.add_column("norm")
    table.add_column("radius: robust accuracy")
    for name, curves in rows:
        for norm in (n_ for n_ in DISPLAY_ORDER if n_ in curves):
            curve = curves[norm]
            cells = "  ".join(f"{format_radius(r)}: {100 * a:.1f} ({k})" for r, a, k in zip(curve.radii, curve.robust, curve.attacked))
            table.add_row(Text(name), norm.label, Text(cells + (f"  * {curve.invalid} invalid" if curve.invalid else "")))
    return table
