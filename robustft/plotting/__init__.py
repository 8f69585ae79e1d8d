"""Figures of robustft's results (``robustft plot``; needs ``pip install 'robustft[plot]'``).

Every plot function takes plain data (the dicts ``robustft eval --json`` and ``robustft compare --json`` print, or
the records of a run's ``metrics.jsonl``) and returns a :class:`Plot`: the matplotlib figure, the numbers it
draws (``plot.data``) and ``plot.save(stem)``, which writes ``<stem>.png`` and ``<stem>.svg``. The loaders in
:mod:`robustft.plotting.sources` read those dicts from run and comparison folders. matplotlib is imported only
when a figure is drawn. See docs/plots.md.
"""

from __future__ import annotations

from robustft.plotting.bars import accuracy_bars
from robustft.plotting.curves import radius_curves
from robustft.plotting.sources import (
    load_comparison,
    load_comparison_file,
    load_evaluation_file,
    load_run_evaluation,
    load_training,
)
from robustft.plotting.style import Plot, output_stem
from robustft.plotting.tradeoff import COSTS, cost_tradeoff, union_bars
from robustft.plotting.training import training_curves, training_series

__all__ = [
    "COSTS",
    "Plot",
    "accuracy_bars",
    "cost_tradeoff",
    "load_comparison",
    "load_comparison_file",
    "load_evaluation_file",
    "load_run_evaluation",
    "load_training",
    "output_stem",
    "radius_curves",
    "training_curves",
    "training_series",
    "union_bars",
]
