"""The from-scratch architectures and the ``scratch`` zoo."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from helpers import cli_in_process
from torch import nn

from robustft.contracts import DatasetPlugin
from robustft.errors import BadInputError, UnknownNameError
from robustft.norms import Norm
from robustft_plugins.zoos.architectures import (
    ARCHITECTURES,
    PreActResNet18,
    WideResNet,
    build_architecture,
)
from robustft_plugins.zoos.builtin import DigitsCNN
from robustft_plugins.zoos.scratch import ScratchZoo


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_names():
    assert set(ARCHITECTURES) == {"preact-resnet18", "preact-resnet18-softplus", "wrn-28-10", "digits-cnn"}


@pytest.mark.parametrize(
    "name,shape,classes",
    [
        ("preact-resnet18", (2, 3, 32, 32), 10),
        ("preact-resnet18-softplus", (2, 3, 32, 32), 100),
        ("preact-resnet18", (2, 1, 8, 8), 7),  # any input size: the pooling is adaptive
        ("digits-cnn", (2, 1, 8, 8), 10),
    ],
)
def test_output_shapes(name, shape, classes):
    model = build_architecture(name, num_classes=classes, in_channels=shape[1]).eval()
    with torch.no_grad():
        assert model(torch.rand(shape)).shape == (shape[0], classes)


def test_sizes_match_the_published_architectures():
    assert n_params(build_architecture("preact-resnet18", num_classes=10, in_channels=3)) == 11_172_170
    wrn = build_architecture("wrn-28-10", num_classes=10, in_channels=3)
    assert n_params(wrn) == 36_479_194  # WRN-28-10, 36.5M parameters (Zagoruyko & Komodakis 2016)
    assert sum(isinstance(m, nn.Conv2d) for m in wrn.modules()) == 25 + 3  # 1 + 3*4*2 convs, 3 shortcuts
    assert isinstance(build_architecture("digits-cnn", num_classes=10, in_channels=1), DigitsCNN)


def test_small_wide_resnet_shapes_and_depth_rule():
    model = WideResNet(10, 2, num_classes=4, in_channels=3).eval()
    with torch.no_grad():
        assert model(torch.rand(3, 3, 16, 16)).shape == (3, 4)
    with pytest.raises(BadInputError, match="6n"):
        WideResNet(27, 10)


def test_softplus_and_relu_differ_on_the_same_weights():
    relu = PreActResNet18(num_classes=10, in_channels=1).eval()
    soft = build_architecture("preact-resnet18-softplus", num_classes=10, in_channels=1).eval()
    assert relu.state_dict().keys() == soft.state_dict().keys()  # one checkpoint format for both
    soft.load_state_dict(relu.state_dict())
    assert any(isinstance(m, nn.Softplus) for m in soft.modules()) and not any(isinstance(m, nn.ReLU) for m in soft.modules())
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(relu(x), soft(x), atol=1e-4)
    assert PreActResNet18(activation="softplus").act.beta == 1.0


def test_state_dict_keys_follow_the_usual_layouts():
    keys = set(PreActResNet18().state_dict())
    assert {"conv1.weight", "layer1.0.bn1.weight", "layer2.0.shortcut.0.weight", "bn.weight", "linear.weight"} <= keys
    keys = set(WideResNet(10, 1).state_dict())
    assert {"conv1.weight", "block1.layer.0.conv1.weight", "block2.layer.0.convShortcut.weight", "bn1.weight", "fc.weight"} <= keys


def test_normalisation_is_folded_in_and_not_saved():
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    plain = build_architecture("preact-resnet18", num_classes=10, in_channels=3).eval()
    folded = build_architecture("preact-resnet18", num_classes=10, in_channels=3, mean=mean, std=std).eval()
    folded.load_state_dict(plain.state_dict())  # strict: no extra keys for mean/std
    x = torch.rand(2, 3, 32, 32)
    normalised = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(folded(x), plain(normalised), atol=1e-5)
    digits = build_architecture("digits-cnn", num_classes=10, in_channels=1, mean=(0.5,), std=(0.25,)).eval()
    assert set(digits.state_dict()) == set(DigitsCNN().state_dict())


def test_errors():
    with pytest.raises(UnknownNameError, match="preact-resnet18"):
        build_architecture("preact-resnet", num_classes=10, in_channels=3)
    with pytest.raises(BadInputError, match="1 input channel"):
        build_architecture("digits-cnn", num_classes=10, in_channels=3)
    with pytest.raises(BadInputError, match="activation"):
        build_architecture("preact-resnet18", num_classes=10, in_channels=3, activation="gelu")
    with pytest.raises(BadInputError, match="3 input channels"):
        build_architecture("preact-resnet18", num_classes=10, in_channels=3, mean=(0.5, 0.5))


class TinyData(DatasetPlugin):
    name = "tiny"
    num_classes = 7
    input_shape = (3, 16, 16)
    default_eps = {Norm.LINF: Fraction(1, 10)}

    def train(self, *, augment=True):
        raise AssertionError("the architecture tests never read data")

    def test(self):
        raise AssertionError("the architecture tests never read data")


def test_scratch_zoo_sizes_the_model_for_the_data_set_and_is_seeded():
    zoo = ScratchZoo()
    info = zoo.resolve("preact-resnet18")
    assert info is not None and info.dataset == "cifar10" and info.finetune_lr == 0.05
    assert zoo.resolve("digits-cnn").dataset == "digits" and zoo.resolve("wrn-28-10").finetune_lr == 0.1
    torch.manual_seed(1)
    a = zoo.load(info, device=torch.device("cpu"), dataset=TinyData()).eval()
    torch.manual_seed(1)
    b = zoo.load(info, device=torch.device("cpu"), dataset=TinyData()).eval()
    torch.manual_seed(2)
    c = zoo.load(info, device=torch.device("cpu"), dataset=TinyData()).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert a(x).shape == (2, 7)
        assert torch.equal(a(x), b(x)) and not torch.allclose(a(x), c(x))
    with pytest.raises(BadInputError, match="--checkpoint"):
        zoo.load(info, device=torch.device("cpu"), dataset=TinyData(), checkpoint="weights.pt")


def test_cli_trains_digits_cnn_from_scratch(tmp_path: Path, capsys, monkeypatch):
    out = tmp_path / "run"
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--model",
        "scratch:digits-cnn",
        "--scheme",
        "sat",
        "--epochs",
        "1",
        "--n-train",
        "128",
        "--attack-steps",
        "3",
        "--quiet",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["zoo"] == "scratch" and info["dataset"] == "digits" and info["status"] == "finished"
    epoch = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert epoch["images"] == 128 and epoch["loss"] > 0
