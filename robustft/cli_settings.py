"""Command-line options generated from :class:`robustft.config.FinetuneConfig`, and the options the commands share.

Each fine-tuning setting is described once, on its FinetuneConfig field (robustft/config.py: default, flag,
help, format, choices, help panel). :func:`with_settings` gives a command one option per setting, generated
from that description, so that ``robustft finetune`` and ``robustft compare`` cannot drift apart; the other
commands take the few settings they share (``--eps``, ``--device``, ...) from :func:`setting_option`.
Cheap to import: typer and robustft.config only (no torch, no plugins).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Optional, TypeVar

import typer
from typer.core import TyperCommand

from robustft import per_norm
from robustft.config import PANELS, PER_NORM_FIELDS, RUN, SETTINGS, FinetuneConfig, from_command_line, option_flags, scalar_types

F = TypeVar("F", bound=Callable[..., Any])
_FIELDS = {f.name: f for f in dataclasses.fields(FinetuneConfig)}


def default_shown(name: str) -> str | None:
    """Setting ``name``'s default as the help says it: its words, else the dataclass default; None when unset."""
    described = SETTINGS[name]
    if described.default_text:
        return described.default_text
    f = _FIELDS[name]
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    if value is None or value == {}:
        return None
    if name in PER_NORM_FIELDS:
        value = per_norm.to_toml(value)
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_help(name: str, command: str = "finetune") -> str:
    described = SETTINGS[name]
    text = (described.compare_help if command == "compare" and described.compare_help else described.help).rstrip(".")
    shown = default_shown(name)
    return f"{text} (default: {shown})." if shown is not None else f"{text}."


def setting_option(name: str, command: str = "finetune") -> Any:
    """The typer annotation of setting ``name``: None when not given, so that a config file or a data set's recipe
    below it keeps its value (robustft.config.build_config)."""
    described = SETTINGS[name]
    kind: Any = list[str] if described.items else scalar_types().get(name, str)
    metavar = described.metavar or ("|".join(described.choices) if described.choices else None)
    option = typer.Option(
        *option_flags(name), help=setting_help(name, command), metavar=metavar, rich_help_panel=described.panel, show_default=False
    )
    return Annotated[Optional[kind], option]


def _panel(parameter: inspect.Parameter) -> str | None:
    infos = [m for m in typing.get_args(parameter.annotation)[1:] if isinstance(m, typer.models.OptionInfo)]
    return infos[0].rich_help_panel if infos else None


def with_settings(command: str, *, exclude: Iterable[str] = (), panels: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Give a command one option per FinetuneConfig setting (bar ``exclude``), generated from the field metadata.

    The command declares its own options as usual and a ``settings`` parameter, which receives the settings
    given on the command line as FinetuneConfig values (robustft.config.from_command_line). ``--help`` shows
    the command's own panels (``panels``, first), then robustft.config.PANELS.
    """
    excluded = set(exclude)
    names = [name for name in SETTINGS if name not in excluded]
    order = [*panels, *PANELS]

    def decorate(func: F) -> F:
        own = inspect.signature(func, eval_str=True)
        kept = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own.parameters.values() if p.name != "settings"]
        generated = [
            inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=setting_option(n, command)) for n in names
        ]
        # panel by panel (own options first within one); options without a panel first, beside --help
        ordered = sorted([*kept, *generated], key=lambda p: order.index(_panel(p)) if _panel(p) in order else -1)

        @functools.wraps(func)
        def run(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in names}
            return func(settings=from_command_line(given), **kwargs)

        run.__signature__ = own.replace(parameters=ordered)  # type: ignore[attr-defined]
        return run  # type: ignore[return-value]

    return decorate


class PanelledCommand(TyperCommand):
    """A command whose ``--help`` groups its options into rich panels.

    The app renders help as plain text (``rich_markup_mode=None``: a plugin's "robustft[zoos]" stays as written);
    this command renders with rich, its help texts escaped, so that square brackets show as written here too.
    """

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from rich.markup import escape
        from typer import rich_utils

        saved = [(param, param.help, param.metavar) for param in self.get_params(ctx)]  # --help included
        own_help = self.help
        try:
            for param, text, _ in saved:
                if text:
                    param.help = escape(text)
                if getattr(param, "is_flag", False):
                    param.metavar = ""  # a switch takes no value: no "<bool>" beside it
            self.help = escape(own_help) if own_help else own_help
            rich_utils.rich_format_help(obj=self, ctx=ctx, markup_mode="rich")
        finally:
            for param, text, metavar in saved:
                param.help, param.metavar = text, metavar
            self.help = own_help


# --------------------------------------------------------------------------- options several commands share

JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress on stderr.")]
LogOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--log",
        metavar="NAME",
        help="Also log metrics to this tracker (csv, tensorboard, or a plugin's), repeatable; metrics.jsonl is always written.",
        rich_help_panel=RUN,
    ),
]
EpsOption = setting_option("eps")
ModelDirOption = setting_option("model_dir")
CheckpointOption = setting_option("checkpoint")
ArchOption = setting_option("arch")
DataDirOption = setting_option("data_dir")
ImageSizeOption = setting_option("image_size")
DownloadOption = setting_option("download")
SkipBadImagesOption = setting_option("skip_bad_images")
DeviceOption = setting_option("device")
ChannelsLastOption = setting_option("channels_last")
CudnnBenchmarkOption = setting_option("cudnn_benchmark")


def progress_reporter(quiet: bool, json_output: bool) -> Any:
    from robustft.progress import ProgressReporter, RichProgress

    return ProgressReporter() if quiet else RichProgress()


def parse_eps(items: list[str] | None) -> dict | None:
    from robustft.norms import parse_eps_items

    return parse_eps_items(items) if items else None
