"""Architectures robustft can build from random initialisation (used by the ``scratch`` and ``file:`` zoos).

* **PreAct ResNet-18** (He et al., "Identity mappings in deep residual networks", ECCV 2016): the
  pre-activation residual network (BatchNorm and activation *before* each convolution) with four stages of
  two basic blocks (64, 128, 256, 512 channels). Both papers train it from scratch on CIFAR-10 (E-AT App. A,
  RAMP Sec. 5); the E-AT authors' models use the softplus activation instead of ReLU (E-AT App. A: "PreAct
  ResNet-18 with softplus activation function"), hence ``activation="softplus"``.
* **WideResNet** (Zagoruyko & Komodakis, "Wide residual networks", BMVC 2016): depth ``6n + 4``, widening
  factor ``k``, three stages of ``n`` pre-activation blocks with ``16k, 32k, 64k`` channels; WRN-28-10 is
  what E-AT (App. A) and RAMP (App. B.4) train from scratch with TRADES and the cyclic schedule.

Every model takes inputs in ``[0, 1]``; an optional per-channel ``mean``/``std`` is folded into the forward
pass (stored as non-persistent buffers, so state dicts stay the plain architecture's and load checkpoints
saved by other code bases with the usual key names: ``conv1``, ``layer1.0.bn1``, ``shortcut.0``, ``bn``,
``linear`` for the ResNet; ``block1.layer.0.conv1``, ``convShortcut``, ``bn1``, ``fc`` for the WRN).
The final pooling is adaptive, so the networks run on any input size (32x32 CIFAR, 8x8 digits).

``build_architecture(name, num_classes=..., in_channels=..., **kw)`` builds one of :data:`ARCHITECTURES`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from robustft.plugin import BadInputError, UnknownNameError
from robustft_plugins.zoos.builtin import DigitsCNN

ACTIVATIONS = ("relu", "softplus")


def make_activation(name: str, softplus_beta: float = 1.0) -> nn.Module:
    """``relu`` or ``softplus`` (smooth, so gradients of the classifier are not piecewise constant)."""
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=softplus_beta)
    raise BadInputError(f"Unknown activation {name!r}: choose one of {', '.join(ACTIVATIONS)}.")


class InputNormalization(nn.Module):
    """``(x - mean) / std`` per channel; identity when neither is given. Buffers are not saved in state dicts."""

    def __init__(self, in_channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.enabled = mean is not None or std is not None
        mean_t = torch.as_tensor(mean if mean is not None else [0.0] * in_channels, dtype=torch.float32)
        std_t = torch.as_tensor(std if std is not None else [1.0] * in_channels, dtype=torch.float32)
        for label, t in (("mean", mean_t), ("std", std_t)):
            if t.numel() not in (1, in_channels):
                raise BadInputError(f"Normalisation {label} has {t.numel()} values; the model has {in_channels} input channels.")
        if (std_t <= 0).any():
            raise BadInputError("Normalisation std must be positive.")
        self.register_buffer("mean", mean_t.reshape(1, -1, 1, 1).expand(1, in_channels, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std_t.reshape(1, -1, 1, 1).expand(1, in_channels, 1, 1).clone(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std if self.enabled else x


# ------------------------------------------------------------------------------------- PreAct ResNet


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``conv(act(bn(conv(act(bn(x)))))) + shortcut``.

    When the block changes resolution or width, the shortcut is a strided 1x1 convolution applied to the
    activated input (He et al. 2016, Fig. 4e), as in the CIFAR PreAct ResNets of the robustness literature.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str, softplus_beta: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.act1 = make_activation(activation, softplus_beta)
        self.act2 = make_activation(activation, softplus_beta)
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(x))
        skip = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(self.act2(self.bn2(out)))
        return out + skip


class PreActResNet(nn.Module):
    """PreAct ResNet with basic blocks; ``blocks=(2, 2, 2, 2)`` is PreAct ResNet-18.

    ``width`` is the first stage's channel count (64 in He et al.); the stages have ``width * (1, 2, 4, 8)``.
    """

    def __init__(
        self,
        blocks: Sequence[int] = (2, 2, 2, 2),
        *,
        width: int = 64,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        softplus_beta: float = 1.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        make_activation(activation)  # reject an unknown name before building anything
        self.normalize = InputNormalization(in_channels, mean, std)
        if width < 1:
            raise BadInputError(f"A PreAct ResNet needs a width of at least 1, got {width}.")
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        in_planes = width
        for index, (planes, count) in enumerate(zip((width, 2 * width, 4 * width, 8 * width), blocks)):
            stride = 1 if index == 0 else 2
            layer = []
            for block in range(count):
                layer.append(PreActBlock(in_planes, planes, stride if block == 0 else 1, activation, softplus_beta))
                in_planes = planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = make_activation(activation, softplus_beta)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = self.act(self.bn(out))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


class PreActResNet18(PreActResNet):
    """PreAct ResNet-18 (He et al. 2016): ``activation="relu"`` (default) or ``"softplus"``."""

    def __init__(self, *, num_classes: int = 10, in_channels: int = 3, activation: str = "relu", **kw: Any) -> None:
        super().__init__((2, 2, 2, 2), num_classes=num_classes, in_channels=in_channels, activation=activation, **kw)


def preact_resnet18_softplus(*, num_classes: int = 10, in_channels: int = 3, **kw: Any) -> PreActResNet18:
    """PreAct ResNet-18 with softplus activations (beta 1), as the E-AT authors' l1/l2/l-inf models."""
    kw.setdefault("activation", "softplus")
    return PreActResNet18(num_classes=num_classes, in_channels=in_channels, **kw)


# ---------------------------------------------------------------------------------------- WideResNet


class WideBlock(nn.Module):
    """WRN basic block (pre-activation, two 3x3 convolutions); a 1x1 shortcut when the width changes."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str, softplus_beta: float, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = make_activation(activation, softplus_beta)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = make_activation(activation, softplus_beta)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.equal_in_out = in_planes == planes and stride == 1
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.relu2(self.bn2(self.conv1(activated)))
        if self.dropout > 0:
            out = nn.functional.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return out + (x if self.convShortcut is None else self.convShortcut(activated))


class WideStage(nn.Module):
    def __init__(self, count: int, in_planes: int, planes: int, stride: int, activation: str, softplus_beta: float, dropout: float) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *(
                WideBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1, activation, softplus_beta, dropout)
                for i in range(count)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen`` (Zagoruyko & Komodakis 2016); ``depth = 6n + 4``."""

    def __init__(
        self,
        depth: int = 28,
        widen: int = 10,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        activation: str = "relu",
        softplus_beta: float = 1.0,
        dropout: float = 0.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise BadInputError(f"WideResNet depth must be 6n + 4 (10, 16, 22, 28, 34, ...), got {depth}.")
        if widen < 1:
            raise BadInputError(f"WideResNet widening factor must be at least 1, got {widen}.")
        make_activation(activation)
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.normalize = InputNormalization(in_channels, mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1, activation, softplus_beta, dropout)
        self.block2 = WideStage(n, widths[1], widths[2], 2, activation, softplus_beta, dropout)
        self.block3 = WideStage(n, widths[2], widths[3], 2, activation, softplus_beta, dropout)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = make_activation(activation, softplus_beta)
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():  # He initialisation as in the WRN paper; zero biases
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def wrn_28_10(*, num_classes: int = 10, in_channels: int = 3, depth: int = 28, widen: int = 10, **kw: Any) -> WideResNet:
    """WideResNet-28-10 (``depth`` and ``widen`` may be changed)."""
    return WideResNet(depth, widen, num_classes=num_classes, in_channels=in_channels, **kw)


# ---------------------------------------------------------------------------------------- digits CNN


class NormalizedDigitsCNN(DigitsCNN):
    """The built-in digits CNN with input normalisation folded in (state dict keys unchanged)."""

    def __init__(
        self, num_classes: int = 10, width: int = 16, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
    ) -> None:
        super().__init__(num_classes=num_classes, width=width)
        self.normalize = InputNormalization(1, mean, std)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(self.normalize(x))


def digits_cnn(
    *, num_classes: int = 10, in_channels: int = 1, width: int = 16, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> nn.Module:
    """The embedded default's small CNN (``DigitsCNN``): one input channel, 8x8 inputs."""
    if in_channels != 1:
        raise BadInputError(f"Architecture 'digits-cnn' takes 1 input channel (8x8 digits), not {in_channels}.")
    if mean is None and std is None:
        return DigitsCNN(num_classes=num_classes, width=width)
    return NormalizedDigitsCNN(num_classes=num_classes, width=width, mean=mean, std=std)


#: Architecture name -> builder taking ``num_classes``, ``in_channels`` and the architecture's keywords.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "preact-resnet18": PreActResNet18,
    "preact-resnet18-softplus": preact_resnet18_softplus,
    "wrn-28-10": wrn_28_10,
    "digits-cnn": digits_cnn,
}


def build_architecture(name: str, *, num_classes: int, in_channels: int, **kw: Any) -> nn.Module:
    """A freshly initialised ``name`` (one of :data:`ARCHITECTURES`) for ``num_classes`` classes."""
    key = name.strip().lower()
    if key not in ARCHITECTURES:
        raise UnknownNameError("architecture", name, ARCHITECTURES)
    if num_classes < 2:
        raise BadInputError(f"A classifier needs at least 2 classes, got {num_classes}.")
    try:
        return ARCHITECTURES[key](num_classes=num_classes, in_channels=in_channels, **kw)
    except TypeError as exc:  # an option the architecture does not have
        raise BadInputError(f"Architecture {key!r} does not accept these options ({exc}).") from None


__all__ = [
    "ARCHITECTURES",
    "InputNormalization",
    "PreActResNet",
    "WideResNet",
    "build_architecture",
    "digits_cnn",
    "PreActResNet18",
    "preact_resnet18_softplus",
    "wrn_28_10",
]
