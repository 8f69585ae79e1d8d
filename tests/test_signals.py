"""Ctrl-C (SIGINT) and SIGTERM: a checkpoint, how to resume on stderr, exit 130 / 143."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from helpers import run_cli
from test_resume import RUN, env_with_plugin, wait_for


@pytest.mark.parametrize("signum,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_signal_writes_a_checkpoint_says_how_to_resume_and_exits(tmp_path, base_model, signum, code):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustft", *RUN, "--checkpoint-every", "0", "--out", str(run)],
        env=env_with_plugin(tmp_path, slow=0.1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run / "metrics.jsonl", proc)  # the first batch is done: the handlers are in place
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert f"robustft finetune --resume {run}" in stderr
    assert signal.Signals(signum).name in stderr
    # Even with --checkpoint-every 0 the signal leaves a mid-epoch checkpoint to resume from.
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert checkpoints and "batch" in checkpoints[-1]
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"

    if signum == signal.SIGINT:
        return  # resuming is the same after either signal; once is enough
    resumed = run_cli("finetune", "--resume", str(run), "--quiet", env=env_with_plugin(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "model.pt").is_file()
    batches = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    done = [(r["epoch"], r["batch"]) for r in batches if r["kind"] == "batch"]
    assert done == [(e, b) for e in (1, 2) for b in range(1, 9)]  # every batch exactly once


@pytest.mark.parametrize(
    "first,second,code",
    [(signal.SIGINT, signal.SIGTERM, 143), (signal.SIGTERM, signal.SIGINT, 130)],
    ids=["int-then-term", "term-then-int"],
)
def test_a_second_signal_stops_at_once_with_its_own_exit_code(tmp_path, base_model, first, second, code):
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustft", *RUN, "--out", str(run)],
        env=env_with_plugin(tmp_path, slow=2.0),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for(run / "metrics.jsonl", proc)
    proc.send_signal(first)
    time.sleep(0.02)  # 20 ms later, inside the same (slow) batch
    proc.send_signal(second)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: Interrupted again by {signal.Signals(second).name}: stopped at once")
    assert f"robustft finetune --resume {run}" in lines[-1] and "Traceback" not in stderr
    assert json.loads((run / "run.json").read_text())["status"] == "interrupted"


def test_sigterm_during_eval_exits_143_with_a_sentence(tmp_path, base_model):
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "robustft", "eval", "--model", "digits-cnn-linf", "--n-ex", "300", "--steps", "200", "--norms", "1,2,inf"],
        env=env_with_plugin(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)  # started and attacking (the evaluation takes far longer)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == "Interrupted by SIGTERM." and "Traceback" not in stderr and out == ""
