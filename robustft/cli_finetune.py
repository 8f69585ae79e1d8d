"""``robustft finetune`` and ``robustft compare``: their fine-tuning options are generated from
robustft.config.FinetuneConfig (robustft/cli_settings.py); each declares only the options of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from robustft.cli_settings import JsonOption, LogOption, QuietOption, progress_reporter, with_settings
from robustft.config import RUN

COMPARISON, EVALUATION = "Comparison", "Evaluation"


@with_settings("finetune")
def finetune(
    settings: dict[str, Any],
    config: Annotated[
        Optional[Path], typer.Option(help="TOML file of settings; command-line options override it.", rich_help_panel=RUN)
    ] = None,
    resume: Annotated[
        Optional[Path],
        typer.Option(help="Continue this run folder from its last good checkpoint (with its config.toml).", rich_help_panel=RUN),
    ] = None,
    log: LogOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune a robust model with a scheme (E-AT by default) and write a run folder."""
    from robustft.report import print_json
    from robustft.rundir import relative
    from robustft.training import finetune as run_finetune

    result = run_finetune(config_file=config, resume=resume, progress=progress_reporter(quiet, json_output), log=log or (), **settings)
    from robustft.distributed import is_main

    if not is_main():  # under torchrun, rank 0 alone reports
        return
    if json_output:
        print_json(result.as_dict())
    else:
        last = result.epochs[-1] if result.epochs else {}
        typer.echo(f"Run finished: {relative(result.run_dir)} (final loss {last.get('loss', float('nan')):.4f}).")
        typer.echo("Evaluate it against its base model with: robustft eval --norms 1,2,inf")


# compare names the runs' schemes, folders and seeds itself, and its --norms are the evaluation norms
@with_settings("compare", exclude=("scheme", "norms", "out"), panels=(COMPARISON, EVALUATION))
def compare(
    settings: dict[str, Any],
    schemes: Annotated[
        str, typer.Option(help="Schemes to compare, comma-separated: e-at,ramp,max,msd,sat,avg.", rich_help_panel=COMPARISON)
    ],
    seeds: Annotated[int, typer.Option(help="Seeds per scheme (--seed, --seed + 1, ...).", rich_help_panel=COMPARISON)] = 3,
    out: Annotated[
        Optional[str],
        typer.Option(
            metavar="DIR",
            help="Comparison folder (default runs/compare-<timestamp>); rerun with it to continue.",
            rich_help_panel=COMPARISON,
        ),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option(help="TOML file of fine-tuning settings; options override it.", rich_help_panel=RUN)
    ] = None,
    norms: Annotated[str, typer.Option(help="Evaluation norms, e.g. 1,2,inf.", rich_help_panel=EVALUATION)] = "1,2,inf",
    n_ex: Annotated[int, typer.Option(help="Number of test points (the first N).", rich_help_panel=EVALUATION)] = 1000,
    steps: Annotated[int, typer.Option(help="Evaluation attack steps.", rich_help_panel=EVALUATION)] = 100,
    suite: Annotated[str, typer.Option(help="Evaluation suite.", rich_help_panel=EVALUATION)] = "e-at",
    eval_batch_size: Annotated[int, typer.Option(help="Evaluation batch size.", rich_help_panel=EVALUATION)] = 500,
    log: LogOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fine-tune one base model with several schemes and seeds; table of mean ± std (E-AT Table 12 style)."""
    from robustft.compare import compare as run_compare
    from robustft.compare import compare_table
    from robustft.report import print_json, stdout_console

    report = run_compare(
        schemes,
        seeds=seeds,
        out=out,
        norms=norms,
        n_ex=n_ex,
        steps=steps,
        suite=suite,
        eval_batch_size=eval_batch_size,
        config_file=config,
        progress=progress_reporter(quiet, json_output),
        log=log or (),
        **settings,
    )
    from robustft.distributed import is_main

    if not is_main():  # under torchrun, rank 0 alone prints the table
        return
    if json_output:
        print_json(report.as_dict())
    else:
        stdout_console().print(compare_table(report))
