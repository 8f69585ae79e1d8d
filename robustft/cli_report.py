"""``robustft report RUN``: one self-contained HTML page of a run (robustft/html_report.py).

Registered on the root app by robustft/cli.py. Cheap to import: the library (and torch, matplotlib) load when
it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def report(
    run: Annotated[
        Optional[Path], typer.Argument(help="The run folder to report on (default: the latest run).", show_default=False)
    ] = None,
    compare: Annotated[
        Optional[Path],
        typer.Option("--compare", help="Also show this robustft compare folder (its --out): its table and figures.", show_default=False),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="The HTML file to write, or a folder to write report.html into (default: <run>/report.html).", show_default=False
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """One self-contained HTML page of a run: evaluation, validity, figures, timings, configuration, environment."""
    from robustft.html_report import write_report
    from robustft.report import print_json
    from robustft.rundir import relative

    result = write_report(run, out=out, compare=compare)
    if json_output:
        print_json(result.as_dict())
        return
    assert result.path is not None
    typer.echo(relative(result.path))
