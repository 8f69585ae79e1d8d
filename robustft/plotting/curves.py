"""Robust accuracy against the radius, one panel per norm, one line per model (``robustft eval --radii``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from robustft.norms import DISPLAY_ORDER, Norm, parse_radius
from robustft.plotting.bars import row_label
from robustft.plotting.style import Plot, new_figure, series_colour, series_marker, styled

#: 8-bit images: l-inf radii are usually multiples of 1/255, and read best written so.
PIXEL_LEVELS = 255


def _on_pixel_grid(radii: Sequence[Fraction]) -> bool:
    return all((r * PIXEL_LEVELS).denominator == 1 for r in radii)


def _pixel_ticks(ax: Any, largest: float) -> None:
    """Ticks at whole multiples of 1/255, labelled ``k/255``."""
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    step = max(1, math.ceil(largest * PIXEL_LEVELS / 5))
    ax.xaxis.set_major_locator(MultipleLocator(step / PIXEL_LEVELS))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: "0" if abs(v) < 1e-12 else f"{round(v * PIXEL_LEVELS)}/{PIXEL_LEVELS}"))


def radius_curves(models: Sequence[Mapping[str, Any]], *, title: str | None = None) -> Plot:
    """Robust accuracy (%) against the radius, for each norm any model was swept in.

    ``models`` are evaluation results as ``robustft eval --radii ... --json`` writes them: ``{"name", "clean",
    "curves": {"inf": {"radii": ["1/255", ...], "robust": [0.93, ...]}, ...}}`` (a Python caller may give radii
    as numbers). Where a model has ``clean``, its line starts at radius 0 with the clean accuracy, which is the
    robust accuracy at radius 0. ``data["panels"]`` holds per norm the points drawn for each model.
    """
    models = [m for m in models if m.get("curves")]
    if not models:
        raise ValueError("radius_curves needs at least one model with curves")
    norms = [n for n in DISPLAY_ORDER if any(n.value in m["curves"] for m in models)]
    figure = new_figure(len(norms))
    panels = []
    with styled():
        for ax, norm in zip(figure.axes, norms):
            lines = []
            exact: list[Fraction] = []
            for i, model in enumerate(models):
                curve = model["curves"].get(norm.value)
                if not curve:
                    continue
                radii = [parse_radius(r) for r in curve["radii"]]
                exact.extend(radii)
                xs, ys = [float(r) for r in radii], [100 * float(a) for a in curve["robust"]]
                if model.get("clean") is not None:
                    xs, ys = [0.0, *xs], [100 * float(model["clean"]), *ys]
                name = row_label(model)
                ax.plot(xs, ys, marker=series_marker(i), color=series_colour(i), label=name)
                lines.append({"name": name, "radii": xs, "robust": ys})
            if norm is Norm.LINF and _on_pixel_grid(exact):
                _pixel_ticks(ax, max(float(r) for r in exact))
            right = max(float(r) for r in exact)
            ax.set_xlim(-0.03 * right, 1.03 * right)  # room for the markers at 0 and at the largest radius
            ax.set_ylim(-3, 103)  # room for markers at 0% and 100%, which the limits would cut in half
            ax.set_xlabel(f"{norm.label} radius \u03b5 (images in [0, 1])")
            ax.set_ylabel(f"{norm.label} robust accuracy (%)")
            panels.append({"norm": norm.value, "lines": lines})
        first = models[0]
        where = f" on {first['n']} {first['dataset']} test points" if first.get("n") and first.get("dataset") else ""
        figure.suptitle(title or f"Robust accuracy against the radius{where}")
        legend = {}  # every model once, whichever panels it is in
        for ax in figure.axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                legend.setdefault(label, handle)
        figure.legend(list(legend.values()), list(legend), loc="outside lower center", ncols=min(len(legend), 2))
    return Plot(figure, {"kind": "curves", "unit": "%", "panels": panels}, "curves")
