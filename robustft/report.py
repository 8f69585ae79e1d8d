"""Rendering results: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from robustft.norms import DISPLAY_ORDER, format_radius

if TYPE_CHECKING:  # the evaluator imports torch; rendering does not need it
    from robustft.evaluation import EvalReport
    from robustft.geometry import Geometry

_stdout: Console | None = None


def stdout_console() -> Console:
    global _stdout
    if _stdout is None:
        probe = Console(highlight=False)
        # Pipes and files get room for the whole table; a terminal keeps its own width.
        _stdout = probe if probe.is_terminal else Console(highlight=False, width=120)
    return _stdout


def print_json(data: Any) -> None:
    """JSON on stdout, nothing else: scripts parse it."""
    stdout_console().file.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _delta(value: float, base: float) -> str:
    diff = 100 * (value - base)
    colour = "green" if diff > 0.05 else "red" if diff < -0.05 else "dim"
    return f" [{colour}]({diff:+.1f})[/{colour}]"


def eval_table(report: EvalReport) -> Table:
    """Like Table 2 of the E-AT paper: clean, l-inf, l2, l1, union in %, deltas against the base row."""
    first = report.results[0]
    norms = [n for n in DISPLAY_ORDER if n in first.robust]
    title = f"Robust accuracy (%) on {first.n} {first.dataset} test points, suite {first.suite}"
    runs = [r.run for r in report.results if r.run]
    notes = [f"fine-tuned: {runs[0]}; deltas against the base model"] if runs else []
    flagged = [(row.name, norm, row.invalid[norm]) for row in report.results for norm in norms if row.invalid.get(norm)]
    if flagged:
        notes.append(
            "* invalid adversarial points, projected onto their ball and [0, 1] before counting: "
            + ", ".join(f"{name} {norm.label} {count}" for name, norm, count in flagged)
        )
    caption = "\n".join(notes) or None
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("model", no_wrap=True)
    table.add_column("clean", justify="right")
    for norm in norms:
        table.add_column(f"{norm.label} ({format_radius(first.eps[norm])})", justify="right")
    table.add_column("union", justify="right")
    for i, row in enumerate(report.results):
        base = first if (report.has_base and i > 0) else None
        cells = [row.name, _pct(row.clean) + (_delta(row.clean, base.clean) if base else "")]
        for norm in norms:
            mark = "*" if row.invalid.get(norm) else ""
            cells.append(_pct(row.robust[norm]) + mark + (_delta(row.robust[norm], base.robust[norm]) if base else ""))
        cells.append(_pct(row.union) + (_delta(row.union, base.union) if base else ""))
        table.add_row(*cells)
    return table


def geometry_table(geo: Geometry) -> Table:
    table = Table(title=f"l2 balls implied by l1 {geo.eps_1:g} and l-inf {geo.eps_inf:.6g} in d = {geo.dim}", title_justify="left")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("l2 radius inside the union (Prop. 3.1)", f"{geo.l2_radius_union:.4f}")
    table.add_row("l2 radius inside the convex hull (Thm. 3.1)", f"{geo.l2_radius_hull:.4f}")
    if geo.eps_2 is not None:
        table.add_row("l2 radius of the threat model", f"{geo.eps_2:g}")
        verdict = "yes: training on l1 and l-inf suffices (E-AT)" if geo.covers_l2 else "no: train on l2 as well"
        table.add_row("hull covers the l2 ball", verdict)
    return table


def listing_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> Table:
    """A plain table of names and descriptions; cells are text, never rich markup (``robustft[zoos]`` stays)."""
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    return table
