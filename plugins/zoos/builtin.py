"""The built-in zoo: small models robustft can build itself, offline, for the embedded default.

``digits-cnn-linf`` is a small convolutional network for scikit-learn's 8x8 digits, adversarially
trained in l-inf (radius 0.1) with 10-step APGD. It plays the part a RobustBench l-inf model plays on
CIFAR-10: robust in one threat model, weak in l1. It is built reproducibly (fixed seed, CPU) on first
use in about half a minute and cached under ``$ROBUSTFT_CACHE/models`` (default
``~/.cache/robustft/models``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from robustft.contracts import ModelInfo, ModelZoo
from robustft.errors import BadInputError
from robustft.hookspecs import hookimpl
from robustft.io import load_torch, save_torch
from robustft.norms import Norm
from robustft.paths import cache_dir

log = logging.getLogger("robustft")

RECIPE_VERSION = 1
BUILD_SEED = 0
BUILD_EPOCHS = 20
BUILD_EPS_INF = 0.1


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
    from robustft.pluginmanager import registries

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
            )
        ]

    def load(self, info: ModelInfo, *, device: torch.device, dataset: Any = None, **options: Any) -> nn.Module:
        unsupported = sorted(set(options) & {"checkpoint", "arch"})
        if unsupported:
            raise BadInputError(
                f"The built-in zoo builds its models itself and takes no --{unsupported[0]}; use file:PATH for your own weights."
            )
        path = cache_dir() / "models" / f"{info.name}-v{RECIPE_VERSION}.pt"
        if not path.is_file():
            log.info("Building the base model %s (first use; cached in %s).", info.name, path)
            save_torch({"format": "robustft-weights", "model": build_digits_cnn_linf()}, path)
        state = load_torch(path, "cached model")
        model = DigitsCNN()
        model.load_state_dict(state["model"])
        return model.to(device).eval()


@hookimpl
def register_zoos(register) -> None:
    register(BuiltinZoo())
