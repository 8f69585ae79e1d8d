"""Pre-flight: every check fails in one sentence before any compute and before the run folder exists."""

from __future__ import annotations

import os
import re
import shutil
from collections import namedtuple

import pytest
import torch
from torch import nn

import robustft
from robustft import hookimpl
from robustft.contracts import DatasetPlugin, ModelInfo, ModelZoo
from robustft.errors import BadInputError, UserError
from robustft.pluginmanager import PluginHost

LOADS: list[str] = []


class CountingZoo(ModelZoo):
    """Records every load; 'broken' raises, 'wrong-classes' has 3 outputs for 10 classes."""

    name = "counting"

    def models(self):
        return [ModelInfo(name=n, dataset="digits") for n in ("fine", "broken", "wrong-classes")]

    def load(self, info, *, device, dataset=None, **options):
        LOADS.append(info.name)
        if info.name == "broken":
            raise FileNotFoundError("weights.bin is missing")
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 3 if info.name == "wrong-classes" else 10))


class MissingData(DatasetPlugin):
    name = "missing-data"
    num_classes = 10
    input_shape = (1, 8, 8)
    default_eps = {}

    def train(self, *, augment=True):
        raise FileNotFoundError("/data/missing/train.bin")

    def test(self):  # pragma: no cover - never reached
        raise FileNotFoundError("/data/missing/test.bin")


class Plugin:
    @staticmethod
    @hookimpl
    def register_zoos(register):
        register(CountingZoo())

    @staticmethod
    @hookimpl
    def register_datasets(register):
        register(MissingData())


@pytest.fixture()
def host():
    LOADS.clear()
    host = PluginHost()
    host.register(Plugin, name="preflight-test")
    return host


def fails(host, tmp_path, error=UserError, **options) -> str:
    out = tmp_path / "run"
    with pytest.raises(error) as raised:
        robustft.finetune(host=host, out=str(out), epochs=1, n_train=32, batch_size=32, **options)
    assert not out.exists(), "a failed pre-flight must not leave a run folder"
    message = str(raised.value)
    assert len(message.splitlines()) == 1 and message.endswith((".", "?"))
    return message


@pytest.mark.parametrize(
    "eps,match",
    [
        ({"inf": "2"}, r"l-inf radius 2 is larger.*at most 1"),
        ({"1": "65"}, r"l1 radius 65 is larger.*at most 64"),
        ({"2": "9"}, r"l2 radius 9 is larger.*at most 8"),
    ],
)
def test_radius_larger_than_the_box_is_refused_before_the_model_loads(host, tmp_path, eps, match):
    norms = ",".join(eps)
    message = fails(host, tmp_path, BadInputError, model="counting:fine", scheme="lp-at", norms=norms, eps=eps)
    assert re.search(match, message)
    assert LOADS == []


def test_model_that_cannot_be_loaded(host, tmp_path):
    message = fails(host, tmp_path, model="counting:broken")
    assert "'broken'" in message and "counting" in message and "weights.bin is missing" in message


def test_model_that_does_not_fit_the_data(host, tmp_path):
    message = fails(host, tmp_path, model="counting:wrong-classes")
    assert "shape (2, 3)" in message and "(2, 10)" in message


def test_data_that_is_not_there(host, tmp_path):
    message = fails(host, tmp_path, model="counting:fine", dataset="missing-data", eps={"inf": "0.1", "1": "2"})
    assert "missing-data" in message and "/data/missing/train.bin" in message
    assert LOADS == []  # the data is checked before the model is loaded


def test_output_folder_that_cannot_be_created(host, tmp_path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        robustft.finetune(host=host, out=str(tmp_path / "a-file" / "run"), model="counting:fine")
    assert LOADS == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="permissions do not bind root")
def test_output_folder_without_write_permission(host, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="cannot be written"):
            robustft.finetune(host=host, out=str(locked / "run"), model="counting:fine")
    finally:
        locked.chmod(0o700)


def test_disk_without_space(host, tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 * 2**20, 9 * 2**20, 2**20))
    message = fails(host, tmp_path, model="counting:fine")
    assert "1 MiB free" in message and "needs at least" in message
    assert LOADS == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_that_is_not_there(host, tmp_path):
    message = fails(host, tmp_path, model="counting:fine", device="cuda")
    assert "no CUDA GPU" in message
    assert LOADS == []
