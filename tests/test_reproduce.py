"""benchmarks/reproduce.py --quick: the reproduction pipeline end to end on a fabricated image folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow


def test_quick_reproduction_writes_every_row_the_claims_and_the_report(tmp_path):
    out, report = tmp_path / "out", tmp_path / "reproduction.md"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUSTFT_RUNS_DIR": str(tmp_path / "runs")}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), "--quick", "--out", str(out), "--report", str(report)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    schemes = {row["scheme"]: row for row in summary["rows"]}
    variants = {"max (select=attack)", "msd (l1-topk=0.005)"}
    assert set(schemes) == {"e-at", "ramp", "max", "linf-at", "e-at-uniform", "sat", "avg", "msd", "l1-at"} | variants
    assert len(schemes["e-at"]["seeds"]) == 2 and len(schemes["sat"]["seeds"]) == 1
    assert set(summary["full"]) == {"base", "e-at"} and summary["full"]["base"]["n"] == 6
    for row in schemes.values():
        assert 0 <= row["union"]["mean"] <= min(r["mean"] for r in row["robust"].values()) <= row["clean"]["mean"]
    assert len([line for line in done.stdout.splitlines() if line.startswith("(")]) == 5  # the five claims
    # claim (c)'s side-by-side timing: every scheme, relative to l-inf AT, the timed runs' folders removed
    timing = summary["timing"]
    assert timing["relative"]["linf-at"] == 1.0 and set(timing["relative"]) == set(schemes) - variants
    assert timing["passes_per_image"]["max"] > timing["passes_per_image"]["e-at"] > 0
    assert [p.name for p in (out / "timing").iterdir()] == ["timing.json"]
    text = report.read_text()
    assert "fabricated images, not a result" in text and "| + e-at |" in text and "E-AT Tab. 12" in text
    assert "Reading the claims" not in text  # the hand-written reading is of the real run's numbers only
    # resumable: a second call trains and evaluates nothing again
    again = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert again.returncode == 0 and "Fine-tuning" not in again.stderr
    # --collect computes nothing and reports what is cached, with the package's figures
    report_dir = tmp_path / "docs"
    collected = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "reproduce.py"),
            "--quick",
            "--out",
            str(out),
            "--collect",
            "--report",
            str(report_dir / "reproduction.md"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert collected.returncode == 0, collected.stderr[-3000:]
    assert "Fine-tuning" not in collected.stderr and "Evaluating" not in collected.stderr
    assert (report_dir / "images" / "reproduction-bars.png").is_file() and (report_dir / "images" / "reproduction-cost.svg").is_file()
    assert "Not finished yet" not in (report_dir / "reproduction.md").read_text()


def test_collect_reports_a_partial_run_with_pending_rows_and_claims(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import reproduce
    finally:
        sys.path.pop(0)
    summary = {
        "base": {"robust": {"1": 0.1, "inf": 0.4, "2": 0.5}, "union": 0.1},
        "rows": [{"scheme": "e-at", "union": {"mean": 0.3, "std": 0.01}, "robust": {"inf": {"mean": 0.35}}}],
    }
    verdicts = {claim[:3]: (holds, comment) for claim, _, holds, comment in reproduce.claims(summary)}
    assert verdicts["(a)"] == (True, "must hold") and verdicts["(b)"] == (True, "must hold")
    assert verdicts["(c)"] == (None, "pending") and verdicts["(e)"] == (None, "pending")
    # a claim is never judged on the seeds evaluated so far
    partial = {**summary, "pending": ["seeded: e-at (2 seed(s) not evaluated yet)"]}
    verdicts = {claim[:3]: (holds, comment) for claim, _, holds, comment in reproduce.claims(partial)}
    assert verdicts["(a)"] == (True, "must hold") and verdicts["(b)"] == (None, "pending")
    # (c) is judged on the side-by-side timing
    timed = {
        **summary,
        "timing": {
            "relative": {"e-at": 1.04, "max": 2.9, "avg": 2.1, "l1-at": 1.3},
            "passes_per_image": {"linf-at": 33.0, "e-at": 33.0, "max": 99.0, "avg": 99.0, "l1-at": 33.0},
        },
    }
    verdicts = {claim[:3]: (holds, comment) for claim, _, holds, comment in reproduce.claims(timed)}
    assert verdicts["(c)"] == (True, "must hold")
    slow_eat = {**timed, "timing": {**timed["timing"], "relative": {"e-at": 1.2, "max": 2.9, "avg": 2.1, "l1-at": 1.3}}}
    assert reproduce.claims(slow_eat)[2][2] is False


def test_missing_images_are_one_sentence(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), "--out", str(tmp_path / "o"), "--data", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"error: The CIFAR-10 images are not in {str(tmp_path / 'none')!r}: extract cifar10-jpeg.tar.xz there (or pass "
        "--data), or run with --quick to check the pipeline on fabricated images."
    ]


def test_an_unknown_part_is_one_sentence_naming_the_parts(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "reproduce.py"), "--out", str(tmp_path / "o"), "--part", "seeded,fancy"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: Unknown --part fancy; the parts are seeded, single, max, max-attack, msd-sparse, full-base, full-e-at, curves, timing."
    ]


def test_timing_summary_counts_every_round_a_scheme_has(tmp_path):
    """``--timing-schemes linf-at,e-at --timing-rounds 5`` adds rounds to two schemes; the summary takes each
    scheme's median over all its rounds, and waits until every scheme has the minimum."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import reproduce

    def run(cpu_seconds: float) -> dict:
        return {"seconds": cpu_seconds, "images": 30, "passes": 60, "cpu_seconds": cpu_seconds, "cpu_images": 20}

    stored = {f"{s}/seed{k}": run(2.0) for s in reproduce.TIMED for k in range(3)}
    # l-inf AT: 2.0 in every round; E-AT: 2.6 in its first three rounds, 2.1 in five more
    stored.update({f"e-at/seed{k}": run(2.6 if k < 3 else 2.1) for k in range(8)})
    stored.update({f"linf-at/seed{k}": run(2.0) for k in range(8)})
    path = tmp_path / "timing.json"
    path.write_text(json.dumps(stored))
    summary = reproduce.timing_summary(path, 3)
    assert summary["rounds"]["e-at"] == 8 and summary["rounds"]["max"] == 3
    assert summary["relative"]["e-at"] == pytest.approx(2.1 / 2.0)  # the median of 8 rounds, not of the first 3
    del stored["max/seed2"]
    path.write_text(json.dumps(stored))
    assert reproduce.timing_summary(path, 3) is None


def test_claim_b_names_the_budget_at_which_it_holds():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import reproduce
    from reproduction_report import verdict

    def row(union: float, inf: float, seeds: int) -> dict:
        return {"union": {"mean": union}, "robust": {"inf": {"mean": inf}}, "seeds": list(range(seeds))}

    base = {"union": 0.19, "robust": {"inf": 0.34}}
    summary = {"scale": {"n_train": 2000}, "budget": []}
    measured, holds, comment = reproduce._claim_b({"e-at": row(0.28, 0.30, 3)}, base, summary)
    assert not holds and verdict(holds, comment) == "does not hold" and "2,000 training images (3 seeds): union +9.0" in measured
    summary["budget"] = [{"n_train": 10000, "row": row(0.34, 0.34, 1)}]
    measured, holds, comment = reproduce._claim_b({"e-at": row(0.28, 0.30, 3)}, base, summary)
    assert (
        holds
        and verdict(holds, comment) == "holds from 10,000 training images"
        and "10,000 training images (1 seed): union +15.0" in measured
    )
    assert verdict(*reproduce._claim_b({"e-at": row(0.30, 0.30, 3)}, base, summary)[1:]) == "holds"  # the table's budget suffices


def test_claim_c_is_not_resolved_when_its_two_estimates_disagree():
    sys.path.insert(0, str(REPO / "benchmarks"))
    import reproduce
    from reproduction_report import verdict

    costly = {"max": 2.6, "avg": 2.4}
    assert reproduce._judge_c({"e-at": 1.05, **costly}, {"e-at": 1.08, **costly}) == (True, "must hold")
    assert reproduce._judge_c({"e-at": 1.20, **costly}, {"e-at": 1.15, **costly}) == (False, "must hold")
    holds, comment = reproduce._judge_c({"e-at": 1.09, **costly}, {"e-at": 1.12, **costly})
    assert holds is None and verdict(holds, comment).startswith("not resolved")
    assert reproduce._judge_c({"e-at": 1.0, "max": 1.9, "avg": 2.4}, {"e-at": 1.0, "max": 1.9, "avg": 2.4})[0] is False
