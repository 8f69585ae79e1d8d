"""What ``robustft report``'s page carries inside itself: its style sheet and its figures as SVG ``data:`` URIs.

Nothing is linked from outside the file (no script, font or style sheet), so the page can be mailed or archived
as it is. matplotlib (``pip install 'robustft[plot]'``) is optional: without it :class:`Figures` puts one
sentence where each figure would be.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import TYPE_CHECKING

from robustft.errors import UserError
from robustft.html_markup import esc, para

if TYPE_CHECKING:
    from robustft.plotting import Plot

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: #1a1a1a;
       background: #fff; margin: 0; line-height: 1.45; }
main { max-width: 960px; margin: 0 auto; padding: 1.5rem 1.25rem 3rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; }
h2 { font-size: 1.25rem; margin: 2.2rem 0 .6rem; padding-bottom: .2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p.lead { color: #555; margin-top: 0; }
nav ul { list-style: none; padding: 0; margin: .8rem 0 0; display: flex; flex-wrap: wrap; gap: .3rem 1rem; }
nav a, a { color: #0072B2; }
table { border-collapse: collapse; margin: .5rem 0 .4rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding-bottom: .3rem; }
th, td { padding: .25rem .7rem; border-bottom: 1px solid #e4e4e4; text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #bbb; }
td.num, th.num { text-align: right; white-space: nowrap; }
tbody tr:hover { background: #f6f8fa; }
.delta { font-size: .85em; margin-left: .3em; }
.up { color: #007a55; } .down { color: #b8400a; } .flat { color: #888; }
.pass { color: #007a55; font-weight: 600; } .fail { color: #b8400a; font-weight: 600; }
.note { color: #555; font-size: .92rem; }
.notice { background: #fff8e5; border-left: 4px solid #E69F00; padding: .6rem .9rem; margin: .6rem 0; }
.notice.bad { background: #fdeee8; border-left-color: #D55E00; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; background: #f3f3f3;
       padding: .05em .3em; border-radius: 3px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1.2rem; margin: .8rem 0; }
dl.facts dt { color: #555; } dl.facts dd { margin: 0; }
figure { margin: 1rem 0 1.4rem; }
figure img { width: 100%; max-width: 640px; height: auto; display: block; }
figcaption { color: #555; font-size: .9rem; margin-top: .3rem; max-width: 640px; }
footer { margin-top: 3rem; color: #777; font-size: .85rem; border-top: 1px solid #ddd; padding-top: .6rem; }
"""


class Figures:
    """Draws the page's figures as SVG ``data:`` URIs; without matplotlib, one sentence in their place."""

    def __init__(self) -> None:
        from robustft.plotting.style import INSTALL_HINT, require_matplotlib

        try:
            require_matplotlib()
            self.missing: str | None = None
        except UserError:
            self.missing = f"The figures need matplotlib, which is not installed: {INSTALL_HINT}."
        self.drawn: list[str] = []

    def figure(self, name: str, draw: Callable[[], Plot], caption: str) -> str:
        """``<figure>`` of what ``draw`` returns, or the sentence saying why there is none."""
        if self.missing is not None:
            return para(esc(self.missing), "notice")
        try:
            plot = draw()
        except (UserError, ValueError) as exc:  # nothing to draw (no batch with a loss, ...): say so, go on
            return para(esc(f"The {name} figure could not be drawn: {exc}."), "notice")
        self.drawn.append(name)
        uri = "data:image/svg+xml;base64," + base64.b64encode(svg_bytes(plot)).decode("ascii")
        return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def svg_bytes(plot: Plot) -> bytes:
    """The figure as SVG, exactly as ``Plot.save`` writes it (same style, no date: the same figure, the same bytes)."""
    from robustft.plotting.style import STYLE, require_matplotlib

    buffer = io.BytesIO()
    with require_matplotlib().rc_context(STYLE):
        plot.figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "robustft"})
    return buffer.getvalue()
