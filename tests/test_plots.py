"""`robustft plot`: every figure draws exactly the numbers of its source, and is written as PNG and SVG.

The numbers are read back from the matplotlib artists (bar heights, error bar segments, line data), never from
pixels. Sources are files in the formats robustft writes (evaluation JSON, run folders, comparison folders);
one slow test makes them for real, from a tiny fine-tuning run.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest
from helpers import cli_in_process

pytest.importorskip("matplotlib")  # the [test] extra brings it; without it only the missing-package test applies

from matplotlib.container import BarContainer  # noqa: E402

from robustft.plotting import (  # noqa: E402
    accuracy_bars,
    cost_tradeoff,
    load_comparison,
    output_stem,
    radius_curves,
    training_curves,
    union_bars,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

BASE = {
    "name": "digits-cnn-linf",
    "dataset": "digits",
    "clean": 0.95,
    "robust": {"inf": 0.61, "2": 0.42, "1": 0.18},
    "union": 0.15,
    "n": 120,
    "suite": "e-at",
    "eps": {"inf": "0.1", "2": "0.4", "1": "2"},
    "invalid_points": {},
    "seconds": 1.0,
    "curves": {"inf": {"radii": ["0.05", "0.1", "0.15"], "robust": [0.8, 0.61, 0.3], "attacked_points": [9, 30, 114], "invalid_points": 0}},
}
TUNED = {
    **BASE,
    "name": "+ e-at",
    "clean": 0.93,
    "robust": {"inf": 0.55, "2": 0.6, "1": 0.5},
    "union": 0.44,
    "run": "runs/x",
    "curves": {
        "inf": {"radii": ["0.05", "0.1", "0.15"], "robust": [0.78, 0.55, 0.35], "attacked_points": [9, 30, 112], "invalid_points": 0},
        "1": {"radii": ["1", "2", "3"], "robust": [0.7, 0.5, 0.3], "attacked_points": [20, 40, 112], "invalid_points": 0},
    },
}


def bar_heights(ax) -> list[list[float]]:
    return [[patch.get_height() for patch in c.patches] for c in ax.containers if isinstance(c, BarContainer)]


def error_lengths(container) -> list[float]:
    """Half the length of each vertical error bar of a bar or errorbar container."""
    errorbar = container.errorbar if isinstance(container, BarContainer) else container
    segments = errorbar.lines[2][0].get_segments()
    return [abs(s[1][1] - s[0][1]) / 2 if len(s) == 2 else math.nan for s in segments]  # a bar not drawn: no segment


def assert_written(files: list[Path]) -> None:
    assert [f.suffix for f in files] == [".png", ".svg"]
    assert files[0].read_bytes().startswith(PNG_MAGIC)
    assert b"<svg" in files[1].read_bytes()[:2000]


# ------------------------------------------------------------------------------------ the plot functions


def test_grouped_bars_draw_the_rows_numbers(tmp_path):
    plot = accuracy_bars([BASE, TUNED])
    ax = plot.figure.axes[0]
    expected = [[100 * r["clean"], *(100 * r["robust"][k] for k in ("inf", "2", "1")), 100 * r["union"]] for r in (BASE, TUNED)]
    assert [heights == pytest.approx(row) for heights, row in zip(bar_heights(ax), expected)] == [True, True]
    assert [s["values"] for s in plot.data["series"]] == [pytest.approx(row) for row in expected]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "l-inf\n0.1", "l2\n0.4", "l1\n2", "union"]
    assert ax.get_ylabel() == "accuracy (%)" and "120 digits test points" in ax.get_title()
    assert [t.get_text() for t in plot.figure.legends[0].get_texts()] == ["digits-cnn-linf", "+ e-at"]
    assert plot.figure.get_size_inches()[0] == pytest.approx(3.3)
    assert_written(plot.save(tmp_path / "sub" / "bars"))


def test_bars_of_compare_rows_carry_their_standard_deviation():
    row = {
        "scheme": "e-at",
        "clean": {"mean": 0.9, "std": 0.01},
        "robust": {"inf": {"mean": 0.5, "std": 0.02}, "1": {"mean": 0.4, "std": 0.03}},
        "union": {"mean": 0.35, "std": 0.04},
    }
    plot = accuracy_bars([BASE, row], eps={"inf": "8/255", "1": "12"})
    ax = plot.figure.axes[0]
    base_bars, scheme_bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    heights = [p.get_height() for p in scheme_bars.patches]
    assert math.isnan(heights[2]) and heights[:2] + heights[3:] == pytest.approx([90, 50, 40, 35])  # no l2 number: no bar
    errors = error_lengths(scheme_bars)
    assert errors[:2] + errors[3:] == pytest.approx([1, 2, 3, 4])
    assert base_bars.errorbar is None  # an evaluation row has no spread
    assert plot.data["series"][1]["name"] == "+ e-at"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clean", "l-inf\n8/255", "l2", "l1\n12", "union"]
    assert plot.data["series"][1]["values"][2] is None


def test_radius_curves_draw_each_models_sweep_from_its_clean_accuracy():
    plot = radius_curves([BASE, TUNED])
    inf_ax, l1_ax = plot.figure.axes
    base_line, tuned_line = inf_ax.get_lines()
    assert list(base_line.get_xdata()) == pytest.approx([0, 0.05, 0.1, 0.15])
    assert list(base_line.get_ydata()) == pytest.approx([95, 80, 61, 30])
    assert list(tuned_line.get_ydata()) == pytest.approx([93, 78, 55, 35])
    (l1_line,) = l1_ax.get_lines()  # only the tuned model was swept in l1
    assert list(l1_line.get_xdata()) == pytest.approx([0, 1, 2, 3]) and list(l1_line.get_ydata()) == pytest.approx([93, 70, 50, 30])
    assert "l-inf radius" in inf_ax.get_xlabel() and inf_ax.get_ylabel() == "l-inf robust accuracy (%)"
    assert [p["norm"] for p in plot.data["panels"]] == ["inf", "1"]
    assert {t.get_text() for t in plot.figure.legends[0].get_texts()} == {"digits-cnn-linf", "+ e-at"}


def test_linf_radii_on_the_pixel_grid_are_labelled_in_255ths():
    model = {"name": "m", "curves": {"inf": {"radii": ["2/255", "4/255", "8/255"], "robust": [0.6, 0.5, 0.4]}}}
    plot = radius_curves([model])
    ax = plot.figure.axes[0]
    plot.figure.canvas.draw() if hasattr(plot.figure.canvas, "draw") else None
    labels = [ax.xaxis.get_major_formatter()(v, 0) for v in ax.get_xticks() if 0 < v <= 8 / 255 + 1e-9]
    assert labels and all(label.endswith("/255") for label in labels)
    assert list(ax.get_lines()[0].get_xdata()) == pytest.approx([2 / 255, 4 / 255, 8 / 255])  # no clean: no point at 0


SCHEMES = [
    {
        "scheme": "e-at",
        "union": {"mean": 0.4, "std": 0.02, "values": [0.38, 0.42]},
        "seconds_per_epoch": {"mean": 10.0, "std": 1.0, "values": [9, 11]},
        "passes_per_image": {"mean": 11.0, "std": 0.0, "values": [11, 11]},
    },
    {
        "scheme": "max",
        "union": {"mean": 0.45, "std": 0.0, "values": [0.45]},
        "seconds_per_epoch": {"mean": 25.0, "std": 0.0, "values": [25]},
        "passes_per_image": {"mean": 33.0, "std": 0.0, "values": [33]},
    },
]


def test_union_bars_and_cost_tradeoff_draw_means_and_spreads():
    bars = union_bars(SCHEMES, base=BASE)
    ax = bars.figure.axes[0]
    containers = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [c.patches[0].get_height() for c in containers] == pytest.approx([40, 45])
    assert error_lengths(containers[0]) == pytest.approx([2])
    (base_line,) = ax.get_lines()[-1:]
    assert list(base_line.get_ydata()) == pytest.approx([15, 15])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["+ e-at", "+ max"]
    assert ax.get_ylabel() == "union robust accuracy (%)" and "2 seed(s)" in ax.get_title()

    cost = cost_tradeoff(SCHEMES, base=BASE)
    ax = cost.figure.axes[0]
    points = [v for c in ax.containers for v in (float(c.lines[0].get_xdata()[0]), float(c.lines[0].get_ydata()[0]))]
    assert points == pytest.approx([10, 40, 25, 45])
    x_errors = [abs(s[1][0] - s[0][0]) / 2 for s in ax.containers[0].lines[2][0].get_segments()]
    assert x_errors == pytest.approx([1.0])
    assert ax.get_xlabel() == "training time per epoch (s)"
    passes = cost_tradeoff(SCHEMES, cost="passes_per_image")
    assert [p["cost"] for p in passes.data["points"]] == [11.0, 33.0]


def metrics_records() -> list[dict]:
    records = []
    for epoch in (1, 2):
        for batch in (1, 2, 3, 4):
            loss = None if (epoch, batch) == (1, 3) else 2.0 - 0.1 * (4 * (epoch - 1) + batch)
            records.append(
                {
                    "kind": "batch",
                    "epoch": epoch,
                    "batch": batch,
                    "lr": 0.01,
                    "loss": loss,
                    "norm": "inf",
                    "rerr_batch": 0.5,
                    "rerr_inf": 0.1 * batch,
                    "rerr_1": 0.2 * batch,
                }
            )
        records.append(
            {
                "kind": "epoch",
                "epoch": epoch,
                "loss": 1.0,
                "seconds": 2.0,
                "images": 64,
                "probabilities": {"inf": 0.3 + 0.1 * epoch, "1": 0.7 - 0.1 * epoch},
            }
        )
    return records


def test_training_curves_draw_loss_errors_and_probabilities():
    plot = training_curves(metrics_records(), title="e-at")
    loss_ax, rerr_ax, prob_ax = plot.figure.axes
    (loss,) = loss_ax.get_lines()
    xs = [0.25, 0.5, 1.0, 1.25, 1.5, 1.75, 2.0]  # batch 3 of epoch 1 was skipped (non-finite loss)
    assert list(loss.get_xdata()) == pytest.approx(xs)
    assert list(loss.get_ydata()) == pytest.approx([1.9, 1.8, 1.6, 1.5, 1.4, 1.3, 1.2])
    inf, l1 = rerr_ax.get_lines()
    assert inf.get_label() == "l-inf" and l1.get_label() == "l1"
    assert list(inf.get_ydata()) == pytest.approx([10, 20, 30, 40] * 2)
    assert list(l1.get_xdata()) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0])
    p_inf, p_1 = prob_ax.get_lines()
    assert list(p_inf.get_xdata()) == [1, 2] and list(p_inf.get_ydata()) == pytest.approx([0.4, 0.5])
    assert list(p_1.get_ydata()) == pytest.approx([0.6, 0.5])
    assert prob_ax.get_xlabel() == "epoch" and rerr_ax.get_ylabel() == "robust training error (%)"
    assert "rerr_batch" not in json.dumps(plot.data)  # the batch's own error is not a norm


def test_a_scheme_without_probabilities_gets_two_panels():
    records = [{k: v for k, v in r.items() if k != "probabilities"} for r in metrics_records()]
    assert len(training_curves(records).figure.axes) == 2


@pytest.mark.parametrize(
    "out,expected",
    [
        (None, "default/bars"),
        ("fig/x", "fig/x"),
        ("fig/x.png", "fig/x"),
        ("fig/", "fig/bars"),
    ],
)
def test_output_stem(tmp_path, out, expected):
    assert (
        output_stem(None if out is None else str(tmp_path / out) + ("/" if out and out.endswith("/") else ""), tmp_path / "default", "bars")
        == tmp_path / expected
    )


def test_the_same_figure_gives_the_same_files(tmp_path):
    first = accuracy_bars([BASE, TUNED]).save(tmp_path / "a")
    second = accuracy_bars([BASE, TUNED]).save(tmp_path / "b")
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in second]


# ----------------------------------------------------------------------------------------- the sources


def fake_run(folder: Path, *, evaluation: dict | None = None, records: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(
        json.dumps({"base_model": "digits-cnn-linf", "dataset": "digits", "scheme": "e-at", "status": "finished"})
    )
    if evaluation is not None:
        (folder / "eval.json").write_text(json.dumps(evaluation))
    if records is not None:
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def test_plot_bars_from_an_eval_json_file(tmp_path, capsys, monkeypatch):
    source = tmp_path / "e.json"
    source.write_text(json.dumps({"results": [BASE, TUNED]}))
    result = cli_in_process(capsys, monkeypatch, "plot", "bars", "--json", str(source))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(tmp_path / "e-bars.png"), str(tmp_path / "e-bars.svg")] or [
        Path(p).resolve() for p in result.stdout.split()
    ] == [tmp_path / "e-bars.png", tmp_path / "e-bars.svg"]
    assert_written([tmp_path / "e-bars.png", tmp_path / "e-bars.svg"])
    out = tmp_path / "figures"
    out.mkdir()
    result = cli_in_process(capsys, monkeypatch, "plot", "bars", "--json", str(source), "--out", str(out), "--print-json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["files"] == [str(out / "e-bars.png"), str(out / "e-bars.svg")]
    assert printed["plots"]["bars"]["series"][1]["values"] == pytest.approx([93, 55, 60, 50, 44])


def test_plot_bars_of_a_run_without_a_stored_evaluation_says_what_to_run(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "run")
    result = cli_in_process(capsys, monkeypatch, "plot", "bars", "--run", str(run))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: Run '{run}' has no stored evaluation: run 'robustft eval --run {run}' first."


def test_plot_bars_and_curves_of_a_run(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "run", evaluation={"results": [BASE, TUNED]})
    bars = cli_in_process(capsys, monkeypatch, "plot", "bars", "--run", str(run), "--print-json")
    assert bars.returncode == 0, bars.stderr
    assert json.loads(bars.stdout)["files"] == [str(run / "plots" / "bars.png"), str(run / "plots" / "bars.svg")]
    curves = cli_in_process(capsys, monkeypatch, "plot", "curves", "--run", str(run), "--out", str(tmp_path / "c.svg"), "--print-json")
    assert curves.returncode == 0, curves.stderr
    printed = json.loads(curves.stdout)
    assert printed["files"] == [str(tmp_path / "c.png"), str(tmp_path / "c.svg")]
    panels = {p["norm"]: p["lines"] for p in printed["plots"]["curves"]["panels"]}
    assert panels["inf"][1] == {"name": "+ e-at", "radii": pytest.approx([0, 0.05, 0.1, 0.15]), "robust": pytest.approx([93, 78, 55, 35])}


def test_the_same_model_from_two_evaluations_is_told_apart(tmp_path, capsys, monkeypatch):
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps({"results": [BASE]}))
    result = cli_in_process(
        capsys, monkeypatch, "plot", "curves", "--json", str(tmp_path / "a.json"), "--json", str(tmp_path / "b.json"), "--print-json"
    )
    assert result.returncode == 0, result.stderr
    names = [line["name"] for line in json.loads(result.stdout)["plots"]["curves"]["panels"][0]["lines"]]
    assert names == ["digits-cnn-linf (a.json)", "digits-cnn-linf (b.json)"]


@pytest.mark.parametrize(
    "argv,message,code",
    [
        (["plot", "curves"], "Give the evaluations to draw with --run RUN or --json FILE", 2),
        (["plot", "curves", "--json", "NOSWEEP"], "has no radius sweep: evaluate with robustft eval --radii", 1),
        (["plot", "bars", "--json", "MISSING"], "The evaluation file", 1),
        (["plot", "bars", "--json", "NOTEVAL"], "is not an evaluation written by 'robustft eval --json'", 1),
        (["plot", "bars", "--json", "NOTEVAL", "--run", "RUN"], "Give --run or --json, not both.", 2),
        (["plot", "compare", "--dir", "RUN"], "is not a robustft compare folder", 1),
        (["plot", "compare"], "Give the comparison to draw with --dir FOLDER", 2),
        (["plot", "training", "--run", "RUN"], "has recorded no training batch in metrics.jsonl yet", 1),
        (["plot", "compare", "--json", "NOTEVAL", "--cost", "second"], "Unknown cost 'second'", 2),
    ],
)
def test_plot_mistakes_are_one_sentence(argv, message, code, tmp_path, capsys, monkeypatch):
    files = {
        "NOSWEEP": tmp_path / "nosweep.json",
        "MISSING": tmp_path / "missing.json",
        "NOTEVAL": tmp_path / "noteval.json",
        "RUN": tmp_path / "run",
    }
    files["NOSWEEP"].write_text(json.dumps({"results": [{k: v for k, v in BASE.items() if k != "curves"}]}))
    files["NOTEVAL"].write_text(json.dumps({"something": 1}))
    fake_run(files["RUN"], records=[])
    result = cli_in_process(capsys, monkeypatch, *[str(files.get(a, a)) for a in argv])
    assert result.returncode == code
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_missing_matplotlib_is_one_sentence_naming_the_extra(tmp_path, capsys, monkeypatch):
    source = tmp_path / "e.json"
    source.write_text(json.dumps({"results": [BASE]}))
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    result = cli_in_process(capsys, monkeypatch, "plot", "bars", "--json", str(source))
    assert result.returncode == 1
    assert result.stderr.strip() == "error: Plotting needs matplotlib, which is not installed: pip install 'robustft[plot]'."
    assert not (tmp_path / "e-bars.png").exists()


def test_plot_training_of_a_run_reads_metrics_tolerantly(tmp_path, capsys, monkeypatch):
    run = fake_run(tmp_path / "run", records=metrics_records())
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"kind": "batch", "epoch": 3, "bat')  # a line cut by a crash
    result = cli_in_process(capsys, monkeypatch, "plot", "training", "--run", str(run), "--print-json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["files"] == [str(run / "plots" / "training.png"), str(run / "plots" / "training.svg")]
    data = printed["plots"]["training"]
    assert data["loss"]["y"] == pytest.approx([1.9, 1.8, 1.6, 1.5, 1.4, 1.3, 1.2])
    assert data["probabilities"]["inf"] == {"x": [1.0, 2.0], "y": pytest.approx([0.4, 0.5])}
    assert data["epochs"] == [1, 2]


def fake_comparison(folder: Path, *, leave_out: str | None = None) -> dict:
    """A comparison folder as robustft compare leaves it: settings, evaluations keyed by them, metrics."""
    eval_settings = {
        "model": "digits-cnn-linf",
        "dataset": "digits",
        "norms": ["inf", "1"],
        "eps": {"inf": "0.1", "1": "2"},
        "n_ex": 24,
        "steps": 2,
        "suite": "e-at",
    }
    folder.mkdir()
    (folder / "compare.json").write_text(
        json.dumps({"schemes": ["e-at", "max"], "seeds": [0, 1, 2], "finetune": {}, "eval": eval_settings})
    )
    (folder / "base-eval.json").write_text(json.dumps({"settings": eval_settings, "result": BASE}))
    unions = {"e-at": [0.4, 0.5, 0.45], "max": [0.5, 0.52, 0.48]}
    seconds = {"e-at": [[2.0, 2.2], [2.1, 1.9], [2.0, 2.0]], "max": [[6.0, 6.2], [5.8, 6.0], [6.1, 6.1]]}
    for scheme in unions:
        for seed in range(3):
            run = folder / f"{scheme}-seed{seed}"
            if run.name == leave_out:
                continue
            result = {**TUNED, "union": unions[scheme][seed], "robust": {"inf": 0.5, "1": 0.45}}
            run.mkdir()
            (run / "compare-eval.json").write_text(json.dumps({"settings": eval_settings, "result": result}))
            (run / "metrics.jsonl").write_text(
                "".join(
                    json.dumps({"kind": "epoch", "epoch": e + 1, "seconds": s, "images": 32, "passes": {"attack_forward": 320}}) + "\n"
                    for e, s in enumerate(seconds[scheme][seed])
                )
            )
    return {"unions": unions, "seconds": seconds}


def test_plot_compare_draws_mean_and_std_over_seeds(tmp_path, capsys, monkeypatch):
    truth = fake_comparison(tmp_path / "cmp")
    result = cli_in_process(capsys, monkeypatch, "plot", "compare", "--dir", str(tmp_path / "cmp"), "--print-json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["files"] == [str(tmp_path / "cmp" / "plots" / f"compare-{k}.{f}") for k in ("union", "cost") for f in ("png", "svg")]
    bars = printed["plots"]["union"]["bars"]
    for bar, scheme in zip(bars, ("e-at", "max")):
        assert bar["union"] == pytest.approx(100 * statistics.mean(truth["unions"][scheme]))
        assert bar["error"] == pytest.approx(100 * statistics.stdev(truth["unions"][scheme]))
    assert printed["plots"]["union"]["base"]["union"] == pytest.approx(15)
    points = printed["plots"]["cost"]["points"]
    for point, scheme in zip(points, ("e-at", "max")):
        per_seed = [statistics.mean(s) for s in truth["seconds"][scheme]]
        assert point["cost"] == pytest.approx(statistics.mean(per_seed))
        assert point["cost_error"] == pytest.approx(statistics.stdev(per_seed))
        assert point["union"] == pytest.approx(100 * statistics.mean(truth["unions"][scheme]))


def test_an_unfinished_comparison_draws_what_is_evaluated_and_warns(tmp_path, caplog):
    truth = fake_comparison(tmp_path / "cmp", leave_out="max-seed1")
    data = load_comparison(tmp_path / "cmp")
    (e_at, max_row) = data["schemes"]
    assert max_row["seeds"] == [0, 2] and max_row["union"]["values"] == [truth["unions"]["max"][0], truth["unions"]["max"][2]]
    assert "max-seed1" in caplog.text
    # the same numbers as robustft compare's own summary: a compare --json file gives the same figure data
    (tmp_path / "c.json").write_text(json.dumps(data))
    from robustft.plotting.figures import plot_compare

    from_file = plot_compare(json_file=tmp_path / "c.json")
    from_dir = plot_compare(folder=tmp_path / "cmp", out=tmp_path / "d")
    assert [p.data for p in from_file] == [p.data for p in from_dir]


def test_a_stored_evaluation_of_earlier_weights_is_a_warning(tmp_path, caplog):
    from robustft.evaluation import EvalReport, EvalResult, save_run_eval
    from robustft.norms import Norm
    from robustft.plotting import load_run_evaluation

    run = fake_run(tmp_path / "run")
    (run / "model.pt.sha256").write_text("a" * 64 + "  model.pt\n")
    row = EvalResult(
        name="+ e-at",
        clean=0.9,
        robust={Norm.LINF: 0.5},
        union=0.5,
        n=10,
        suite="e-at",
        eps={Norm.LINF: 0.1},
        dataset="digits",
        seconds=1.0,
    )
    path = save_run_eval(EvalReport(results=[row]), run, {"steps": 5})
    assert path == run / "eval.json"
    stored = json.loads(path.read_text())
    assert stored["weights_sha256"] == "a" * 64 and stored["settings"] == {"steps": 5}
    assert load_run_evaluation(run)["results"][0]["union"] == 0.5 and "earlier weights" not in caplog.text
    (run / "model.pt.sha256").write_text("b" * 64 + "  model.pt\n")  # the run went on: new weights
    load_run_evaluation(run)
    assert "earlier weights" in caplog.text


# ---------------------------------------------------------------------------------------------- for real


@pytest.mark.slow
def test_eval_run_stores_its_result_and_every_plot_draws_it(base_model, tmp_path, capsys, monkeypatch):
    def cli(*args: str):
        result = cli_in_process(capsys, monkeypatch, *args)
        assert result.returncode == 0, result.stderr
        return result

    run = tmp_path / "run"
    cli("finetune", "--epochs", "1", "--n-train", "64", "--attack-steps", "2", "--out", str(run), "--quiet")
    evaluated = cli("eval", "--run", str(run), "--norms", "1,inf", "--n-ex", "24", "--steps", "3", "--radii", "inf=1/20:3/20:3", "--json")
    assert "Stored in " in evaluated.stderr and "eval.json (draw it with: robustft plot bars --run " in evaluated.stderr
    printed = json.loads(evaluated.stdout)
    stored = json.loads((run / "eval.json").read_text())
    assert stored["results"] == printed["results"] and len(stored["results"]) == 2  # the base model's row too
    assert stored["settings"]["steps"] == 3 and stored["weights_sha256"] == (run / "model.pt.sha256").read_text().split()[0]

    bars = json.loads(cli("plot", "bars", "--run", str(run), "--print-json").stdout)
    for series, row in zip(bars["plots"]["bars"]["series"], stored["results"]):
        assert series["values"] == pytest.approx(
            [100 * row["clean"], 100 * row["robust"]["inf"], 100 * row["robust"]["1"], 100 * row["union"]]
        )
    assert_written([Path(f) for f in bars["files"]])

    curves = json.loads(cli("plot", "curves", "--run", str(run), "--print-json").stdout)
    (panel,) = curves["plots"]["curves"]["panels"]
    for line, row in zip(panel["lines"], stored["results"]):
        assert line["robust"] == pytest.approx([100 * row["clean"], *(100 * a for a in row["curves"]["inf"]["robust"])])

    training = json.loads(cli("plot", "training", "--run", str(run), "--print-json").stdout)
    from robustft.io import read_jsonl

    losses = [r["loss"] for r in read_jsonl(run / "metrics.jsonl") if r.get("kind") == "batch" and r.get("loss") is not None]
    assert training["plots"]["training"]["loss"]["y"] == pytest.approx(losses)
    assert set(training["plots"]["training"]["probabilities"]) == {"inf", "1"}  # E-AT records them
    assert_written([Path(f) for f in training["files"]])


def test_no_two_series_share_colour_and_marker():
    from robustft.plotting.style import series_colour, series_marker

    styles = [(series_colour(i), series_marker(i)) for i in range(64)]
    assert len(set(styles)) == 64
    assert [m for _, m in styles[:10]] == ["o", "s", "^", "D", "v", "P", "X", "*", "s", "^"]  # the ninth moves on
    assert styles[8][0] == styles[0][0] and styles[8] != styles[0]
