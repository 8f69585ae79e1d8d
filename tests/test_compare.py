"""`robustft compare`: one table of mean ± std over seeds, ordinary run folders, and continuing a comparison."""

from __future__ import annotations

import json
import statistics
import tomllib

import pytest
from helpers import cli_in_process

from robustft.compare import Stat, compare

TINY = ("--epochs", "1", "--n-train", "32", "--attack-steps", "1", "--n-ex", "24", "--steps", "2", "--norms", "1,inf")


def test_stat_is_mean_and_sample_std():
    stat = Stat([0.2, 0.4, 0.9])
    assert stat.mean == pytest.approx(0.5)
    assert stat.std == pytest.approx(statistics.stdev([0.2, 0.4, 0.9]))
    assert Stat([0.7]).std == 0.0


def test_unknown_scheme_fails_before_any_compute(tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    result = cli_in_process(capsys, monkeypatch, "compare", "--schemes", "e-at,rmap", "--seeds", "2", "--out", str(out))
    assert result.returncode == 2
    assert "rmap" in result.stderr and "ramp" in result.stderr
    assert not out.exists()


def test_option_that_no_compared_scheme_has_is_refused(tmp_path):
    from robustft.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="sampling"):
        compare("e-at,lp-at", seeds=1, out=tmp_path / "cmp", options={"samplin": "paper"})
    assert not (tmp_path / "cmp").exists()


@pytest.mark.slow
def test_compare_table_json_and_resume(base_model, tmp_path, capsys, monkeypatch):
    def run_cli(*args: str):
        return cli_in_process(capsys, monkeypatch, *args, env={"COLUMNS": "200"})

    out = tmp_path / "cmp"
    first = run_cli("compare", "--schemes", "lp-at,e-at", "--seeds", "2", "--out", str(out), "--quiet", *TINY)
    assert first.returncode == 0, first.stderr
    table = first.stdout
    assert "digits-cnn-linf" in table and "+ lp-at" in table and "+ e-at" in table
    assert "±" in table and "s / epoch" in table and "union" in table

    runs = {f"{scheme}-seed{seed}": out / f"{scheme}-seed{seed}" for scheme in ("lp-at", "e-at") for seed in (0, 1)}
    for run in runs.values():  # ordinary run folders
        assert json.loads((run / "run.json").read_text())["status"] == "finished"
        assert (run / "model.pt").is_file() and (run / "config.toml").is_file()
    mtimes = {name: (run / "model.pt").stat().st_mtime_ns for name, run in runs.items()}

    # A crash in the middle: one run left unfinished. The second invocation continues only that one.
    broken = runs["e-at-seed1"]
    info = json.loads((broken / "run.json").read_text())
    (broken / "run.json").write_text(json.dumps({**info, "status": "running"}))
    (broken / "model.pt").unlink()
    second = run_cli("compare", "--schemes", "lp-at,e-at", "--seeds", "2", "--out", str(out), "--json", *TINY)
    assert second.returncode == 0, second.stderr
    assert "Reusing the finished run" in second.stderr and "Continuing the unfinished run" in second.stderr
    for name, run in runs.items():
        if name != "e-at-seed1":
            assert (run / "model.pt").stat().st_mtime_ns == mtimes[name], f"{name} was retrained"
    assert json.loads((broken / "run.json").read_text())["status"] == "finished"
    assert not list(out.glob("*.unfinished-*"))  # continued in place, nothing moved aside

    report = json.loads(second.stdout)
    assert report["base"]["name"] == "digits-cnn-linf"
    assert [row["scheme"] for row in report["schemes"]] == ["lp-at", "e-at"]
    for row in report["schemes"]:
        assert row["seeds"] == [0, 1] and len(row["runs"]) == 2
        evals = [json.loads((out / f"{row['scheme']}-seed{s}" / "compare-eval.json").read_text())["result"] for s in (0, 1)]
        unions = [e["union"] for e in evals]
        assert row["union"]["values"] == unions
        assert row["union"]["mean"] == pytest.approx(statistics.mean(unions))
        assert row["union"]["std"] == pytest.approx(statistics.stdev(unions))
        assert set(row["robust"]) == {"inf", "1"}
        assert row["seconds_per_epoch"]["mean"] > 0
    # lp-at attacks once per batch like e-at: the same passes per image.
    lp, eat = report["schemes"]
    assert lp["passes_per_image"]["mean"] == pytest.approx(eat["passes_per_image"]["mean"])

    # Other settings in the same folder are refused rather than mixed into the table.
    third = run_cli("compare", "--schemes", "lp-at", "--seeds", "1", "--out", str(out), "--quiet", "--epochs", "2", "--n-train", "32")
    assert third.returncode == 1 and "different 'epochs'" in third.stderr


def test_epoch_costs_skip_a_line_cut_by_a_crash(tmp_path):
    from robustft.compare import _epoch_costs

    epoch = {"kind": "epoch", "seconds": 2.0, "images": 10, "passes": {"attack_forward": 110, "update_forward": 10}}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(epoch) + "\n" + json.dumps({**epoch, "seconds": 4.0}) + "\n" + '{"kind": "ep')
    assert _epoch_costs(tmp_path) == (3.0, 12.0)


def test_attack_settings_go_to_the_schemes_that_use_them(base_model, tmp_path, capsys, monkeypatch):
    """MSD runs an attack of its own: compare gives it the default training attack and says so, where
    finetune alone refuses --attack-option for it (tests/test_msd.py)."""
    out = tmp_path / "cmp"
    result = cli_in_process(
        capsys,
        monkeypatch,
        "compare",
        "--schemes",
        "msd",
        "--seeds",
        "1",
        "--out",
        str(out),
        "--attack-option",
        "1:topk=0.1",
        "--quiet",
        *TINY,
    )
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "msd runs an attack of its own: --attack and --attack-option apply to the other schemes only." in said
    recorded = tomllib.loads((out / "msd-seed0" / "config.toml").read_text())
    assert recorded.get("attack_options", {}) == {} and set(recorded["attack"].values()) == {"apgd"}
