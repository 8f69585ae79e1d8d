"""Grouped bars of clean, per-norm and union accuracy, one bar per model in each group (E-AT paper, Fig. 1)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from robustft.norms import DISPLAY_ORDER
from robustft.plotting.style import Plot, new_figure, series_colour, styled, value_and_error


def row_label(row: Mapping[str, Any]) -> str:
    """A row's name: ``label``, else ``name`` (robustft eval), else ``+ <scheme>`` (robustft compare)."""
    if row.get("label"):
        return str(row["label"])
    if row.get("name"):
        return str(row["name"])
    return f"+ {row.get('scheme', '?')}"


def accuracy_bars(
    rows: Sequence[Mapping[str, Any]],
    *,
    eps: Mapping[str, str] | None = None,
    title: str | None = None,
) -> Plot:
    """Clean, per-norm and union accuracy of each row side by side, in %.

    ``rows`` are evaluation results as ``robustft eval --json`` writes them (``{"name", "clean", "robust":
    {"inf": ..., "2": ..., "1": ...}, "union", "eps", "n", "dataset"}``) or scheme rows of ``robustft compare
    --json`` (``{"scheme", "clean": {"mean", "std"}, ...}``, drawn with their standard deviation as error
    bars); a value may be a number or ``{"mean", "std"}``. ``eps`` (``{"inf": "8/255", ...}``) labels the
    groups with their radii; by default the first row's. ``data`` holds per row the heights and error bars drawn.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("accuracy_bars needs at least one row")
    present = {key for row in rows for key in (row.get("robust") or {})}
    norms = [n for n in DISPLAY_ORDER if n.value in present]
    eps = dict(eps if eps is not None else rows[0].get("eps") or {})
    groups = ["clean", *(n.value for n in norms), "union"]
    labels = ["clean", *(f"{n.label}\n{eps[n.value]}" if n.value in eps else n.label for n in norms), "union"]

    series = []
    for row in rows:
        robust = row.get("robust") or {}
        pairs = [
            value_and_error(row.get("clean")),
            *(value_and_error(robust.get(n.value)) for n in norms),
            value_and_error(row.get("union")),
        ]
        series.append(
            {
                "name": row_label(row),
                "values": [None if math.isnan(v) else 100 * v for v, _ in pairs],  # None: the row has no such number
                "errors": [100 * e if e is not None else None for _, e in pairs],
            }
        )

    figure = new_figure(1, height=2.4)
    ax = figure.axes[0]
    width = 0.8 / len(series)
    with styled():
        for i, s in enumerate(series):
            offsets = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
            has_error = any(e is not None for e in s["errors"])
            ax.bar(
                offsets,
                [math.nan if v is None else v for v in s["values"]],
                width,
                label=s["name"],
                color=series_colour(i),
                yerr=[e or 0.0 for e in s["errors"]] if has_error else None,
                capsize=1.5,
                error_kw={"elinewidth": 0.7, "capthick": 0.7},
            )
        ax.set_xticks(range(len(groups)), labels)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.grid(axis="x", visible=False)
        first = rows[0]
        where = f" on {first['n']} {first['dataset']} test points" if first.get("n") and first.get("dataset") else ""
        ax.set_title(title or f"Accuracy{where}")
        figure.legend(loc="outside lower center", ncols=min(len(series), 2))
    return Plot(
        figure, {"kind": "bars", "unit": "%", "groups": groups, "eps": {k: eps[k] for k in groups if k in eps}, "series": series}, "bars"
    )
