"""docs/reproduction.md from the summary ``benchmarks/reproduce.py`` writes: tables, claims, the papers' numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: PreAct ResNet-18, l-inf-AT base fine-tuned 3 epochs on CIFAR-10, mean (std) over 5 seeds: clean, l-inf, l2, l1, union.
#: E-AT Table 12 (SAT, MAX, MSD, E-AT unif., E-AT) and Table 7 (the base); RAMP Table 2 (AVG, RAMP; the rest
#: of its rows repeat E-AT's). The E-AT text at hand is the ICLR-2022 submission, whose Table 12 has no AVG.
PAPER = {
    "base": ("E-AT Tab. 7", (83.7, 48.1, 59.8, 7.7, 7.7)),
    "sat": ("E-AT Tab. 12", (83.5, 43.5, 68.0, 47.4, 41.0)),
    "avg": ("RAMP Tab. 2", (84.2, 43.3, 68.4, 46.9, 40.6)),
    "max": ("E-AT Tab. 12", (82.2, 45.2, 67.0, 46.1, 42.2)),
    "msd": ("E-AT Tab. 12", (82.2, 44.9, 67.1, 47.2, 42.6)),
    "e-at-uniform": ("E-AT Tab. 12", (82.6, 44.4, 68.0, 48.5, 42.2)),
    "e-at": ("E-AT Tab. 12", (82.7, 44.3, 68.1, 48.7, 42.2)),
    "ramp": ("RAMP Tab. 2", (81.1, 45.4, 66.1, 47.2, 43.1)),
}
#: Seconds per epoch relative to l-inf AT, PreAct ResNet-18 on one V100 (E-AT Table 5).
PAPER_COST = {"linf-at": 1.00, "l1-at": 1.29, "sat": 1.07, "avg": 3.17, "max": 3.09, "msd": 2.03, "e-at-uniform": 1.08, "e-at": 1.06}
ORDER = ("linf-at", "l1-at", "sat", "avg", "max", "max (select=attack)", "msd", "msd (l1-topk=0.005)", "e-at-uniform", "e-at", "ramp")
NORM_KEYS = ("inf", "2", "1")
#: What the numbers say where a claim does not reproduce, and the experiments behind that reading: written by
#: hand, included in the page as it is (section "Reading the claims").
READING = Path(__file__).with_name("reproduction_reading.md")


def _pct(stat: dict[str, Any] | float, seeds: int = 1) -> str:
    if isinstance(stat, dict):
        return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}" if seeds > 1 else f"{100 * stat['mean']:.1f}"
    return f"{100 * stat:.1f}"


def draw_figures(summary: dict[str, Any], folder: Path) -> list[tuple[str, str]]:
    """The report's figures, drawn with robustft.plotting (the same as ``robustft plot``): (file name, caption)."""
    from robustft.plotting import accuracy_bars, cost_tradeoff

    rows = {row["scheme"]: row for row in summary["rows"]}
    ordered = [rows[s] for s in ORDER if s in rows]
    base = summary["base"]
    figures = []
    if base is not None and ordered:
        bars = accuracy_bars([{**base, "name": "base (l-inf AT)"}, *ordered], title="CIFAR-10, before and after 3 epochs of fine-tuning")
        bars.save(folder / "reproduction-bars")
        figures.append(
            (
                "reproduction-bars.png",
                "Clean, per-norm and union robust accuracy of the base and every scheme (reduced protocol; error bars: std over seeds).",
            )
        )
    timing = summary.get("timing")
    if base is not None and timing:
        # the cost axis is the side-by-side timing (seconds per image x the fine-tuning subset), not the runs' own
        # epochs, which ran at different times under different loads
        per_epoch = {s: seconds * summary["scale"]["n_train"] for s, seconds in timing["seconds_per_image"].items()}
        timed = [{**row, "seconds_per_epoch": per_epoch[row["scheme"]]} for row in ordered if row["scheme"] in per_epoch]
        trade = cost_tradeoff(timed, base=base, title="Union robust accuracy against the cost of an epoch")
        trade.save(folder / "reproduction-cost")
        figures.append(
            (
                "reproduction-cost.png",
                "Union robust accuracy against seconds per training epoch of "
                f"{summary['scale']['n_train']} images, every scheme timed side by side in one command "
                "(`--part timing`; error bars: std over seeds).",
            )
        )
    if summary.get("curves"):
        from robustft.plotting import radius_curves

        radius_curves(summary["curves"], title="Robust accuracy against the radius").save(folder / "reproduction-radii")
        n = summary["curves"][0].get("n")
        figures.append(
            (
                "reproduction-radii.png",
                f"Robust accuracy against the radius in each norm, base and E-AT model "
                f"(reduced protocol, first {n} test points; the papers' radii are 8/255, 0.5 and 12).",
            )
        )
    return figures


def verdict(holds: bool | None, comment: str, fails: str = "does not hold") -> str:
    """A claim's verdict: pending, not resolved (and why), reported (no threshold), holds (or at which budget it
    holds), or ``fails``."""
    if holds is None:
        return comment if comment == "pending" or comment.startswith("not resolved") else "reported"
    if holds:
        return comment if comment.startswith("holds") else "holds"
    return fails


def write_report(summary: dict[str, Any], claims: list[tuple[str, str, bool | None, str]], path: Path) -> None:
    scale, rows = summary["scale"], {row["scheme"]: row for row in summary["rows"]}
    relative = (summary.get("timing") or {}).get("relative", {})
    base = summary["base"]
    if base is None:
        raise ValueError("the summary has no evaluation of the base model yet: nothing to report")
    lines = [
        "# Reproduction on CIFAR-10 at CPU scale",
        "",
        "Written by `python benchmarks/reproduce.py "
        + ("--collect " if summary.get("pending") is not None else "")
        + "--report docs/reproduction.md` from its cached runs"
        + (" (**--quick: fabricated images, not a result**)." if summary.get("quick") else "."),
        f"Machine: {summary['machine']['cpus']} CPU cores, {summary['machine']['threads']} torch threads, torch "
        f"{summary['machine']['torch']}, GPU: {summary['machine']['gpu'] or 'none'}; finished {summary['finished']}.",
        "",
        "## Setting, and every reduction",
        "",
        "- Base model: `cifar10-preact-w16-linf` (PreAct ResNet-18 at a quarter width, FGSM-RS l-inf training at "
        "8/255 on all 50,000 training images; `benchmarks/train_cifar_base.py`). The papers start from a full-width "
        "PreAct ResNet-18 (11M parameters, 80 epochs of l-inf AT): ours has 16x fewer FLOPs.",
        f"- Fine-tuning: {scale['epochs']} epochs on the first {scale['n_train']} training images of the fixed "
        f"pseudo-random order (the papers: all 50,000), APGD with {scale['attack_steps']} steps, batch 128, lr 0.05 "
        "divided by 10 after each third, weight decay 5e-4: the papers' recipe otherwise.",
        f"- Scheme table: the first {scale['n_ex']} test points, a reduced protocol applied to every row alike: "
        f"APGD-CE (1 restart) then APGD-T with 3 targets, {scale['steps']} steps, in each norm (the papers: 9 targets, "
        "100 steps; l1 with 5 restarts, 5 targets and the large-radius schedule).",
        f"- The base and one E-AT model again with the full E-AT protocol on {scale['full_n_ex']} points, {scale['full_steps']} steps.",
        "- Radii: the papers' (l-inf 8/255, l2 0.5, l1 12).",
        "",
        "## Union table (robust accuracy, %)",
        "",
        f"Mean ± std over {scale['seeds']} seeds for E-AT and RAMP, {scale.get('max_seeds', scale['seeds'])} for the two "
        "MAX rows, one seed for the others. Time per epoch relative to l-inf AT: every scheme timed side by side in one "
        "command, round-robin, the median over the rounds of its ratio to l-inf AT's run of the same round (`--part timing`), on the process CPU time, which other "
        "single-thread processes on the machine do not change; the claims table gives the wall-clock ratios and "
        "passes per image beside it. "
        "Right: the papers' PreAct ResNet-18 (5 seeds, full scale).",
        "",
        "| model | clean | l-inf | l2 | l1 | union | s/epoch vs l-inf AT | paper: clean / l-inf / l2 / l1 / union | paper cost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    paper_base = PAPER["base"]
    lines.append(
        f"| base (l-inf AT) | {_pct(base['clean'])} | "
        + " | ".join(_pct(base["robust"][k]) for k in NORM_KEYS)
        + f" | {_pct(base['union'])} | - | {' / '.join(map(str, paper_base[1]))} ({paper_base[0]}) | - |"
    )
    for scheme in ORDER:
        row = rows.get(scheme)
        if row is None:
            continue
        seeds = len(row["seeds"])
        cost = f"{relative[scheme]:.2f}" if scheme in relative else ("not timed" if relative else "pending")
        paper = PAPER.get(scheme)
        paper_cells = f"{' / '.join(map(str, paper[1]))} ({paper[0]})" if paper else "-"
        lines.append(
            f"| + {scheme} | {_pct(row['clean'], seeds)} | "
            + " | ".join(_pct(row["robust"][k], seeds) for k in NORM_KEYS)
            + f" | {_pct(row['union'], seeds)} | {cost} | {paper_cells} | {PAPER_COST.get(scheme, '-')} |"
        )
    pending = summary.get("pending") or []
    if pending:
        lines += [
            "",
            "**Not finished yet** (this page is from `--collect` on a run still in progress; the same command continues it):",
            "",
        ] + [f"- {item}" for item in pending]
    figures = draw_figures(summary, path.parent / "images")
    if figures:
        lines += ["", "## Figures", ""]
        for name, caption in figures:
            lines += [f"![{caption}](images/{name})", "", caption, ""]
    full = summary["full"]
    lines += [
        "",
        f"## Full E-AT protocol ({scale['full_n_ex']} points, {scale['full_steps']} steps)",
        "",
        "| model | clean | l-inf | l2 | l1 | union |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    if not full:
        lines.append("| pending (`--part full-base,full-e-at`) | | | | | |")
    for result in full.values():
        lines.append(
            f"| {result['name']} | {_pct(result['clean'])} | "
            + " | ".join(_pct(result["robust"][k]) for k in NORM_KEYS)
            + f" | {_pct(result['union'])} |"
        )
    lines += ["", "## The papers' claims", "", "| claim | measured | verdict |", "| --- | --- | --- |"]
    for claim, measured, holds, comment in claims:
        lines.append(f"| {claim} | {measured} | {verdict(holds, comment, '**does not hold**')} |")
    if READING.is_file() and not summary.get("quick"):  # the engineers' reading of the real numbers, kept across regenerations
        lines += ["", READING.read_text(encoding="utf-8").rstrip()]
    lines += [
        "",
        "Commands:",
        "",
        "```bash",
        "python benchmarks/train_cifar_base.py --epochs 10 --export plugins/robustft_plugins/zoos/weights   # the base model",
        "export OMP_NUM_THREADS=1   # one thread per process, two processes on two cores",
        "(python benchmarks/reproduce.py --part seeded && python benchmarks/reproduce.py --part single) &",
        "python benchmarks/reproduce.py --part max,max-attack,msd-sparse; wait",
        "# two processes share the full protocol's norms and the curves' models (benchmarks/shared_work.py)",
        "python benchmarks/reproduce.py --part full-base,full-e-at,curves & python benchmarks/reproduce.py --part full-base,full-e-at,curves; wait",
        "python benchmarks/reproduce.py --part timing   # alone on the machine",
        "python benchmarks/reproduce.py --part timing --timing-rounds 15 --timing-schemes linf-at,e-at,l1-at   # alone: claim (c)'s ratio",
        "python benchmarks/reproduce.py --collect --report docs/reproduction.md   # this page",
        "```",
        "",
    ]
    path.write_text("\n".join(lines))
