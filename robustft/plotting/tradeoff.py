"""A comparison of schemes over seeds (``robustft compare``): union accuracy per scheme, and against its cost."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from robustft.plotting.bars import row_label
from robustft.plotting.style import Plot, new_figure, series_colour, series_marker, styled, value_and_error


def _seeds(row: Mapping[str, Any]) -> int:
    union = row.get("union")
    return len(union.get("values") or []) if isinstance(union, Mapping) else 1


def _base_line(ax: Any, base: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The base model's union accuracy as a dashed line (it has no training cost)."""
    if not base or base.get("union") is None:
        return None
    value = 100 * float(base["union"])
    name = row_label(base)
    ax.axhline(value, color="#000000", linestyle="--", linewidth=0.8, label="base model" if name == "base" else f"base model: {name}")
    return {"name": row_label(base), "union": value}


def union_bars(schemes: Sequence[Mapping[str, Any]], *, base: Mapping[str, Any] | None = None, title: str | None = None) -> Plot:
    """Union robust accuracy (%) per scheme, mean with the standard deviation over seeds as error bars.

    ``schemes`` are the scheme rows of ``robustft compare --json`` (``{"scheme", "union": {"mean", "std",
    "values"}, ...}``; a plain number is drawn without an error bar); ``base`` is the base model's evaluation
    (``{"name", "union"}``), drawn as a dashed line. ``data`` holds the bars and error bars drawn.
    """
    schemes = list(schemes)
    if not schemes:
        raise ValueError("union_bars needs at least one scheme")
    figure = new_figure(1, height=2.3)
    ax = figure.axes[0]
    bars = []
    with styled():
        for i, row in enumerate(schemes):
            mean, std = value_and_error(row.get("union"))
            ax.bar(
                i,
                100 * mean,
                0.7,
                yerr=None if std is None else 100 * std,
                color=series_colour(i),
                capsize=2,
                error_kw={"elinewidth": 0.8, "capthick": 0.8},
            )
            bars.append({"name": row_label(row), "union": 100 * mean, "error": None if std is None else 100 * std, "seeds": _seeds(row)})
        reference = _base_line(ax, base)
        ax.set_xticks(range(len(schemes)), [b["name"] for b in bars], rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("union robust accuracy (%)")
        ax.grid(axis="x", visible=False)
        seeds = max(b["seeds"] for b in bars)
        ax.set_title(title or f"Union robust accuracy, mean \u00b1 std over {seeds} seed(s)")
        if reference:
            ax.legend(loc="upper left")
    return Plot(figure, {"kind": "union", "unit": "%", "bars": bars, "base": reference}, "union")


DEFAULT_COST = "seconds_per_epoch"
#: The costs a comparison records per scheme, and their axis labels.
COSTS = {
    "seconds_per_epoch": "training time per epoch (s)",
    "passes_per_image": "forward + backward passes per training image",
}


def cost_tradeoff(
    schemes: Sequence[Mapping[str, Any]],
    *,
    base: Mapping[str, Any] | None = None,
    cost: str = DEFAULT_COST,
    title: str | None = None,
) -> Plot:
    """Union robust accuracy (%) against the training cost per epoch: one point per scheme, error bars over seeds
    in both directions, the cost/robustness trade-off (E-AT paper, Table 12).

    ``schemes`` are the scheme rows of ``robustft compare --json`` (``{"scheme", "union", "seconds_per_epoch",
    "passes_per_image"}``, each a number or ``{"mean", "std"}``); ``cost`` picks the x axis (:data:`COSTS`);
    ``base`` as in :func:`union_bars`. ``data`` holds the points drawn.
    """
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {cost!r}")
    schemes = list(schemes)
    if not schemes:
        raise ValueError("cost_tradeoff needs at least one scheme")
    figure = new_figure(1, height=2.5)
    ax = figure.axes[0]
    points = []
    with styled():
        for i, row in enumerate(schemes):
            union, union_err = value_and_error(row.get("union"))
            seconds, seconds_err = value_and_error(row.get(cost))
            name = row_label(row)
            ax.errorbar(
                [seconds],
                [100 * union],
                xerr=seconds_err,
                yerr=None if union_err is None else 100 * union_err,
                fmt=series_marker(i),
                color=series_colour(i),
                capsize=2,
                elinewidth=0.8,
                label=name,
            )
            points.append(
                {
                    "name": name,
                    "cost": seconds,
                    "cost_error": seconds_err,
                    "union": 100 * union,
                    "error": None if union_err is None else 100 * union_err,
                }
            )
        reference = _base_line(ax, base)
        ax.set_xlim(left=0)
        ax.set_ylim(-3, 103)  # room for the markers at the limits
        ax.set_xlabel(COSTS[cost])
        ax.set_ylabel("union robust accuracy (%)")
        ax.set_title(title or "Robustness against cost")
        figure.legend(loc="outside lower center", ncols=2)
    return Plot(figure, {"kind": "cost", "unit": "%", "cost": cost, "points": points, "base": reference}, "cost")
