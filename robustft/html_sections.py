"""The sections of ``robustft report``'s page (robustft/html_report.py), each a function of the run's sources.

Evaluation (the clean, per-norm and union table of the base and the fine-tuned model, with its figures), the
validity of the adversarial points, the gradient-masking checks, training (epochs, time, memory, curves), a
``robustft compare`` folder's table and figures, the configuration with each setting's source, and the
environment. Each returns finished markup.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

import robustft
from robustft.errors import UserError
from robustft.html_assets import Figures
from robustft.html_markup import (
    accuracy_cell,
    command,
    esc,
    finite,
    fixed,
    html_row,
    html_table,
    mean_std,
    para,
    pct,
    shown,
)
from robustft.html_sources import RunSources, epoch_records
from robustft.norms import DISPLAY_ORDER, Norm


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
    redo = command("robustft", "eval", "--run", str(s.run))
    if s.eval_problem:
        return para(f"{esc(s.eval_problem)} The numbers are left out; evaluate with {redo}, then make this report again.", "notice bad")
    if not s.evaluated:
        return para(
            f"This run has not been evaluated. Evaluate it with {redo} (add <code>--radii</code> for radius curves, "
            f"<code>--sanity</code> for the gradient-masking checks), then run "
            f"{command('robustft', 'report', str(s.run))} again.",
            "notice",
        )
    rows, first = s.rows, s.rows[0]
    norms = _norms_of(rows)
    eps = first.get("eps") or {}
    columns = ["model", "clean", *(f"{n.label} ({eps.get(n.value, '?')})" for n in norms), "union"]
    body = []
    for row in rows:
        base = s.base if (row is s.tuned and s.base is not None) else None
        invalid = row.get("invalid_points") or {}
        cells = [esc(row.get("name")), accuracy_cell("clean", row.get("clean"), base and base.get("clean"))]
        for n in norms:
            cells.append(
                accuracy_cell(
                    n.value,
                    (row.get("robust") or {}).get(n.value),
                    base and (base.get("robust") or {}).get(n.value),
                    "*" if invalid.get(n.value) else "",
                )
            )
        cells.append(accuracy_cell("union", row.get("union"), base and base.get("union")))
        role = "fine-tuned" if row is s.tuned else "base"
        body.append(html_row(cells, [False, *[True] * (len(cells) - 1)], f' data-row="{role}"'))
    caption = f"Robust accuracy (%) on {esc(first.get('n'))} {esc(first.get('dataset'))} test points, suite {esc(first.get('suite'))}"
    notes = []
    if s.base is not None:
        notes.append("In brackets: the change against the base model, in points.")
    if any((row.get("invalid_points") or {}).get(n.value) for row in rows for n in norms):
        notes.append("* some adversarial points were outside their ball or [0, 1] and were projected before counting (see Validity).")
    settings = s.eval_settings
    made = ", ".join(f"{k} {shown(settings[k])}" for k in ("n_ex", "steps", "seed", "strict") if k in settings)
    source = f"From {esc(s.eval_path)}" + (f" ({esc(made)})" if made else "") + "."
    checksum = s.eval_extra.get("weights_sha256")
    if checksum:
        which = ", the run's current <code>model.pt</code>" if s.weights_match else " (the run's model.pt has no checksum file to compare)"
        source += f" It evaluated the weights with SHA-256 <code>{esc(str(checksum)[:16])}…</code>{which}."
    parts = [
        html_table(columns, body, caption=caption, numeric=[False, *[True] * (len(columns) - 1)], cls="accuracy"),
        para(" ".join([source, *map(esc, notes)]), "note"),
    ]
    from robustft.plotting.bars import accuracy_bars

    parts.append(
        figures.figure(
            "bars",
            lambda: accuracy_bars(rows),
            "Clean, per-norm and union accuracy of the base and the fine-tuned model (as robustft plot bars draws them).",
        )
    )
    swept = [row for row in rows if row.get("curves")]
    if swept:
        from robustft.plotting.curves import radius_curves

        parts.append("<h3>Robust accuracy against the radius</h3>")
        parts.append(curves_table(swept))
        parts.append(
            figures.figure(
                "curves",
                lambda: radius_curves(swept, title="Robust accuracy against the radius"),
                "Robust accuracy against the radius, one panel per norm (as robustft plot curves draws it).",
            )
        )
    return "".join(parts)


def curves_table(rows: Sequence[Mapping[str, Any]]) -> str:
    body = []
    for row in rows:
        curves = row.get("curves") or {}
        for n in (n for n in DISPLAY_ORDER if n.value in curves):
            curve = curves[n.value]
            points = "; ".join(
                f"{esc(r)}: {pct(a)} ({esc(k)})"
                for r, a, k in zip(curve.get("radii", []), curve.get("robust", []), curve.get("attacked_points", []))
            )
            body.append(html_row([esc(row.get("name")), esc(n.label), points]))
    return html_table(["model", "norm", "radius: robust accuracy % (points attacked there)"], body)


def validity_section(s: RunSources) -> str:
    if not s.evaluated:
        return para("No evaluation, so no adversarial points to count.", "note")
    rows = s.rows
    norms = _norms_of(rows)
    body, total = [], 0
    for row in rows:
        invalid = row.get("invalid_points") or {}
        counts = [int(invalid.get(n.value) or 0) for n in norms]
        swept = row.get("curves") or {}
        sweep = sum(int(c.get("invalid_points") or 0) for c in swept.values())
        total += sum(counts) + sweep
        body.append(
            html_row(
                [
                    esc(row.get("name")),
                    *(f'<span data-norm="{n.value}">{c}</span>' for n, c in zip(norms, counts)),
                    str(sweep) if swept else "–",
                ],
                [False, *[True] * (len(norms) + 1)],
            )
        )
    strict = s.eval_settings.get("strict")
    intro = (
        "Every adversarial point the attacks return is checked to lie in its ball and in [0, 1] "
        "(<code>check_in_ball_and_box</code>, robustft/lp.py). A point outside is projected onto both and counted "
        "as the projected point classifies"
        + (
            ": the evaluation ran with <code>--strict</code>, which stops at the first one."
            if strict
            else "; <code>robustft eval --strict</code> refuses instead."
        )
    )
    verdict = (
        "No adversarial point was invalid."
        if total == 0
        else f"{total} adversarial point(s) were invalid and were projected: the attack that returned them may be faulty."
    )
    table = html_table(
        ["model", *(f"{n.label} invalid points" for n in norms), "radius sweep invalid points"],
        body,
        numeric=[False, *[True] * (len(norms) + 1)],
        cls="validity",
    )
    return para(intro) + table + para(esc(verdict), "note" if total == 0 else "notice bad")


def sanity_section(s: RunSources) -> str:
    checks = s.eval_extra.get("sanity")
    if not isinstance(checks, list) or not checks:
        return para(
            "No gradient-masking checks are stored with this evaluation (they are run by "
            "<code>robustft eval --sanity</code>; docs/reliability.md).",
            "note",
        )
    body, failed = [], 0
    for check in checks:
        if not isinstance(check, Mapping):
            continue
        passed = bool(check.get("passed"))
        failed += not passed
        result = '<span class="pass">pass</span>' if passed else '<span class="fail">FAIL</span>'
        body.append(
            html_row(
                [
                    esc(check.get("model")),
                    esc(check.get("check")),
                    esc(_label(str(check.get("norm", "")))),
                    result,
                    esc(check.get("detail")),
                ]
            )
        )
    verdict = (
        f"All {len(body)} checks passed."
        if not failed
        else f"{failed} of {len(body)} checks failed: the robust accuracies above may be overestimated."
    )
    return html_table(["model", "check", "norm", "result", "detail"], body, cls="sanity") + para(
        esc(verdict), "note" if not failed else "notice bad"
    )


def training_section(s: RunSources, figures: Figures) -> str:
    epochs = epoch_records(s.records)
    parts = []
    if not epochs:
        parts.append(para("The run recorded no finished epoch in metrics.jsonl.", "notice"))
    else:
        body = []
        for e in epochs:
            peak = finite(e.get("peak_memory_mib"))
            cells = [
                esc(e.get("epoch")),
                fixed(e.get("loss"), 4),
                fixed(e.get("seconds"), 2),
                fixed(e.get("images_per_s"), 1),
                fixed(e.get("attack_passes_per_s"), 0),
                "–" if peak is None else f"{peak:.0f}",
                esc(e.get("nan_batches", 0)),
            ]
            body.append(html_row(cells, [True] * len(cells), f' data-epoch="{esc(e.get("epoch"))}"'))
        parts.append(
            html_table(
                ["epoch", "loss", "seconds", "images / s", "attack passes / s", "peak memory (MiB)", "skipped batches"],
                body,
                numeric=[True] * 7,
                cls="epochs",
            )
        )
        parts.append(para(esc(timing_summary(epochs)), "note"))
    if any(r.get("kind") == "batch" for r in s.records):
        from robustft.plotting.training import training_curves

        title = f"{s.info.get('scheme', 'fine-tuning')} on {s.info.get('base_model', 'the base model')}"
        parts.append(
            figures.figure(
                "training",
                lambda: training_curves(s.records, title=title),
                "Training loss, robust training error per norm and, where the scheme records them, "
                "the norms' sampling probabilities (as robustft plot training draws them).",
            )
        )
    else:
        parts.append(para("The run recorded no training batch in metrics.jsonl, so there are no training curves.", "note"))
    return "".join(parts)


def _seconds(value: float) -> str:
    return f"{value:.3g} s" if value < 100 else f"{value:.0f} s"


def timing_summary(epochs: Sequence[Mapping[str, Any]]) -> str:
    """Seconds per epoch (mean and total) and the peak memory, in a sentence."""
    seconds = [v for v in (finite(e.get("seconds")) for e in epochs) if v is not None]
    peaks = [v for v in (finite(e.get("peak_memory_mib")) for e in epochs) if v is not None]
    parts = []
    if seconds:
        parts.append(
            f"{len(seconds)} epoch(s), {_seconds(sum(seconds) / len(seconds))} per epoch on average, {_seconds(sum(seconds))} in all."
        )
    peak = (
        (
            "Peak memory " + f"{max(peaks):.0f} MiB (the largest epoch's; on CUDA the allocator's peak, elsewhere the process's "
            "resident set: robustft/memory.py)."
        )
        if peaks
        else "Peak memory was not recorded."
    )
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
        body.append(
            html_row(
                [
                    esc(base.get("name")),
                    pct(base.get("clean")),
                    *(pct((base.get("robust") or {}).get(n.value)) for n in norms),
                    pct(base.get("union")),
                    "–",
                    "–",
                ],
                numeric,
                ' data-row="base"',
            )
        )
    for row in schemes:
        robust = row.get("robust") or {}
        passes = row.get("passes_per_image")
        body.append(
            html_row(
                [
                    esc(f"+ {row.get('scheme')}"),
                    mean_std(row.get("clean")),
                    *(mean_std(robust.get(n.value)) for n in norms),
                    mean_std(row.get("union")),
                    mean_std(row.get("seconds_per_epoch"), 1.0, 2),
                    mean_std(passes.get("mean") if isinstance(passes, Mapping) else passes, 1.0, 1),
                ],
                numeric,
                f' data-row="{esc(row.get("scheme"))}"',
            )
        )
    seeds = len(settings.get("seeds") or []) or 1
    caption = (
        f"Robust accuracy (%) on {esc(base.get('n'))} {esc(base.get('dataset'))} test points, suite "
        f"{esc(eval_settings.get('suite'))}; mean ± std over {seeds} seed(s)"
    )
    from robustft.plotting.tradeoff import cost_tradeoff, union_bars

    return "".join(
        [
            para(
                f"From the comparison folder {esc(data.get('out'))} (as {command('robustft', 'compare', '--out', str(data.get('out')))} "
                "tabulates it; standard deviations over seeds are sample standard deviations)."
            ),
            html_table(columns, body, caption=caption, numeric=numeric, cls="compare"),
            figures.figure(
                "compare-union",
                lambda: union_bars(schemes, base=base or None),
                "Union robust accuracy per scheme, mean and standard deviation over seeds; the base model dashed.",
            ),
            figures.figure(
                "compare-cost",
                lambda: cost_tradeoff(schemes, base=base or None),
                "Union robust accuracy against the training time per epoch (E-AT paper, Table 12).",
            ),
        ]
    )


def config_section(s: RunSources) -> str:
    if s.config is None:
        return para(esc(s.config_problem), "notice bad")
    provenance = s.config.get("provenance") if isinstance(s.config.get("provenance"), Mapping) else {}
    body = [
        html_row([f"<code>{esc(k)}</code>", esc(shown(v)), esc(provenance.get(k, "–"))], attrs=f' data-setting="{esc(k)}"')
        for k, v in s.config.items()
        if k != "provenance"
    ]
    return para(
        "The resolved settings of the run (<code>config.toml</code>: repeat the run with "
        f"{command('robustft', 'finetune', '--config', str(s.run / 'config.toml'))}) and where each came from: "
        "robustft's default, the data set's recipe, the base model, a configuration file or a command-line option."
    ) + html_table(["setting", "value", "source"], body, cls="config")


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
    body = [html_row([esc(k), esc(run), esc(here)], attrs=f' data-item="{esc(k)}"') for k, run, here in rows]
    return html_table(["", "recorded by the run", "this report was made with"], body, cls="environment") + para(
        "run.json records the robustft version, not the Python or torch version: the last column is the "
        "environment of this report, the run's only where both were made in the same one.",
        "note",
    )
