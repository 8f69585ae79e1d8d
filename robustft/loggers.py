"""Experiment trackers: where a run's metrics go (``--log NAME``), as plugins of the ``register_loggers`` hook.

Every record the engine writes (one per batch, per epoch, and one when a run resumes; see
robustft/rundir.py) goes to every logger of the run, in order: ``jsonl`` (``metrics.jsonl``, always on,
the record resume and ``robustft compare`` read) first, then those named with ``--log``. Each logger also
receives the run's configuration when it opens, and a summary at the end: the union table when the run is
evaluated (``robustft compare``), else the final epoch's statistics. docs/loggers.md has the details.

A logger that raises is named once on stderr (a warning) and switched off; the run goes on. A logger that
cannot start at all (a missing package) raises :class:`robustft.errors.UserError` from its constructor,
before any training: one sentence, as every other user error.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from robustft.errors import UnknownNameError, UserError, closest

log = logging.getLogger("robustft")

#: The logger every run has, whatever ``--log`` says: it writes ``metrics.jsonl``.
ALWAYS = "jsonl"
METRICS_FILE = "metrics.jsonl"


class RunLogger(abc.ABC):
    """One experiment tracker for one run. Register the class (``register(MyLogger)``); robustft makes one
    instance per run, with no arguments.

    The constructor is the place to import an optional package and to refuse with a
    :class:`robustft.errors.UserError` (one sentence naming what to install) when it is missing: it runs
    before training. Everything after that is isolated: an exception switches this logger off with a warning.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()

    def open(self, run_dir: Path, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> None:
        """Called once, before the first record: the run folder, its configuration (config.toml's settings as
        a dict) and, for a resumed run, the records it kept (``metrics.jsonl`` up to its checkpoint) so that
        a logger can drop what it wrote after that point. Empty for a new run."""

    @abc.abstractmethod
    def log(self, record: Mapping[str, Any]) -> None:
        """One record: ``{"kind": "batch" | "epoch" | "resume", "epoch": ..., ...}`` as metrics.jsonl holds it."""

    def summary(self, summary: Mapping[str, Any]) -> None:
        """The run's result: ``{"kind": "eval", "clean", "robust": {norm: acc}, "union", "n", "suite", "eps"}``
        when it was evaluated, else ``{"kind": "final", ...}`` with the last epoch's statistics."""

    def close(self) -> None:
        """The run ended (finished, failed or interrupted): flush and release files."""


def flatten(record: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """``{"passes": {"attack_forward": 3}}`` -> ``{"passes.attack_forward": 3}`` (for flat trackers)."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def scalars(record: Mapping[str, Any], sep: str = ".") -> dict[str, float]:
    """The numbers of a record, flattened (booleans, strings and missing values left out)."""
    return {k: float(v) for k, v in flatten(record, sep=sep).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# ------------------------------------------------------------------------------------------ registry


def logger_registry(host: Any = None) -> Any:
    """The installed loggers: the host's ``loggers`` registry, filled by the ``register_loggers`` hook like the
    other registries (so a plugin that fails there is removed whole and ``robustft plugins`` shows it)."""
    from robustft.pluginmanager import get_host

    return (host or get_host()).registries.loggers


def resolve(names: Iterable[str], host: Any = None) -> list[tuple[str, type[RunLogger]]]:
    """``jsonl`` plus the loggers ``names`` (``--log`` values) asks for, once each, in order; an unknown name
    is one sentence listing the valid ones."""
    registry = logger_registry(host)
    if ALWAYS not in registry:  # every run needs metrics.jsonl (resume and compare read it)
        raise UserError(
            f"The {ALWAYS} logger, which writes metrics.jsonl, is not installed or is switched off: reinstall robustft, "
            "or take jsonl-logger out of ROBUSTFT_DISABLE_PLUGINS."
        )
    wanted = [ALWAYS, *(n.strip() for n in names if n and n.strip())]
    chosen: dict[str, type[RunLogger]] = {}
    for name in wanted:
        if name not in registry:
            canonical = {alias: e.name for e in registry for alias in e.aliases}
            # The error lists the valid names itself when none is close; with a suggestion, the hint lists them.
            hint = "Valid --log names: " + ", ".join(registry.names()) + "." if closest(name, registry.all_names()) else ""
            raise UnknownNameError("logger", name, registry.all_names(), hint, canonical)
        entry = registry.entry(name)
        chosen.setdefault(entry.name, entry.obj)
    return list(chosen.items())


class Loggers:
    """The loggers of one run, each isolated: the first exception switches it off, with one warning."""

    def __init__(self, loggers: Sequence[tuple[str, RunLogger]]) -> None:
        self.active = list(loggers)
        self.run_dir: Path | None = None
        self.config: dict[str, Any] = {}
        self.opened = False

    @classmethod
    def create(cls, names: Iterable[str], host: Any = None) -> Loggers:
        """Resolve ``names`` and instantiate each logger, before any compute (a missing package is a
        :class:`UserError` here); :meth:`bind` then gives them the run."""
        instances = []
        for name, logger_cls in resolve(names, host):
            try:
                instances.append((name, logger_cls()))
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - a third party's constructor
                raise UserError(f"Logger {name!r} could not start ({type(exc).__name__}: {exc}).") from None
        return cls(instances)

    def bind(self, run_dir: Path, config: Mapping[str, Any]) -> Loggers:
        """The run folder and configuration the loggers open with (at their first record)."""
        self.run_dir, self.config = Path(run_dir), dict(config)
        return self

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.active]

    def _open(self) -> None:
        if self.opened:
            return
        if self.run_dir is None:
            raise RuntimeError("Loggers.bind(run_dir, config) must come before the first record.")
        self.opened = True
        from robustft.io import read_jsonl

        history = read_jsonl(self.run_dir / METRICS_FILE)  # read before any logger writes this call's record
        self._each("open", self.run_dir, self.config, history)

    def _each(self, method: str, *args: Any) -> None:
        for name, logger in list(self.active):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:  # noqa: BLE001 - a tracker must never end a run
                self.active.remove((name, logger))
                log.warning(
                    "Logger %r raised %s in %s(): %s; it is switched off and the run goes on.",
                    name,
                    type(exc).__name__,
                    method,
                    str(exc).splitlines()[0] if str(exc) else "",
                )

    def log(self, record: Mapping[str, Any]) -> None:
        self._open()
        self._each("log", record)

    def summary(self, summary: Mapping[str, Any]) -> None:
        self._open()
        self._each("summary", summary)

    def close(self) -> None:
        if self.opened:
            self._each("close")


def summarise_finished(names: Iterable[str], run_dir: Path, summary: Mapping[str, Any], host: Any = None) -> None:
    """Hand ``summary`` to the ``names`` loggers of a run that has finished training (``robustft compare``
    evaluates its runs afterwards); they open on the run's config.toml and its metrics."""
    import tomllib

    if not [n for n in names if n and n.strip()]:
        return  # metrics.jsonl keeps no summaries: nothing to do
    try:
        config = tomllib.loads((Path(run_dir) / "config.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
        config = {}
    loggers = Loggers.create(names, host).bind(run_dir, config)
    try:
        loggers.summary(summary)
    finally:
        loggers.close()


def eval_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The summary of an evaluated run from an :meth:`robustft.evaluation.EvalResult.as_dict` row."""
    keys = ("clean", "robust", "union", "n", "suite", "eps", "dataset")
    return {"kind": "eval", **{k: result[k] for k in keys if k in result}}


def final_summary(epochs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of a run that was not evaluated: its last epoch's record."""
    last = dict(epochs[-1]) if epochs else {}
    last.pop("kind", None)
    return {"kind": "final", **last}


__all__ = [
    "ALWAYS",
    "Loggers",
    "RunLogger",
    "eval_summary",
    "final_summary",
    "flatten",
    "logger_registry",
    "resolve",
    "scalars",
    "summarise_finished",
]
