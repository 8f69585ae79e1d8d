"""``robustft report RUN``: everything known about a run as one self-contained HTML page.

The page holds the run's configuration with the source of each setting (config.toml's ``[provenance]``), the
stored evaluation (``<run>/eval.json``, read with :func:`robustft.export.read_stored_eval`) as the clean,
per-norm and union table of the base and the fine-tuned model, its validity counts (adversarial points that
had to be projected back into their ball and [0, 1], :func:`robustft.evaluation.valid_adversarial`) and
gradient-masking checks (``"sanity"``, robustft/sanity.py) where stored, the figures of
:mod:`robustft.plotting`, the time and peak memory of each epoch (``metrics.jsonl``), and the environment.
With a ``robustft compare`` folder it also holds the comparison's table and figures.

Self-contained: CSS inline, figures as SVG ``data:`` URIs, no script, font, stylesheet or link outside the
file, so it can be mailed or archived as it is. Every string read from a file is escaped (``html.escape``).
matplotlib (``pip install 'robustft[plot]'``) is optional: without it the page says so where the figures
would be. A run that was not evaluated still gets a page, which says how to evaluate it. The page holds no
date, so the same files give the same page. See docs/reporting.md.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import platform
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import robustft
from robustft.errors import UserError
from robustft.io import atomic_write_text, read_jsonl
from robustft.norms import DISPLAY_ORDER, Norm
from robustft.rundir import latest_run, read_run_info

if TYPE_CHECKING:
    from robustft.plotting import Plot

log = logging.getLogger("robustft")

#: The page's file name in the run folder (the default of ``--out``).
REPORT_FILE = "report.html"

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


# ------------------------------------------------------------------------------------------- markup

NUM = ' class="num"'  # a right-aligned number column


def esc(value: Any) -> str:
    """Text for the page: anything read from a file passes through here (quotes too: it may land in an attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def _table(columns: Sequence[str], rows: Iterable[str], *, caption: str = "", numeric: Sequence[bool] = (), cls: str = "") -> str:
    """A table; ``columns`` are escaped here, ``rows`` are finished ``<tr>`` elements, ``caption`` is markup."""
    numeric = list(numeric) or [False] * len(columns)
    head = "".join(f'<th scope="col"{NUM if n else ""}>{esc(c)}</th>' for c, n in zip(columns, numeric))
    cap = f"<caption>{caption}</caption>" if caption else ""
    klass = f' class="{esc(cls)}"' if cls else ""
    return f"<table{klass}>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _row(cells: Sequence[str], numeric: Sequence[bool] = (), attrs: str = "") -> str:
    """A ``<tr>`` of finished cell contents (markup, already escaped)."""
    numeric = list(numeric) or [False] * len(cells)
    tds = "".join(f"<td{NUM if n else ''}>{c}</td>" for c, n in zip(cells, numeric))
    return f"<tr{attrs}>{tds}</tr>"


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{text}</p>' if cls else f"<p>{text}</p>"


def _command(*words: str) -> str:
    """A shell command as the reader would type it (paths quoted where the shell needs it), escaped, in <code>."""
    return f"<code>{esc(' '.join(shlex.quote(w) for w in words))}</code>"


def _shown(value: Any) -> str:
    """A setting as text: tables as ``key=value, ...`` (a nested table as ``key: ...``), lists comma-separated."""
    if isinstance(value, Mapping):
        if not value:
            return "(none)"
        return ", ".join(f"{k}: {_shown(v)}" if isinstance(v, Mapping) else f"{k}={_shown(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _pct(value: Any, digits: int = 1) -> str:
    number = _number(value)
    return "–" if number is None else f"{100 * number:.{digits}f}"


def _accuracy_cell(column: str, value: Any, base: Any = None, mark: str = "") -> str:
    """An accuracy in %, with the exact fraction in ``data-value`` (for scripts and tests) and the change
    against ``base`` in points."""
    number = _number(value)
    if number is None:
        return "–"
    delta = ""
    if _number(base) is not None:
        diff = 100 * (number - float(base))
        kind = "up" if diff > 0.05 else "down" if diff < -0.05 else "flat"
        delta = f'<span class="delta {kind}">({diff:+.1f})</span>'
    return f'<span data-column="{esc(column)}" data-value="{number!r}">{_pct(number)}{esc(mark)}</span>{delta}'


def _mean_std(value: Any, scale: float = 100.0, digits: int = 1) -> str:
    if isinstance(value, Mapping) and _number(value.get("mean")) is not None:
        return f"{scale * value['mean']:.{digits}f} ± {scale * (_number(value.get('std')) or 0.0):.{digits}f}"
    number = _number(value)
    return "–" if number is None else f"{scale * number:.{digits}f}"


# ------------------------------------------------------------------------------------------ figures


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

    def figure(self, name: str, draw: Callable[[], "Plot"], caption: str) -> str:
        """``<figure>`` of what ``draw`` returns, or the sentence saying why there is none."""
        if self.missing is not None:
            return _p(esc(self.missing), "notice")
        try:
            plot = draw()
        except (UserError, ValueError) as exc:  # nothing to draw (no batch with a loss, ...): say so, go on
            return _p(esc(f"The {name} figure could not be drawn: {exc}."), "notice")
        self.drawn.append(name)
        uri = "data:image/svg+xml;base64," + base64.b64encode(svg_bytes(plot)).decode("ascii")
        return f'<figure><img src="{uri}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def svg_bytes(plot: "Plot") -> bytes:
    """The figure as SVG, exactly as ``Plot.save`` writes it (same style, no date: the same figure, the same bytes)."""
    from robustft.plotting.style import STYLE, require_matplotlib

    buffer = io.BytesIO()
    with require_matplotlib().rc_context(STYLE):
        plot.figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "robustft"})
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------ sources


@dataclass
class RunSources:
    """What the page is made of, read from the run folder. A missing or damaged optional file is a
    ``*_problem`` sentence shown on the page (and warned about), not a failed report."""

    run: Path
    info: dict[str, Any]
    config: dict[str, Any] | None = None
    config_problem: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    base: dict[str, Any] | None = None
    tuned: dict[str, Any] | None = None
    eval_path: Path | None = None
    eval_settings: dict[str, Any] = field(default_factory=dict)
    eval_extra: dict[str, Any] = field(default_factory=dict)
    eval_problem: str | None = None
    #: the evaluation records the checksum of the run's current model.pt (checked against its sidecar)
    weights_match: bool = False

    @property
    def evaluated(self) -> bool:
        return self.tuned is not None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return [r for r in (self.base, self.tuned) if r is not None]


def read_sources(run: str | Path) -> RunSources:
    """The run's files: ``run.json`` (required: a folder without it is not a run), ``config.toml``,
    ``metrics.jsonl`` (tolerantly: a line cut by a crash is skipped) and the stored evaluation."""
    from robustft.config import read_toml
    from robustft.evaluation import weights_checksum
    from robustft.export import read_stored_eval

    run = Path(run)
    sources = RunSources(run=run, info=read_run_info(run))
    config_path = run / "config.toml"
    if config_path.is_file():
        try:
            sources.config = read_toml(config_path)
        except UserError as exc:
            sources.config_problem = exc.message
    else:
        sources.config_problem = f"The run folder has no config.toml ({str(config_path)!r})."
    sources.records = read_jsonl(run / "metrics.jsonl")
    try:
        stored = read_stored_eval(run)
    except UserError as exc:  # damaged, or of other weights than model.pt: the page says which
        sources.eval_problem = exc.message
        stored = None
    if stored is not None:
        sources.base, sources.tuned = stored.base, stored.result
        sources.eval_path, sources.eval_settings = stored.path, stored.settings
        raw = json.loads(stored.path.read_text(encoding="utf-8"))  # read_stored_eval checked it is a JSON object
        sources.eval_extra = {k: raw[k] for k in ("sanity", "weights_sha256") if k in raw}
        sources.weights_match = bool(raw.get("weights_sha256")) and raw.get("weights_sha256") == weights_checksum(run)
    for problem in (sources.config_problem, sources.eval_problem):
        if problem:
            log.warning("%s The report shows what it can.", problem.rstrip("."))
    return sources


def epoch_records(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The epoch summaries of ``metrics.jsonl``, one per epoch (a resumed run may record one twice: the later wins)."""
    epochs: dict[int, Mapping[str, Any]] = {}
    for record in records:
        if record.get("kind") == "epoch" and isinstance(record.get("epoch"), int):
            epochs[record["epoch"]] = record
    return [epochs[k] for k in sorted(epochs)]


# ------------------------------------------------------------------------------------------ sections


def _norms_of(rows: Sequence[Mapping[str, Any]]) -> list[Norm]:
    present = {key for row in rows for key in (row.get("robust") or {})}
    return [n for n in DISPLAY_ORDER if n.value in present]


def _label(norm_key: str) -> str:
    try:
        return Norm.parse(norm_key).label
    except UserError:
        return norm_key


def overview(s: RunSources) -> str:
    info = s.info
    facts = [
        ("run folder", str(s.run)),
        ("base model", f"{info.get('base_model')}" + (f" (zoo {info['zoo']})" if info.get("zoo") else "")),
        ("data set", info.get("dataset")),
        ("scheme", info.get("scheme")),
        ("training norms", ", ".join(f"{_label(n)} {info.get('eps', {}).get(n, '')}".strip() for n in info.get("norms", [])) or "–"),
        ("status", info.get("status")),
        ("started", info.get("started") or "–"),
        ("finished", info.get("finished") or "–"),
    ]
    items = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f'<dl class="facts">{items}</dl>'


def evaluation_section(s: RunSources, figures: Figures) -> str:
    redo = _command("robustft", "eval", "--run", str(s.run))
    if s.eval_problem:
        return _p(f"{esc(s.eval_problem)} The numbers are left out; evaluate with {redo}, then make this report again.", "notice bad")
    if not s.evaluated:
        return _p(f"This run has not been evaluated. Evaluate it with {redo} (add <code>--radii</code> for radius curves, "
                  f"<code>--sanity</code> for the gradient-masking checks), then run "
                  f"{_command('robustft', 'report', str(s.run))} again.", "notice")
    rows, first = s.rows, s.rows[0]
    norms = _norms_of(rows)
    eps = first.get("eps") or {}
    columns = ["model", "clean", *(f"{n.label} ({eps.get(n.value, '?')})" for n in norms), "union"]
    body = []
    for row in rows:
        base = s.base if (row is s.tuned and s.base is not None) else None
        invalid = row.get("invalid_points") or {}
        cells = [esc(row.get("name")), _accuracy_cell("clean", row.get("clean"), base and base.get("clean"))]
        for n in norms:
            cells.append(_accuracy_cell(n.value, (row.get("robust") or {}).get(n.value), base and (base.get("robust") or {}).get(n.value),
                                        "*" if invalid.get(n.value) else ""))
        cells.append(_accuracy_cell("union", row.get("union"), base and base.get("union")))
        role = "fine-tuned" if row is s.tuned else "base"
        body.append(_row(cells, [False, *[True] * (len(cells) - 1)], f' data-row="{role}"'))
    caption = f"Robust accuracy (%) on {esc(first.get('n'))} {esc(first.get('dataset'))} test points, suite {esc(first.get('suite'))}"
    notes = []
    if s.base is not None:
        notes.append("In brackets: the change against the base model, in points.")
    if any((row.get("invalid_points") or {}).get(n.value) for row in rows for n in norms):
        notes.append("* some adversarial points were outside their ball or [0, 1] and were projected before counting (see Validity).")
    settings = s.eval_settings
    made = ", ".join(f"{k} {_shown(settings[k])}" for k in ("n_ex", "steps", "seed", "strict") if k in settings)
    source = f"From {esc(s.eval_path)}" + (f" ({esc(made)})" if made else "") + "."
    checksum = s.eval_extra.get("weights_sha256")
    if checksum:
        which = ", the run's current <code>model.pt</code>" if s.weights_match else " (the run's model.pt has no checksum file to compare)"
        source += f" It evaluated the weights with SHA-256 <code>{esc(str(checksum)[:16])}…</code>{which}."
    parts = [_table(columns, body, caption=caption, numeric=[False, *[True] * (len(columns) - 1)], cls="accuracy"),
             _p(" ".join([source, *map(esc, notes)]), "note")]
    from robustft.plotting.bars import accuracy_bars

    parts.append(figures.figure("bars", lambda: accuracy_bars(rows),
                                "Clean, per-norm and union accuracy of the base and the fine-tuned model (as robustft plot bars draws them)."))
    swept = [row for row in rows if row.get("curves")]
    if swept:
        from robustft.plotting.curves import radius_curves

        parts.append("<h3>Robust accuracy against the radius</h3>")
        parts.append(curves_table(swept))
        parts.append(figures.figure("curves", lambda: radius_curves(swept, title="Robust accuracy against the radius"),
                                    "Robust accuracy against the radius, one panel per norm (as robustft plot curves draws it)."))
    return "".join(parts)


def curves_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = []
    for row in rows:
        curves = row.get("curves") or {}
        for n in (n for n in DISPLAY_ORDER if n.value in curves):
            curve = curves[n.value]
            points = "; ".join(f"{esc(r)}: {_pct(a)} ({esc(k)})" for r, a, k in
                               zip(curve.get("radii", []), curve.get("robust", []), curve.get("attacked_points", [])))
            body.append(_row([esc(row.get("name")), esc(n.label), points]))
    return _table(["model", "norm", "radius: robust accuracy % (points attacked there)"], body)


def validity_section(s: RunSources) -> str:
    if not s.evaluated:
        return _p("No evaluation, so no adversarial points to count.", "note")
    rows = s.rows
    norms = _norms_of(rows)
    body, total = [], 0
    for row in rows:
        invalid = row.get("invalid_points") or {}
        counts = [int(invalid.get(n.value) or 0) for n in norms]
        swept = row.get("curves") or {}
        sweep = sum(int(c.get("invalid_points") or 0) for c in swept.values())
        total += sum(counts) + sweep
        body.append(_row([esc(row.get("name")), *(f'<span data-norm="{n.value}">{c}</span>' for n, c in zip(norms, counts)),
                          str(sweep) if swept else "–"], [False, *[True] * (len(norms) + 1)]))
    strict = s.eval_settings.get("strict")
    intro = ("Every adversarial point the attacks return is checked to lie in its ball and in [0, 1] "
             "(<code>check_in_ball_and_box</code>, robustft/lp.py). A point outside is projected onto both and counted "
             "as the projected point classifies" + (": the evaluation ran with <code>--strict</code>, which stops at the first one." if strict else "; "
             "<code>robustft eval --strict</code> refuses instead."))
    verdict = ("No adversarial point was invalid." if total == 0 else
               f"{total} adversarial point(s) were invalid and were projected: the attack that returned them may be faulty.")
    table = _table(["model", *(f"{n.label} invalid points" for n in norms), "radius sweep invalid points"], body,
                   numeric=[False, *[True] * (len(norms) + 1)], cls="validity")
    return _p(intro) + table + _p(esc(verdict), "note" if total == 0 else "notice bad")


def sanity_section(s: RunSources) -> str:
    checks = s.eval_extra.get("sanity")
    if not isinstance(checks, list) or not checks:
        return _p("No gradient-masking checks are stored with this evaluation (they are run by "
                  "<code>robustft eval --sanity</code>; docs/reliability.md).", "note")
    body, failed = [], 0
    for check in checks:
        if not isinstance(check, Mapping):
            continue
        passed = bool(check.get("passed"))
        failed += not passed
        result = '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'
        body.append(_row([esc(check.get("model")), esc(check.get("check")), esc(_label(str(check.get("norm", "")))), result, esc(check.get("detail"))]))
    verdict = (f"All {len(body)} checks passed." if not failed else
               f"{failed} of {len(body)} checks failed: the robust accuracies above may be overestimated.")
    return _table(["model", "check", "norm", "result", "detail"], body, cls="sanity") + _p(esc(verdict), "note" if not failed else "notice bad")


def training_section(s: RunSources, figures: Figures) -> str:
    epochs = epoch_records(s.records)
    parts = []
    if not epochs:
        parts.append(_p("The run recorded no finished epoch in metrics.jsonl.", "notice"))
    else:
        body = []
        for e in epochs:
            peak = _number(e.get("peak_memory_mib"))
            cells = [esc(e.get("epoch")), _fixed(e.get("loss"), 4),
                     _fixed(e.get("seconds"), 2), _fixed(e.get("images_per_s"), 1), _fixed(e.get("attack_passes_per_s"), 0),
                     "–" if peak is None else f"{peak:.0f}", esc(e.get("nan_batches", 0))]
            body.append(_row(cells, [True] * len(cells), f' data-epoch="{esc(e.get("epoch"))}"'))
        parts.append(_table(["epoch", "loss", "seconds", "images / s", "attack passes / s", "peak memory (MiB)", "skipped batches"],
                            body, numeric=[True] * 7, cls="epochs"))
        parts.append(_p(esc(timing_summary(epochs)), "note"))
    if any(r.get("kind") == "batch" for r in s.records):
        from robustft.plotting.training import training_curves

        title = f"{s.info.get('scheme', 'fine-tuning')} on {s.info.get('base_model', 'the base model')}"
        parts.append(figures.figure("training", lambda: training_curves(s.records, title=title),
                                    "Training loss, robust training error per norm and, where the scheme records them, "
                                    "the norms' sampling probabilities (as robustft plot training draws them)."))
    else:
        parts.append(_p("The run recorded no training batch in metrics.jsonl, so there are no training curves.", "note"))
    return "".join(parts)


def _fixed(value: Any, digits: int) -> str:
    number = _number(value)
    return "–" if number is None else f"{number:.{digits}f}"


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def timing_summary(epochs: Sequence[Mapping[str, Any]]) -> str:
    """Seconds per epoch (mean and total) and the peak memory, in a sentence."""
    seconds = [v for v in (_number(e.get("seconds")) for e in epochs) if v is not None]
    peaks = [v for v in (_number(e.get("peak_memory_mib")) for e in epochs) if v is not None]
    parts = []
    if seconds:
        parts.append(f"{len(seconds)} epoch(s), {_seconds(sum(seconds) / len(seconds))} per epoch on average, {_seconds(sum(seconds))} in all.")
    peak = ("Peak memory " + f"{max(peaks):.0f} MiB (the largest epoch's; on CUDA the allocator's peak, elsewhere the process's "
            "resident set: robustft/memory.py).") if peaks else "Peak memory was not recorded."
    return " ".join([*parts, peak])


def compare_section(data: Mapping[str, Any], figures: Figures) -> str:
    """The table of ``robustft compare`` (mean ± std over seeds) and its two figures."""
    settings = data.get("settings") or {}
    eval_settings = settings.get("eval") or {}
    base = data.get("base") or {}
    schemes = list(data.get("schemes") or [])
    # the comparison's own norms: its base model may have been evaluated in more (a cached evaluation)
    named = {str(n) for n in eval_settings.get("norms") or []}
    norms = [n for n in DISPLAY_ORDER if n.value in named] or _norms_of([base, *schemes])
    eps = eval_settings.get("eps") or base.get("eps") or {}
    columns = ["model", "clean", *(f"{n.label} ({eps.get(n.value, '?')})" for n in norms), "union", "s / epoch", "passes / image"]
    numeric = [False, *[True] * (len(columns) - 1)]
    body = []
    if base:
        body.append(_row([esc(base.get("name")), _pct(base.get("clean")), *(_pct((base.get("robust") or {}).get(n.value)) for n in norms),
                          _pct(base.get("union")), "–", "–"], numeric, ' data-row="base"'))
    for row in schemes:
        robust = row.get("robust") or {}
        passes = row.get("passes_per_image")
        body.append(_row([esc(f"+ {row.get('scheme')}"), _mean_std(row.get("clean")), *(_mean_std(robust.get(n.value)) for n in norms),
                          _mean_std(row.get("union")), _mean_std(row.get("seconds_per_epoch"), 1.0, 2),
                          _mean_std(passes.get("mean") if isinstance(passes, Mapping) else passes, 1.0, 1)],
                         numeric, f' data-row="{esc(row.get("scheme"))}"'))
    seeds = len(settings.get("seeds") or []) or 1
    caption = (f"Robust accuracy (%) on {esc(base.get('n'))} {esc(base.get('dataset'))} test points, suite "
               f"{esc(eval_settings.get('suite'))}; mean ± std over {seeds} seed(s)")
    from robustft.plotting.tradeoff import cost_tradeoff, union_bars

    return "".join([
        _p(f"From the comparison folder {esc(data.get('out'))} (as {_command('robustft', 'compare', '--out', str(data.get('out')))} "
           "tabulates it; standard deviations over seeds are sample standard deviations)."),
        _table(columns, body, caption=caption, numeric=numeric, cls="compare"),
        figures.figure("compare-union", lambda: union_bars(schemes, base=base or None),
                       "Union robust accuracy per scheme, mean and standard deviation over seeds; the base model dashed."),
        figures.figure("compare-cost", lambda: cost_tradeoff(schemes, base=base or None),
                       "Union robust accuracy against the training time per epoch (E-AT paper, Table 12)."),
    ])


def config_section(s: RunSources) -> str:
    if s.config is None:
        return _p(esc(s.config_problem), "notice bad")
    provenance = s.config.get("provenance") if isinstance(s.config.get("provenance"), Mapping) else {}
    body = [_row([f"<code>{esc(k)}</code>", esc(_shown(v)), esc(provenance.get(k, "–"))], attrs=f' data-setting="{esc(k)}"')
            for k, v in s.config.items() if k != "provenance"]
    return (_p("The resolved settings of the run (<code>config.toml</code>: repeat the run with "
               f"{_command('robustft', 'finetune', '--config', str(s.run / 'config.toml'))}) and where each came from: "
               "robustft's default, the data set's recipe, the base model, a configuration file or a command-line option.")
            + _table(["setting", "value", "source"], body, cls="config"))


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_section(s: RunSources) -> str:
    """What the run recorded of where it ran, beside the environment making this page."""
    config = s.config or {}
    device = str(config.get("device", "auto"))
    if device == "auto":
        device += " (CUDA where present, else the CPU)"
    rows = [
        ("robustft", s.info.get("robustft_version") or "not recorded", robustft.__version__),
        ("Python", "not recorded", platform.python_version()),
        ("torch", "not recorded", _version("torch")),
        ("matplotlib", "–", _version("matplotlib")),
        ("platform", "not recorded", platform.platform()),
        ("device", f"setting: {device}", "–"),
        ("processes", s.info.get("processes", 1), "–"),
        ("mixed precision", f"setting: {config['amp']}" if "amp" in config else "not recorded", "–"),
    ]
    body = [_row([esc(k), esc(run), esc(here)], attrs=f' data-item="{esc(k)}"') for k, run, here in rows]
    return (_table(["", "recorded by the run", "this report was made with"], body, cls="environment")
            + _p("run.json records the robustft version, not the Python or torch version: the last column is the "
                 "environment of this report, the run's only where both were made in the same one.", "note"))


# --------------------------------------------------------------------------------------------- page


@dataclass
class HtmlReport:
    """A rendered page, what it holds, and (once written) where it is."""

    run: Path
    html: str
    evaluated: bool
    figures: list[str]
    notes: list[str]
    compare: Path | None = None
    path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"report": str(self.path) if self.path else None, "run": str(self.run), "evaluated": self.evaluated,
                "figures": self.figures, "compare": str(self.compare) if self.compare else None, "notes": self.notes}


def render_report(run: str | Path | None = None, compare: str | Path | None = None) -> HtmlReport:
    """The page of ``run`` (default: the latest run) and of the ``robustft compare`` folder ``compare``, not written
    anywhere."""
    sources = read_sources(run if run is not None else latest_run())
    comparison = None
    if compare is not None:
        from robustft.plotting.sources import load_comparison

        comparison = load_comparison(compare)  # a folder the user named must be one: one sentence if not
    figures = Figures()
    if figures.missing:
        log.warning("%s The report has no figures.", figures.missing.rstrip("."))
    sections: list[tuple[str, str, str]] = [
        ("evaluation", "Evaluation", evaluation_section(sources, figures)),
        ("validity", "Validity of the adversarial points", validity_section(sources)),
        ("sanity", "Gradient-masking checks", sanity_section(sources)),
        ("training", "Training: curves, time and memory", training_section(sources, figures)),
    ]
    if comparison is not None:
        sections.append(("compare", "Comparison of schemes", compare_section(comparison, figures)))
    sections += [
        ("configuration", "Configuration and where each setting came from", config_section(sources)),
        ("environment", "Environment", environment_section(sources)),
    ]
    info = sources.info
    title = f"robustft report: {sources.run.name}"
    lead = f"{info.get('scheme')} fine-tuning of {info.get('base_model')} on {info.get('dataset')}"
    nav = "".join(f'<li><a href="#{key}">{esc(heading)}</a></li>' for key, heading, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{esc(heading)}</h2>{content}</section>' for key, heading, content in sections)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(title)}</h1>"
        f"{_p(esc(lead), 'lead')}"
        f"{overview(sources)}<nav><ul>{nav}</ul></nav></header>{body}"
        f"<footer>Made by robustft {esc(robustft.__version__)} with {_command('robustft', 'report', str(sources.run))}. "
        "This file is self-contained: no scripts, fonts, stylesheets or links outside it.</footer>"
        "</main></body></html>\n"
    )
    notes = [n for n in (sources.eval_problem, sources.config_problem, figures.missing) if n]
    if not sources.evaluated and not sources.eval_problem:
        notes.append("The run has not been evaluated.")
    return HtmlReport(run=sources.run, html=page, evaluated=sources.evaluated, figures=figures.drawn, notes=notes,
                      compare=Path(compare) if compare is not None else None)


def report_path(run: str | Path, out: str | Path | None = None) -> Path:
    """Where the page goes: ``out`` (a folder that exists gets ``report.html`` inside), else ``<run>/report.html``."""
    if out is None:
        return Path(run) / REPORT_FILE
    out = Path(out)
    return out / REPORT_FILE if out.is_dir() else out


def write_report(run: str | Path | None = None, out: str | Path | None = None, compare: str | Path | None = None) -> HtmlReport:
    """Render the page of ``run`` (default: the latest run) and write it atomically to :func:`report_path`; the
    report, with its path."""
    report = render_report(run, compare)
    path = report_path(report.run, out)
    try:
        atomic_write_text(path, report.html)
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"The report {str(path)!r} cannot be written ({exc.strerror or exc}).") from None
    report.path = path
    return report
