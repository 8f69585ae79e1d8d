"""The look every robustft figure shares, the figure object the plot functions return, and how it is saved.

Figures are built with :class:`matplotlib.figure.Figure` directly, never with ``pyplot``: no backend is
chosen, no window can open, and no global figure list keeps them alive, so the functions are safe in scripts,
servers and notebooks alike. Saving renders with Agg (PNG) and matplotlib's SVG writer.

Colours are the Okabe-Ito palette (Okabe & Ito, "Color Universal Design", 2008), distinguishable with every
common colour-vision deficiency; sizes fit one column of a two-column paper (3.3 in wide, 7-8 pt text).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustft.errors import UserError
from robustft.io import atomic_write_bytes

INSTALL_HINT = "pip install 'robustft[plot]'"

#: Okabe-Ito, in the order series take them (yellow last: it is faint on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
#: One fixed colour per norm, and black for the union, in every figure.
NORM_COLOURS = {"inf": "#0072B2", "2": "#009E73", "1": "#D55E00", "union": "#000000", "clean": "#999999"}
#: A paper column, in inches; each panel's height.
COLUMN_WIDTH = 3.3
PANEL_HEIGHT = 2.1
PNG_DPI = 300
FORMATS = ("png", "svg")

STYLE: dict[str, Any] = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 8,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
    "legend.frameon": False,
    "svg.hashsalt": "robustft",  # the same figure gives the same SVG bytes
}


#: Marker shapes of line and point series, paired with the palette's colours by :func:`series_marker`.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def series_colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def series_marker(i: int) -> str:
    """Series ``i``'s marker: the colours repeat after 8 series, so from the ninth on the marker moves one further
    along at each repetition, and no two of the first 64 series share both colour and marker."""
    return MARKERS[(i + i // len(PALETTE)) % len(MARKERS)]


def require_matplotlib() -> Any:
    """The matplotlib module, or one sentence saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise UserError(f"Plotting needs matplotlib, which is not installed: {INSTALL_HINT}.") from None
    return matplotlib


def new_figure(panels: int = 1, *, height: float | None = None) -> Any:
    """A column-wide figure with ``panels`` axes stacked vertically (laid out by matplotlib's constrained layout)."""
    mpl = require_matplotlib()
    from matplotlib.figure import Figure

    with mpl.rc_context(STYLE):
        figure = Figure(figsize=(COLUMN_WIDTH, height or PANEL_HEIGHT * panels + 0.3), layout="constrained")
        figure.subplots(panels, 1, squeeze=False)
    return figure


def styled() -> Any:
    """A context in which to draw: artists pick up :data:`STYLE` when they are made."""
    return require_matplotlib().rc_context(STYLE)


@dataclass
class Plot:
    """A drawn figure and the numbers it shows.

    ``data`` holds exactly what was drawn, in the units of the axes (accuracy in %, radii as numbers), so that a
    script or a test can check the picture against its source without reading pixels. ``name`` is the default
    file name (without extension).
    """

    figure: Any
    data: dict[str, Any]
    name: str
    files: list[Path] = field(default_factory=list)

    def save(self, stem: str | Path) -> list[Path]:
        """Write ``<stem>.png`` (300 dpi) and ``<stem>.svg``, each atomically; the paths written."""
        stem = Path(stem)
        written = []
        with require_matplotlib().rc_context(STYLE):
            for fmt in FORMATS:
                path = stem.with_name(f"{stem.name}.{fmt}")
                buffer = io.BytesIO()
                # No creation date in the files: the same numbers give the same bytes.
                metadata = {"Software": "robustft"} if fmt == "png" else {"Date": None, "Creator": "robustft"}
                self.figure.savefig(buffer, format=fmt, dpi=PNG_DPI, metadata=metadata)
                try:
                    atomic_write_bytes(path, buffer.getvalue())
                except OSError as exc:
                    raise UserError(f"The figure {str(path)!r} cannot be written ({exc.strerror or exc}).") from None
                written.append(path)
        self.files = written
        return written


def output_stem(out: str | Path | None, default_dir: Path, name: str) -> Path:
    """Where a figure goes: ``out`` as a file stem (a .png or .svg suffix dropped), or ``<out>/<name>`` when
    ``out`` is a folder (one that exists, or one written with a trailing slash); without ``out``,
    ``<default_dir>/<name>``."""
    if out is None:
        return default_dir / name
    text = str(out)
    path = Path(text)
    if path.is_dir() or text.endswith(("/", "\\")):
        return path / name
    if path.suffix.lower() in {f".{fmt}" for fmt in FORMATS}:
        path = path.with_suffix("")
    return path


def value_and_error(value: Any) -> tuple[float, float | None]:
    """A number, or robustft compare's ``{"mean", "std"}``: ``(value, error bar or None)``; None is NaN."""
    if isinstance(value, Mapping):
        return float(value["mean"]), float(value.get("std") or 0.0)
    if value is None:
        return float("nan"), None
    return float(value), None
