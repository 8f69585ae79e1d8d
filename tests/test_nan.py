"""Non-finite losses: the run stops naming epoch and batch, or skips up to --max-nan-batches batches."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

import robustft
from robustft import hookimpl
from robustft.contracts import Scheme, SchemeOptions, option
from robustft.io import load_torch
from robustft.norms import Norm
from robustft.pluginmanager import PluginHost
from robustft.training import TrainingError


class NaNOnDemand(Scheme):
    """Clean cross-entropy, except at the listed (1-based, whole-run) batches, where the loss is NaN."""

    name = "nan-on-demand"
    default_norms = (Norm.LINF,)

    class Options(SchemeOptions):
        at: str = option("", help="comma-separated batch numbers")

    def __init__(self, norms, **options) -> None:
        super().__init__(norms, **options)
        self.seen = 0

    def loss(self, model, x, y, ctx):
        self.seen += 1
        loss = F.cross_entropy(model(x), y)
        if str(self.seen) in self.options.at.split(","):
            loss = loss * float("nan")
        return loss, {}


class Plugin:
    @staticmethod
    @hookimpl
    def register_schemes(register):
        register(NaNOnDemand)


@pytest.fixture()
def host():
    host = PluginHost()
    host.register(Plugin, name="nan-plugin")
    return host


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_non_finite_loss_stops_naming_epoch_and_batch(tmp_path, host, base_model):
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as raised:  # 4 batches per epoch: batch 6 is epoch 2, batch 2
        robustft.finetune(
            host=host, scheme="nan-on-demand", options={"at": "6"}, epochs=2, n_train=128, batch_size=32, checkpoint_every=1, out=str(run)
        )
    message = str(raised.value)
    assert "epoch 2, batch 2" in message and "nan" in message
    assert "epoch-002-batch-0001.pt" in message  # the last good checkpoint, kept
    assert (run / "checkpoints" / "epoch-002-batch-0001.pt").is_file()
    assert raised.value.exit_code == 1 and len(message.splitlines()) == 1
    assert json.loads((run / "run.json").read_text())["status"] == "failed"
    assert not (run / "model.pt").exists()


def test_max_nan_batches_skips_updates_and_counts_them(tmp_path, host, base_model):
    result = robustft.finetune(
        host=host,
        scheme="nan-on-demand",
        options={"at": "2,3"},
        epochs=1,
        n_train=128,
        batch_size=32,
        max_nan_batches=2,
        out=str(tmp_path / "run"),
    )
    batches = [r for r in records(result.run_dir) if r["kind"] == "batch"]
    assert [r["batch"] for r in batches if r.get("skipped")] == [2, 3]
    assert all(r["loss"] is None for r in batches if r.get("skipped"))
    epoch = [r for r in records(result.run_dir) if r["kind"] == "epoch"][0]
    assert epoch["nan_batches"] == 2 and epoch["images"] == 64  # the two good batches only

    with pytest.raises(TrainingError, match="epoch 1, batch 3"):  # one more than allowed
        robustft.finetune(
            host=host,
            scheme="nan-on-demand",
            options={"at": "2,3"},
            epochs=1,
            n_train=128,
            batch_size=32,
            max_nan_batches=1,
            out=str(tmp_path / "strict"),
        )


def test_a_skipped_batch_changes_no_weight(tmp_path, host, base_model):
    result = robustft.finetune(
        host=host,
        scheme="nan-on-demand",
        options={"at": "1,2"},
        epochs=1,
        n_train=64,
        batch_size=32,
        max_nan_batches=5,
        out=str(tmp_path / "run"),
    )
    after = load_torch(result.weights)["model"]
    before = base_model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)
