"""Resume: a run killed with SIGKILL mid-epoch and resumed ends with the weights of an uninterrupted run."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import make_distribution, run_cli, with_path

import robustft
from robustft.errors import BadInputError, UserError
from robustft.io import load_torch
from robustft.progress import ProgressReporter
from robustft.training import RunInterrupted

# E-AT, slowed down by an optional sleep per batch so that a test can kill it at a chosen point. The
# sleep changes no number: the slowed and the plain run compute exactly the same thing.
SLOW_PLUGIN = """
import os
import time

from robustft import hookimpl
from robustft_plugins.schemes.eat import EAT


class SlowEAT(EAT):
    name = "slow-e-at"
    aliases = ()
    description = "E-AT with a pause per batch (tests)"

    def loss(self, model, x, y, ctx):
        time.sleep(float(os.environ.get("SLOW_SECONDS", "0")))
        return super().loss(model, x, y, ctx)


@hookimpl
def register_schemes(register):
    register(SlowEAT)
"""

# 256 points in batches of 32: 8 batches per epoch, checkpoints every 2 batches.
RUN = [
    "finetune",
    "--scheme",
    "slow-e-at",
    "--epochs",
    "2",
    "--n-train",
    "256",
    "--batch-size",
    "32",
    "--attack-steps",
    "3",
    "--checkpoint-every",
    "2",
    "--seed",
    "3",
    "--quiet",
]


def env_with_plugin(tmp_path: Path, slow: float = 0.0) -> dict[str, str]:
    site = tmp_path / "site"
    if not site.exists():
        make_distribution(site, "robustft-slow", "robustft_slow", SLOW_PLUGIN)
    return {**os.environ, **with_path(site), "SLOW_SECONDS": str(slow), "COLUMNS": "200", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {path.name} appeared: {proc.stderr.read() if proc.stderr else ''}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"{path.name} did not appear")
        time.sleep(0.02)


def batch_losses(run: Path) -> list[tuple[int, int, float, str]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["batch"], r["loss"], r["norm"]) for r in records if r["kind"] == "batch"]


def test_sigkill_mid_epoch_then_resume_gives_bitwise_identical_weights(tmp_path, base_model):
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    # Both runs at once (two processes): the uninterrupted one at full speed, the other slowed down.
    ref_proc = subprocess.Popen(
        [sys.executable, "-m", "robustft", *RUN, "--out", str(reference)],
        env=env_with_plugin(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustft", *RUN, "--out", str(killed)],
        env=env_with_plugin(tmp_path, slow=0.15),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Kill it in the middle of the second epoch, right after its checkpoint at batch 2.
    wait_for(killed / "checkpoints" / "epoch-002-batch-0002.pt.sha256", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.pt").exists()
    assert json.loads((killed / "run.json").read_text())["status"] == "running"
    # A torn last line, as a crash in the middle of an append leaves it, must not matter.
    with open(killed / "metrics.jsonl", "a") as handle:
        handle.write('{"kind": "batch", "epoch": 2, "ba')

    resumed = run_cli("finetune", "--resume", str(killed), "--quiet", env=env_with_plugin(tmp_path))
    assert resumed.returncode == 0, resumed.stderr
    ref_out, ref_err = ref_proc.communicate(timeout=300)
    assert ref_proc.returncode == 0, ref_err

    mine, theirs = load_torch(killed / "model.pt")["model"], load_torch(reference / "model.pt")["model"]
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # bitwise
    # Same data order, same norm drawn per batch, same losses; no batch recorded twice.
    assert batch_losses(killed) == batch_losses(reference)
    records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    resume = [r for r in records if r["kind"] == "resume"]
    assert len(resume) == 1 and resume[0]["epoch"] == 2 and resume[0]["batch"] >= 2
    assert json.loads((killed / "run.json").read_text())["status"] == "finished"


class SignalAfter(ProgressReporter):
    """Sends this process ``signum`` after ``batches`` trained batches (an in-process Ctrl-C)."""

    def __init__(self, batches: int, signum: int = signal.SIGTERM) -> None:
        self.left, self.signum = batches, signum

    def advance(self, stats) -> None:
        self.left -= 1
        if self.left == 0:
            signal.raise_signal(self.signum)


def test_resume_falls_back_past_a_corrupted_checkpoint_and_still_matches(tmp_path, base_model, caplog):
    options = dict(epochs=2, n_train=128, batch_size=32, attack_steps=2, checkpoint_every=1, seed=5)
    reference = robustft.finetune(out=str(tmp_path / "reference"), **options)

    run = tmp_path / "run"
    with pytest.raises(RunInterrupted) as stopped:  # 4 batches per epoch: stop after epoch 2's third
        robustft.finetune(out=str(run), progress=SignalAfter(7), **options)
    assert stopped.value.exit_code == 143 and f"robustft finetune --resume {run}" in str(stopped.value)
    newest = run / "checkpoints" / "epoch-002-batch-0003.pt"
    assert newest.exists() and (run / "checkpoints" / "epoch-002-batch-0002.pt").exists()
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="robustft"):
        result = robustft.finetune(resume=run)
    assert any("epoch-002-batch-0003.pt" in r.getMessage() and "corrupted" in r.getMessage() for r in caplog.records)
    mine, theirs = load_torch(result.weights)["model"], load_torch(reference.weights)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in records if r["kind"] == "resume"][0]["checkpoint"] == "epoch-002-batch-0002.pt"
    assert batch_losses(run) == batch_losses(reference.run_dir)


def test_resume_refuses_conflicting_options_and_finished_runs(tmp_path, base_model):
    run = robustft.finetune(epochs=1, n_train=32, batch_size=32, attack_steps=1, out=str(tmp_path / "run")).run_dir
    with pytest.raises(UserError, match="already finished"):
        robustft.finetune(resume=run)
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    with pytest.raises(BadInputError, match="--lr conflicts with the configuration"):
        robustft.finetune(resume=run, lr=0.3)  # --epochs may change (it extends a run); --lr may not
    # the sentence names the flag as the user types it, not the setting's name
    with pytest.raises(BadInputError, match="^Option --option conflicts"):
        robustft.finetune(resume=run, options={"sampling": "cumulative"})
    with pytest.raises(BadInputError, match="^Option --attack-option conflicts"):
        robustft.finetune(resume=run, attack_options={"inf": {"restarts": 2}})
    with pytest.raises(BadInputError, match="not both"):
        robustft.finetune(resume=run, config_file=run / "config.toml")
    # agreeing and operational options are fine
    result = robustft.finetune(resume=run, epochs=1, checkpoint_every=3, device="cpu")
    assert result.run_dir == run


# ------------------------------------------------------------------ the GPU path leaves the CPU alone


def test_gpu_switches_are_off_on_the_cpu_and_on_for_cuda():
    from robustft.config import FinetuneConfig
    from robustft.training import Performance

    cpu = Performance.resolve(FinetuneConfig(), torch.device("cpu"))
    assert (cpu.amp, cpu.channels_last, cpu.cudnn_benchmark, cpu.compile, cpu.workers) == ("off", False, False, False, 0)
    cuda = Performance.resolve(FinetuneConfig(), torch.device("cuda"))
    assert cuda.amp in ("bf16", "fp16") and cuda.channels_last and cuda.cudnn_benchmark and cuda.workers >= 1
    chosen = Performance.resolve(FinetuneConfig(amp="off", channels_last=False, workers=0), torch.device("cuda"))
    assert (chosen.amp, chosen.channels_last, chosen.workers) == ("off", False, 0)


def test_pinned_memory_follows_the_device_unless_set():
    from robustft.config import FinetuneConfig
    from robustft.training import Performance

    resolve = Performance.resolve
    assert not resolve(FinetuneConfig(), torch.device("cpu")).pin_memory
    assert resolve(FinetuneConfig(), torch.device("cuda")).pin_memory
    assert not resolve(FinetuneConfig(pin_memory=False), torch.device("cuda")).pin_memory
    assert resolve(FinetuneConfig(pin_memory=True), torch.device("cpu")).pin_memory


#: Two epochs of two batches, a checkpoint after every batch; the digits CNN freshly initialised from the seed
#: (no cached base model), and the schedule decaying after the first epoch, so that a resumed run must restore it.
REPEAT_RUN = dict(
    model="scratch:digits-cnn", epochs=2, n_train=64, batch_size=32, attack_steps=2, seed=1, device="cpu", lr_step=1.0, checkpoint_every=1
)


def epoch_and_batch_losses(run: Path) -> list[tuple[str, int, int, float]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["epoch"], r.get("batch", 0), r["loss"]) for r in records if r["kind"] in ("batch", "epoch")]


# Schemes with a state of their own (E-AT's running errors), one attack per norm (max), one attack across norms
# (MSD), and their own epoch (RAMP: checkpointed at epoch ends only, so it resumes from the first epoch's end).
@pytest.mark.parametrize("scheme", ["e-at", "max", "msd", "ramp"])
def test_a_run_repeats_bit_for_bit_and_a_resumed_run_equals_it(tmp_path, one_thread, scheme):
    first = robustft.finetune(out=str(tmp_path / "first"), scheme=scheme, **REPEAT_RUN)
    second = robustft.finetune(out=str(tmp_path / "second"), scheme=scheme, **REPEAT_RUN)
    run = tmp_path / "resumed"
    with pytest.raises(RunInterrupted):  # SIGTERM in the second epoch's first batch
        robustft.finetune(out=str(run), scheme=scheme, progress=SignalAfter(3), **REPEAT_RUN)
    resumed = robustft.finetune(resume=run)

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    (resume,) = [r for r in records if r["kind"] == "resume"]
    assert resume["epoch"] == 2 and resume["batch"] == (0 if scheme == "ramp" else 1)
    weights = [load_torch(r.weights)["model"] for r in (first, second, resumed)]
    assert weights[0].keys() == weights[1].keys() == weights[2].keys()
    for other in weights[1:]:
        assert all(torch.equal(weights[0][k], other[k]) for k in weights[0])  # bit for bit
    assert epoch_and_batch_losses(first.run_dir) == epoch_and_batch_losses(second.run_dir) == epoch_and_batch_losses(run)


def test_a_run_without_a_usable_checkpoint_resumes_from_its_beginning(tmp_path, one_thread, caplog):
    options = {**REPEAT_RUN, "epochs": 1}
    reference = robustft.finetune(out=str(tmp_path / "reference"), **options)
    run = robustft.finetune(out=str(tmp_path / "run"), **options).run_dir
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))  # as if killed before finishing
    for path in (run / "checkpoints").glob("*.pt"):
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="robustft"):
        result = robustft.finetune(resume=run)
    assert any("could be used; the run starts again from the beginning" in r.getMessage() for r in caplog.records)
    mine, theirs = load_torch(result.weights)["model"], load_torch(reference.weights)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert epoch_and_batch_losses(run) == epoch_and_batch_losses(reference.run_dir)  # the first attempt's records trimmed


def test_cpu_run_is_unchanged_by_the_switches_and_bf16_stays_close(tmp_path, base_model):
    options = dict(epochs=1, n_train=64, batch_size=32, attack_steps=2, seed=1)
    default = load_torch(robustft.finetune(out=str(tmp_path / "default"), **options).weights)["model"]
    explicit = load_torch(
        robustft.finetune(
            out=str(tmp_path / "off"), amp="off", channels_last=False, cudnn_benchmark=False, compile=False, **options
        ).weights
    )["model"]
    assert all(torch.equal(default[k], explicit[k]) for k in default)  # the CPU default is the plain path
    bf16 = load_torch(robustft.finetune(out=str(tmp_path / "bf16"), amp="bf16", **options).weights)["model"]
    assert all(torch.isfinite(v).all() for v in bf16.values())
    moved = sum(float((default[k].float() - bf16[k].float()).abs().max()) for k in default if default[k].is_floating_point())
    assert 0 < moved < 1.0  # autocast really ran, and the update stayed close to fp32's


def test_a_run_folder_in_use_is_refused_and_released_after(tmp_path, base_model, capsys, monkeypatch):
    """Two runs into one folder interleaved their metrics; the second is now refused while the first holds it."""
    from helpers import cli_in_process

    from robustft.rundir import run_lock

    run = robustft.finetune(epochs=1, n_train=32, batch_size=32, attack_steps=1, out=str(tmp_path / "run")).run_dir
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))  # as if it were still training
    with run_lock(run):  # the other process
        busy = cli_in_process(capsys, monkeypatch, "finetune", "--resume", str(run), "--quiet")
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert f"Run folder {str(run)!r} is in use by another robustft run (process {os.getpid()})" in busy.stderr
    records = (run / "metrics.jsonl").read_text()
    resumed = cli_in_process(capsys, monkeypatch, "finetune", "--resume", str(run), "--quiet")  # released: it goes on
    assert resumed.returncode == 0, resumed.stderr
    assert (run / "metrics.jsonl").read_text().startswith(records[: len(records) // 2])


def test_two_new_runs_into_one_folder_at_once_one_is_refused(tmp_path, base_model):
    out = tmp_path / "same"
    args = ["finetune", "--epochs", "1", "--n-train", "64", "--batch-size", "16", "--attack-steps", "1", "--out", str(out), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-m", "robustft", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    refused = next(err for code, err in results if code == 1)
    assert "is in use by another robustft run" in refused or "is not empty" in refused
    batches = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"batch"' in line]
    assert len(batches) == 4  # one run's records only


def test_resume_refuses_an_edited_config_and_extends_with_epochs(tmp_path, base_model, capsys, monkeypatch):
    from helpers import cli_in_process

    run = robustft.finetune(epochs=1, n_train=32, batch_size=16, attack_steps=1, out=str(tmp_path / "run")).run_dir
    info = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**info, "status": "running"}))
    original = (run / "config.toml").read_text()
    (run / "config.toml").write_text(original.replace("lr = 0.05", "lr = 0.5"))
    edited = cli_in_process(capsys, monkeypatch, "finetune", "--resume", str(run), "--quiet")
    assert edited.returncode == 1 and "was changed after its last checkpoint (lr)" in edited.stderr
    (run / "config.toml").write_text(original)
    extended = cli_in_process(capsys, monkeypatch, "finetune", "--resume", str(run), "--epochs", "2", "--quiet")
    assert extended.returncode == 0, extended.stderr
    epochs = [
        json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line and '"kind": "epoch"' in line
    ]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert "epochs = 2" in (run / "config.toml").read_text()
    shorter = cli_in_process(capsys, monkeypatch, "finetune", "--resume", str(run), "--epochs", "1", "--quiet")
    assert shorter.returncode != 0 and "Traceback" not in shorter.stderr
