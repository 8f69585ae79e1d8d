"""The built-in zoo: small models that come with robustft and load offline.

* ``digits-cnn-linf`` is a small convolutional network for scikit-learn's 8x8 digits, adversarially
  trained in l-inf (radius 0.1) with 10-step APGD. It plays the part a RobustBench l-inf model plays on
  CIFAR-10: robust in one threat model, weak in l1. It is built reproducibly (fixed seed, CPU) on first
  use in about half a minute and cached under ``$ROBUSTFT_CACHE/models`` (default
  ``~/.cache/robustft/models``).
* ``cifar10-preact-w16-linf`` is a real l-inf-robust CIFAR-10 classifier small enough for CPUs: PreAct
  ResNet-18 at a quarter of the width (0.7M parameters), trained on the 50,000 CIFAR-10 training images with
  FGSM-RS adversarial training at 8/255 by ``benchmarks/train_cifar_base.py``. Its weights ship in the
  package (``weights/*.safetensors``) and are checked against their SHA-256 at every load.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft.plugin import BadInputError, ModelInfo, ModelZoo, Norm, UserError, cache_dir, hookimpl, load_torch, save_torch, sha256_file

log = logging.getLogger("robustft")

RECIPE_VERSION = 1
BUILD_SEED = 0
BUILD_EPOCHS = 20
BUILD_EPS_INF = 0.1
CIFAR10_SHA256 = "1899a27959d80a8e03a4d2a3c97e306823a43a1dbdd8f9aa1939c93b3fd68564"
CIFAR10_DESCRIPTION = (
    "PreAct ResNet-18 at quarter width (0.7M parameters), l-inf FGSM-RS training at 8/255 on all 50,000 CIFAR-10 "
    "images (benchmarks/train_cifar_base.py); shipped, offline. E-AT protocol, first 1,000 test images: clean 67.1%, "
    "l-inf 33.3%, l2 50.3%, l1 14.5%, union 14.5% (docs/zoos-and-data.md)"
)


class DigitsCNN(nn.Module):
    """Three 3x3 convolutions with BatchNorm and a two-layer head, for 1x8x8 inputs in [0, 1]."""

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_digits_cnn_linf() -> dict[str, torch.Tensor]:
    """Train the base model: clean warm-up epoch, then l-inf APGD adversarial training; returns its weights."""
    from robustft.plugin import registries

    reg = registries()
    data = reg.datasets.get("digits").train()
    attack = reg.attacks.get("apgd").build(Norm.LINF, BUILD_EPS_INF, steps=10, purpose="train")
    generator = torch.Generator().manual_seed(BUILD_SEED)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BUILD_SEED)
        model = DigitsCNN()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True, generator=generator)
        steps = BUILD_EPOCHS * len(loader)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.1, total_steps=steps)
        for epoch in range(BUILD_EPOCHS):
            for x, y in loader:
                if epoch > 0:  # adversarial from the second epoch on; the attack needs a model that has learnt something
                    model.eval()
                    x = attack(model, x, y).x_adv
                model.train()
                loss = nn.functional.cross_entropy(model(x), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return model.state_dict()


@dataclass(frozen=True)
class ShippedWeights:
    """Weights that ship in the package: the file under ``weights/``, its SHA-256, and the network they fit."""

    file: str
    sha256: str
    build: Callable[[], nn.Module]


def _preact_w16() -> nn.Module:
    from robustft_plugins.zoos.architectures import PreActResNet  # it imports this module's DigitsCNN

    return PreActResNet((2, 2, 2, 2), width=16, num_classes=10)


SHIPPED = {
    "cifar10-preact-w16-linf": ShippedWeights("cifar10-preact-w16-linf.safetensors", CIFAR10_SHA256, _preact_w16),
}


def load_shipped(name: str) -> nn.Module:
    """The shipped model ``name`` with its weights, after checking the file's SHA-256."""
    from safetensors.torch import load_file

    shipped = SHIPPED[name]
    path = Path(__file__).parent / "weights" / shipped.file
    if not path.is_file():
        raise UserError(f"The weights of {name} are missing from the installation ({path}): reinstall robustft.")
    if sha256_file(path) != shipped.sha256:
        raise UserError(f"The weights of {name} ({path}) are damaged: their SHA-256 does not match; reinstall robustft.")
    model = shipped.build()
    model.load_state_dict(load_file(str(path)))
    return model


#: The built-in models as the architectures of plugins/robustft_plugins/zoos/architectures.py that rebuild them key for key (for
#: ``robustft export``): name -> (architecture, its options).
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "digits-cnn-linf": ("digits-cnn", {}),
    "cifar10-preact-w16-linf": ("preact-resnet18", {"width": 16}),
}


class BuiltinZoo(ModelZoo):
    name = "builtin"
    description = "models robustft builds itself, offline (the embedded default's base model)"

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(
                name="digits-cnn-linf",
                dataset="digits",
                threat=Norm.LINF,
                aliases=("digits-cnn",),
                description="small CNN on 8x8 digits, l-inf adversarially trained (eps 0.1); built on first use",
                finetune_lr=0.05,
            ),
            ModelInfo(
                name="cifar10-preact-w16-linf",
                dataset="cifar10",
                threat=Norm.LINF,
                aliases=("cifar10-linf",),
                description=CIFAR10_DESCRIPTION,
                finetune_lr=0.05,
            ),
        ]

    def load(self, info: ModelInfo, *, device: torch.device, dataset: Any = None, **options: Any) -> nn.Module:
        unsupported = sorted(set(options) & {"checkpoint", "arch"})
        if unsupported:
            raise BadInputError(
                f"The built-in zoo builds its models itself and takes no --{unsupported[0]}; use file:PATH for your own weights."
            )
        if info.name in SHIPPED:
            return load_shipped(info.name).to(device).eval()
        path = cache_dir() / "models" / f"{info.name}-v{RECIPE_VERSION}.pt"
        if not path.is_file():
            log.info("Building the base model %s (first use; cached in %s).", info.name, path)
            save_torch({"format": "robustft-weights", "model": build_digits_cnn_linf()}, path)
        state = load_torch(path, "cached model")
        model = DigitsCNN()
        model.load_state_dict(state["model"])
        return model.to(device).eval()

    def describe_architecture(self, info: ModelInfo, *, dataset: Any, **options: Any) -> dict[str, Any] | None:
        if info.name not in ARCHITECTURES:
            return None
        arch, arch_options = ARCHITECTURES[info.name]
        return {"architecture": arch, "architecture_options": dict(arch_options), "normalization": None}


@hookimpl
def register_zoos(register) -> None:
    register(BuiltinZoo())
