"""Progress reporting on stderr (rich), kept out of the engine's logic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

_stderr: Console | None = None


def stderr_console() -> Console:
    global _stderr
    if _stderr is None:
        _stderr = Console(stderr=True, highlight=False)
    return _stderr


class ProgressReporter:
    """Receives training and evaluation progress. The default reports nothing."""

    def start(self, description: str, total: int) -> None: ...

    def advance(self, stats: Mapping[str, Any]) -> None: ...

    def stop(self) -> None: ...

    def message(self, text: str) -> None: ...


class RichProgress(ProgressReporter):
    """A rich progress bar on stderr: description, bar, count, loss and robust errors, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or stderr_console()
        self._progress: Progress | None = None
        self._task: Any = None

    def start(self, description: str, total: int) -> None:
        self.stop()
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, stats="")

    def advance(self, stats: Mapping[str, Any]) -> None:
        if self._progress is None:
            return
        text = "  ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
        self._progress.update(self._task, advance=1, stats=text)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def message(self, text: str) -> None:
        self.console.print(text)
