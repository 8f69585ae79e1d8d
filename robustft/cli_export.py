"""``robustft export RUN --out DIR``: a finished run as a Hugging Face model folder (robustft/export.py).

Registered on the root app by robustft/cli.py. Cheap to import: the library (and torch) load when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def export(
    run: Annotated[Path, typer.Argument(help="The finished run folder to export.", show_default=False)],
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write model.safetensors, config.json and README.md into.", show_default=False)
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Write into a non-empty --out, overwriting the three exported files (nothing else is touched).")
    ] = False,
    name: Annotated[Optional[str], typer.Option(help="The model's name in the model card (default: the --out folder's name).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")] = False,
) -> None:
    """Export a finished, evaluated run as a Hugging Face model folder (weights, config, model card)."""
    from robustft.export import export_run
    from robustft.norms import Norm
    from robustft.report import listing_table, print_json, stdout_console

    result = export_run(run, out, force=force, name=name)
    if json_output:
        print_json(result.as_dict())
        return
    config, evaluation = result.config, result.config["evaluation"]
    norms = [Norm.parse(n) for n in config["threat_model"]["union"]]
    typer.echo(f"Exported {run} to {result.out}: {', '.join(result.files)}.")
    columns = ["clean", *(f"{n.label} ({config['threat_model']['eps'][n.value]})" for n in norms), "union"]
    values = [evaluation["clean"], *(evaluation["robust"][n.value] for n in norms), evaluation["union"]]
    title = f"Accuracy (%) in its model card, from {result.evaluation.name}: {evaluation['points']} points, suite {evaluation['suite']}"
    stdout_console().print(listing_table(title, columns, [[f"{100 * v:.1f}" for v in values]]))
