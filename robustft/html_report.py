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

This module assembles and writes the page; the run's files are read in robustft/html_sources.py, the sections
made in robustft/html_sections.py from the markup helpers of robustft/html_markup.py, and the style sheet and
figures are robustft/html_assets.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import robustft
from robustft.errors import UserError
from robustft.html_assets import CSS, Figures
from robustft.html_markup import command, esc, para
from robustft.html_sections import (
    compare_section,
    config_section,
    environment_section,
    evaluation_section,
    overview,
    sanity_section,
    training_section,
    validity_section,
)
from robustft.html_sources import read_sources
from robustft.io import atomic_write_text
from robustft.rundir import latest_run

log = logging.getLogger("robustft")

#: The page's file name in the run folder (the default of ``--out``).
REPORT_FILE = "report.html"


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
        return {
            "report": str(self.path) if self.path else None,
            "run": str(self.run),
            "evaluated": self.evaluated,
            "figures": self.figures,
            "compare": str(self.compare) if self.compare else None,
            "notes": self.notes,
        }


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
        f"{para(esc(lead), 'lead')}"
        f"{overview(sources)}<nav><ul>{nav}</ul></nav></header>{body}"
        f"<footer>Made by robustft {esc(robustft.__version__)} with {command('robustft', 'report', str(sources.run))}. "
        "This file is self-contained: no scripts, fonts, stylesheets or links outside it.</footer>"
        "</main></body></html>\n"
    )
    notes = [n for n in (sources.eval_problem, sources.config_problem, figures.missing) if n]
    if not sources.evaluated and not sources.eval_problem:
        notes.append("The run has not been evaluated.")
    return HtmlReport(
        run=sources.run,
        html=page,
        evaluated=sources.evaluated,
        figures=figures.drawn,
        notes=notes,
        compare=Path(compare) if compare is not None else None,
    )


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
