"""The ``robustft`` command line: parse, call the library, render.

Tables and JSON go to stdout; progress, warnings and errors to stderr. Every user error is one
sentence and a non-zero exit code (2 for a malformed or unknown input), never a traceback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

import robustft
from robustft.cli_settings import (  # the fine-tuning settings' options are generated from FinetuneConfig
    ArchOption,
    ChannelsLastOption,
    CheckpointOption,
    CudnnBenchmarkOption,
    DataDirOption,
    DeviceOption,
    DownloadOption,
    EpsOption,
    ImageSizeOption,
    JsonOption,
    ModelDirOption,
    PanelledCommand,
    QuietOption,
    SkipBadImagesOption,
)
from robustft.cli_settings import (
    parse_eps as _eps,
)
from robustft.cli_settings import (
    progress_reporter as _progress,
)
from robustft.errors import UserError

app = typer.Typer(
    name="robustft",
    help="Fine-tune adversarially robust classifiers into classifiers robust in the union of l1, l2 and l-inf balls.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustft {robustft.__version__}")
        raise typer.Exit()


DEBUG_ENV = "ROBUSTFT_DEBUG"
_debug = {"on": False}  # set by --debug for this call of main (reset there)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help=f"Show the traceback of an error raised inside a plugin (also {DEBUG_ENV}=1).")
    ] = False,
) -> None:
    """robustft: E-AT, RAMP and baselines as one tool."""
    _debug["on"] = debug


# ------------------------------------------------------------------------------------------ finetune

from robustft import cli_finetune  # noqa: E402 - its own module: options generated from FinetuneConfig

app.command("finetune", cls=PanelledCommand)(cli_finetune.finetune)


# ---------------------------------------------------------------------------------------------- eval


@app.command("eval")
def eval_command(
    norms: Annotated[str, typer.Option(help="Norms to attack, e.g. 1,2,inf.")] = "1,2,inf",
    model: Annotated[Optional[str], typer.Option(help="Evaluate this model (NAME or ZOO:NAME) alone.")] = None,
    run: Annotated[
        Optional[Path],
        typer.Option(help="Evaluate this run folder and its base model; the result is also stored in <run>/eval.json (for robustft plot)."),
    ] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Data set (default: the model's).")] = None,
    eps: EpsOption = None,
    radii: Annotated[
        Optional[list[str]],
        typer.Option(
            "--radii",
            metavar="NORM=START:STOP:COUNT",
            help="Also sweep the radius: COUNT radii from START to STOP, repeatable: --radii inf=1/255:12/255:12 --radii 1=2:16:8 (for robustft plot curves).",
        ),
    ] = None,
    n_ex: Annotated[int, typer.Option(help="Number of test points (the first N).")] = 1000,
    suite: Annotated[str, typer.Option(help="Evaluation suite; see 'robustft list suites'.")] = "e-at",
    steps: Annotated[int, typer.Option(help="Attack steps.")] = 100,
    batch_size: Annotated[int, typer.Option(help="Evaluation batch size.")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed of the attacks.")] = 0,
    model_dir: ModelDirOption = None,
    checkpoint: CheckpointOption = None,
    arch: ArchOption = None,
    data_dir: DataDirOption = None,
    image_size: ImageSizeOption = None,
    download: DownloadOption = None,
    skip_bad_images: SkipBadImagesOption = None,
    device: DeviceOption = None,
    channels_last: ChannelsLastOption = None,
    cudnn_benchmark: CudnnBenchmarkOption = None,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            help="Refuse instead of warning: an adversarial point outside its ball or [0, 1] (default: projected, counted, flagged) and fine-tuned weights without their checksum file.",
        ),
    ] = False,
    sanity: Annotated[
        bool,
        typer.Option(
            "--sanity",
            help="Also run the gradient-masking checks (more steps, more restarts, transfer, l-inf radius 1) on up to 200 of the points.",
        ),
    ] = False,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Clean, per-norm and union robust accuracy; without --model/--run, the latest run against its base."""
    from robustft.evaluation import evaluate
    from robustft.report import eval_table, print_json, stdout_console
    from robustft.sweep import curve_table, parse_sweep_items

    report = evaluate(
        radii=parse_sweep_items(radii or []),
        model=model,
        run=run,
        dataset=dataset,
        norms=norms,
        eps=_eps(eps),
        n_ex=n_ex,
        suite=suite,
        steps=steps,
        batch_size=batch_size,
        device=device or "auto",
        seed=seed,
        progress=_progress(quiet, json_output),
        model_options={"model_dir": model_dir, "checkpoint": checkpoint, "arch": arch, "download": download},
        data_options={"data_dir": data_dir, "image_size": image_size, "download": download, "skip_bad_images": skip_bad_images},
        channels_last=channels_last,
        cudnn_benchmark=cudnn_benchmark,
        strict=strict,
    )
    from robustft.distributed import is_main

    checks = None
    if sanity:
        from robustft.sanity import DEFAULT_POINTS, sanity_table
        from robustft.sanity import sanity as run_sanity

        checks = run_sanity(  # the models the table evaluated, not loaded again
            subjects=report.subjects,
            norms=norms,
            eps=_eps(eps),
            suite=suite,
            n_ex=min(n_ex, DEFAULT_POINTS),
            steps=steps,
            batch_size=batch_size,
            device=device or "auto",
            seed=seed,
            progress=_progress(quiet, json_output),
        )
    if not is_main():  # under torchrun, rank 0 alone prints the table
        return
    if checks is not None and report.saved is not None:
        from robustft.evaluation import store_sanity

        store_sanity(report.saved, checks)  # beside the table in eval.json, for robustft report
    if json_output:
        print_json({**report.as_dict(), **({"sanity": [c.as_dict() for c in checks]} if checks is not None else {})})
    else:
        stdout_console().print(eval_table(report))
        if any(r.curves for r in report.results):
            stdout_console().print(
                curve_table([(r.name, r.curves) for r in report.results], report.results[0].n, report.results[0].dataset)
            )
        if checks is not None:
            stdout_console().print(sanity_table(checks))
    if report.saved is not None and not quiet:
        from robustft.progress import stderr_console
        from robustft.rundir import relative

        stderr_console().print(
            f"Stored in {relative(report.saved)} (draw it with: robustft plot bars --run {relative(report.saved.parent)}).",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


# ------------------------------------------------------------------------------------------- compare

app.command("compare", cls=PanelledCommand)(cli_finetune.compare)


# ------------------------------------------------- geometry, plugins, recipes, list (robustft/cli_info.py)

from robustft import cli_info  # noqa: E402 - cheap: typer only; the plugins load when a command runs

app.command()(cli_info.geometry)
app.command()(cli_info.plugins)
app.command()(cli_info.recipes)
app.command("list")(cli_info.list_command)


# -------------------------------------------------------------------------------------------- export

from robustft.cli_export import export as _export  # noqa: E402 - its own module (robustft/export.py is the library)

app.command("export")(_export)


# ---------------------------------------------------------------------------------------------- plot

from robustft import cli_plot  # noqa: E402 - cheap: typer only; its commands import matplotlib when they run

app.add_typer(cli_plot.app, name="plot")


# -------------------------------------------------------------------------------------------- report

from robustft.cli_report import report as _report  # noqa: E402 - its own module (robustft/html_report.py is the library)

app.command("report")(_report)


# ---------------------------------------------------------------------------------------------- main


def _setup_output() -> None:
    from rich.markup import escape

    from robustft.progress import stderr_console

    console = stderr_console()

    # Messages are text: escape them, or rich would eat "[zoos]" in "pip install 'robustft[zoos]'".
    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        console.print(f"[yellow]warning:[/yellow] {escape(str(message))}", markup=True, highlight=False, soft_wrap=True)

    warnings.showwarning = show_warning

    class ConsoleHandler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            prefix = "[yellow]warning:[/yellow] " if record.levelno >= logging.WARNING else ""
            console.print(prefix + escape(record.getMessage()), markup=True, highlight=False, soft_wrap=True)

    logger = logging.getLogger("robustft")
    logger.handlers[:] = [ConsoleHandler()]
    # Under torchrun rank 0 reports; the other ranks would repeat its messages, so they print errors only.
    logger.setLevel(logging.INFO if os.environ.get("RANK", "0") in ("", "0") else logging.ERROR)
    logger.propagate = True  # our handler prints; the root has none unless an embedding application adds one


INTERRUPTED = 130  # the shell's code for a job ended by SIGINT


def _with_plugin_commands(argv: list[str]) -> typer.Typer:
    """The app this command line needs: the built-in commands, plus plugin commands only where the command line
    may name or list them (see robustft.plugin_commands). A copy, so that calling ``main`` again in one process
    (tests, embedding applications) starts from the built-in commands again."""
    import copy

    from robustft import plugin_commands

    extended = copy.copy(app)
    extended.registered_commands = list(app.registered_commands)
    extended.registered_groups = list(app.registered_groups)
    command = plugin_commands.first_command(argv)
    if command is None:
        if "--version" not in argv:  # the root help lists plugin commands
            plugin_commands.add_listed_plugin_commands(extended)
    elif command not in {entry["name"] for entry in plugin_commands.command_entries(app)}:
        plugin_commands.add_plugin_commands(extended)
    return extended


def _show_usage_error(exc: typer.TyperException, argv: list[str], cli: typer.Typer) -> None:
    """Typer's own rendering, with the usage line of the command even where its parser did not attach one
    (a missing option value)."""
    from robustft.plugin_commands import first_command

    if getattr(exc, "ctx", "absent") is None:
        group = typer.main.get_command(cli)
        name = first_command(argv)
        with group.make_context("robustft", [], resilient_parsing=True) as root:
            command = group.get_command(root, name) if name else None
            if command is not None:
                exc.ctx = command.make_context(name, [], parent=root, resilient_parsing=True)
                # a command group (robustft plot bars ...): down to the sub-command the arguments name
                rest = [a for a in argv[argv.index(name) + 1 :] if not a.startswith("-")]
                if rest and hasattr(command, "get_command"):
                    sub = command.get_command(exc.ctx, rest[0])
                    if sub is not None:
                        exc.ctx = sub.make_context(rest[0], [], parent=exc.ctx, resilient_parsing=True)
    show = getattr(exc, "show", None)
    if show is not None:
        show()
    else:
        from robustft.progress import stderr_console

        stderr_console().print(f"Error: {exc.format_message()}", markup=False, highlight=False, soft_wrap=True)


def _plugin_crash(exc: Exception) -> UserError | None:
    """The error naming the third-party plugin ``exc`` passed through, if any (robustft.pluginmanager)."""
    from robustft.pluginmanager import PluginCrash, current_host

    host = current_host()
    try:
        if host is not None:
            host.crash(exc)
    except PluginCrash as crash:
        return crash
    return None


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``robustft`` script; returns the exit code."""
    from rich.markup import escape

    from robustft.progress import stderr_console

    argv = sys.argv[1:] if argv is None else list(argv)
    _setup_output()
    _debug["on"] = False
    cli = app
    previous_term = _catch_sigterm()
    try:
        cli = _with_plugin_commands(argv)
        # Outside standalone mode typer returns the code of an early exit (--help, --version, and 130
        # for a KeyboardInterrupt it caught) instead of calling sys.exit; a command returns None.
        code = cli(args=argv, prog_name="robustft", standalone_mode=False)
    except UserError as exc:
        where = f" (rank {os.environ['RANK']})" if os.environ.get("RANK", "0") not in ("", "0") else ""
        stderr_console().print(f"[red]error{where}:[/red] {escape(exc.message)}", markup=True, highlight=False, soft_wrap=True)
        return exc.exit_code
    except typer.Exit as exc:
        code = exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except typer.TyperException as exc:  # usage errors: the usage line, then one sentence; exit code 2
        _show_usage_error(exc, argv, cli)
        return exc.exit_code
    except Exception as exc:  # unexpected: one sentence when it came from a third-party plugin, else the traceback
        crash = _plugin_crash(exc)
        if crash is None:
            raise
        if _debug["on"] or os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        where = f" (rank {os.environ['RANK']})" if os.environ.get("RANK", "0") not in ("", "0") else ""
        stderr_console().print(f"[red]error{where}:[/red] {escape(crash.message)}", markup=True, highlight=False, soft_wrap=True)
        return crash.exit_code
    finally:
        _restore_sigterm(previous_term)
    code = code if isinstance(code, int) else 0
    if code == INTERRUPTED and _terminated["signal"] == signal.SIGTERM:
        code = TERMINATED
    if code in (INTERRUPTED, TERMINATED):
        stderr_console().print("Interrupted by SIGTERM." if code == TERMINATED else "Interrupted.")
    return code


TERMINATED = 143  # the shell's code for a job ended by SIGTERM
_terminated: dict[str, int | None] = {"signal": None}


def _catch_sigterm() -> Any:
    """Outside training (which installs its own handlers), SIGTERM stops a command as Ctrl-C does, and main
    reports it with exit code 143 and a sentence instead of the silent death of the default action."""
    _terminated["signal"] = None
    if threading.current_thread() is not threading.main_thread():
        return None

    def handle(signum: int, frame: Any) -> None:
        _terminated["signal"] = signum
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handle)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def run() -> None:  # pragma: no cover - console script wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    run()
