"""The markup of ``robustft report``'s page (robustft/html_report.py): escaping, tables, numbers as text.

Every string read from a file reaches the page through :func:`esc` (``html.escape``, quotes included: it may
land in an attribute); the helpers that take markup say so.
"""

from __future__ import annotations

import html
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NUM = ' class="num"'  # a right-aligned number column


def esc(value: Any) -> str:
    """Text for the page: anything read from a file passes through here (quotes too: it may land in an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def html_table(columns: Sequence[str], rows: Iterable[str], *, caption: str = "", numeric: Sequence[bool] = (), cls: str = "") -> str:
    """A table; ``columns`` are escaped here, ``rows`` are finished ``<tr>`` elements, ``caption`` is markup."""
    numeric = list(numeric) or [False] * len(columns)
    head = "".join(f'<th scope="col"{NUM if n else ""}>{esc(c)}</th>' for c, n in zip(columns, numeric))
    cap = f"<caption>{caption}</caption>" if caption else ""
    klass = f' class="{esc(cls)}"' if cls else ""
    return f"<table{klass}>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def html_row(cells: Sequence[str], numeric: Sequence[bool] = (), attrs: str = "") -> str:
    """A ``<tr>`` of finished cell contents (markup, already escaped)."""
    numeric = list(numeric) or [False] * len(cells)
    tds = "".join(f"<td{NUM if n else ''}>{c}</td>" for c, n in zip(cells, numeric))
    return f"<tr{attrs}>{tds}</tr>"


def para(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{text}</p>' if cls else f"<p>{text}</p>"


def command(*words: str) -> str:
    """A shell command as the reader would type it (paths quoted where the shell needs it), escaped, in <code>."""
    return f"<code>{esc(' '.join(shlex.quote(w) for w in words))}</code>"


def shown(value: Any) -> str:
    """A setting as text: tables as ``key=value, ...`` (a nested table as ``key: ...``), lists comma-separated."""
    if isinstance(value, Mapping):
        if not value:
            return "(none)"
        return ", ".join(f"{k}: {shown(v)}" if isinstance(v, Mapping) else f"{k}={shown(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(shown(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def pct(value: Any, digits: int = 1) -> str:
    number = finite(value)
    return "–" if number is None else f"{100 * number:.{digits}f}"


def accuracy_cell(column: str, value: Any, base: Any = None, mark: str = "") -> str:
    """An accuracy in %, with the exact fraction in ``data-value`` (for scripts and tests) and the change
    against ``base`` in points."""
    number = finite(value)
    if number is None:
        return "–"
    delta = ""
    if finite(base) is not None:
        diff = 100 * (number - float(base))
        kind = "up" if diff > 0.05 else "down" if diff < -0.05 else "flat"
        delta = f'<span class="delta {kind}">({diff:+.1f})</span>'
    return f'<span data-column="{esc(column)}" data-value="{number!r}">{pct(number)}{esc(mark)}</span>{delta}'


def mean_std(value: Any, scale: float = 100.0, digits: int = 1) -> str:
    if isinstance(value, Mapping) and finite(value.get("mean")) is not None:
        return f"{scale * value['mean']:.{digits}f} ± {scale * (finite(value.get('std')) or 0.0):.{digits}f}"
    number = finite(value)
    return "–" if number is None else f"{scale * number:.{digits}f}"


def fixed(value: Any, digits: int) -> str:
    number = finite(value)
    return "–" if number is None else f"{number:.{digits}f}"
