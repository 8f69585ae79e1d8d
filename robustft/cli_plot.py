"""``robustft plot``: figures (PNG and SVG) of evaluations, comparisons and training runs.

Thin: parse the options, call :mod:`robustft.plotting.figures`, print the files written (or, with
``--print-json``, the files and the numbers drawn). Cheap to import: matplotlib and the plotting code load
only when a sub-command runs, so ``robustft --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from robustft.plotting import Plot

app = typer.Typer(
    name="plot",
    help="Draw evaluations, comparisons and training runs as PNG and SVG files (needs: pip install 'robustft[plot]').",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

OutOption = Annotated[
    Optional[str],
    typer.Option(
        "--out",
        help="Folder for the files, or a file stem (fig/bars writes fig/bars.png and fig/bars.svg); default: beside the input (<run>/plots/).",
        show_default=False,
    ),
]
PrintJsonOption = Annotated[bool, typer.Option("--print-json", help="Print the files written and the numbers drawn as JSON on stdout.")]


def _render(plots: list[Plot], print_json: bool) -> None:
    from robustft.report import print_json as emit
    from robustft.rundir import relative

    if print_json:
        emit({"files": [str(f) for p in plots for f in p.files], "plots": {p.name: p.data for p in plots}})
        return
    for plot in plots:
        for path in plot.files:
            typer.echo(relative(path))


@app.command()
def bars(
    run: Annotated[
        Optional[Path],
        typer.Option(help="Run folder whose stored evaluation to draw (robustft eval --run RUN stores it); default: the latest run."),
    ] = None,
    json_file: Annotated[
        Optional[Path], typer.Option("--json", help="An evaluation file from robustft eval --json, instead of a run.")
    ] = None,
    out: OutOption = None,
    print_json: PrintJsonOption = False,
) -> None:
    """Clean, per-norm and union accuracy of the base and the fine-tuned model side by side (grouped bars)."""
    from robustft.plotting.figures import plot_bars

    _render(plot_bars(run=run, json_file=json_file, out=out), print_json)


@app.command()
def curves(
    run: Annotated[
        Optional[list[Path]], typer.Option("--run", help="Run folder whose stored evaluation has a radius sweep; repeatable.")
    ] = None,
    json_file: Annotated[
        Optional[list[Path]], typer.Option("--json", help="An evaluation file from robustft eval --radii ... --json; repeatable.")
    ] = None,
    out: OutOption = None,
    print_json: PrintJsonOption = False,
) -> None:
    """Robust accuracy against the radius per norm, one line per model (from robustft eval --radii)."""
    from robustft.plotting.figures import plot_curves

    _render(plot_curves(runs=run or [], json_files=json_file or [], out=out), print_json)


@app.command()
def compare(
    folder: Annotated[Optional[Path], typer.Option("--dir", help="A robustft compare folder (its --out).")] = None,
    json_file: Annotated[
        Optional[Path], typer.Option("--json", help="A comparison file from robustft compare --json, instead of a folder.")
    ] = None,
    cost: Annotated[Optional[str], typer.Option(help="The cost axis: seconds_per_epoch (default) or passes_per_image.")] = None,
    out: OutOption = None,
    print_json: PrintJsonOption = False,
) -> None:
    """Union accuracy per scheme (mean ± std over seeds), and against the training cost per epoch."""
    from robustft.plotting.figures import plot_compare

    _render(plot_compare(folder=folder, json_file=json_file, out=out, cost=cost), print_json)


@app.command()
def training(
    run: Annotated[Optional[Path], typer.Option(help="Run folder; default: the latest run.")] = None,
    out: OutOption = None,
    print_json: PrintJsonOption = False,
) -> None:
    """Loss, robust training error per norm and, for E-AT, the norms' sampling probabilities over a run."""
    from robustft.plotting.figures import plot_training

    _render(plot_training(run=run, out=out), print_json)
