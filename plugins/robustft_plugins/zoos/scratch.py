"""The ``scratch`` zoo: an architecture with random initialisation, for adversarial training from scratch.

``--model scratch:preact-resnet18 --dataset cifar10`` builds a freshly initialised PreAct ResNet-18 sized for
the configured data set (its ``num_classes`` and input channels); ``--model scratch:digits-cnn`` does the same
for the embedded default's small CNN on 8x8 digits. The initialisation is drawn from torch's global
generator, which the engine seeds with ``--seed`` just before loading the model, so runs are reproducible.

The papers' from-scratch recipes (docs/schemes.md):

* PreAct ResNet-18 (softplus for E-AT), CIFAR-10: 80 epochs, SGD lr 0.05 divided by 10 after epoch 70
  (E-AT App. A, RAMP Sec. 5), i.e. ``--epochs 80 --lr 0.05 --lr-schedule step --lr-step 70``; the engine's
  ``piecewise`` schedule is the common halves-and-quarters alternative.
* WideResNet-28-10, CIFAR-10: 30 epochs, cyclic schedule peaking at lr 0.1, TRADES-XENT outer loss
  (E-AT App. A, RAMP App. B.4): ``--epochs 30 --lr 0.1 --lr-schedule cyclic --outer-loss trades``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from robustft.plugin import BadInputError, DatasetPlugin, ModelInfo, ModelZoo, hookimpl
from robustft_plugins.zoos.architectures import build_architecture

log = logging.getLogger("robustft")

#: Architecture -> (data set it is meant for, description, the lr its from-scratch recipe starts from).
_CATALOGUE: dict[str, tuple[str, str, float]] = {
    "preact-resnet18": ("cifar10", "PreAct ResNet-18 (ReLU), random initialisation", 0.05),
    "preact-resnet18-softplus": ("cifar10", "PreAct ResNet-18 with softplus (the E-AT models), random initialisation", 0.05),
    "wrn-28-10": ("cifar10", "WideResNet-28-10, random initialisation (train with --lr-schedule cyclic --outer-loss trades)", 0.1),
    "digits-cnn": ("digits", "the embedded default's small CNN for 8x8 digits, random initialisation", 0.05),
}


class ScratchZoo(ModelZoo):
    name = "scratch"
    description = "built-in architectures with random initialisation, for training from scratch"

    def models(self) -> list[ModelInfo]:
        return [
            ModelInfo(name=arch, dataset=dataset, threat=None, description=text, finetune_lr=lr)
            for arch, (dataset, text, lr) in _CATALOGUE.items()
        ]

    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        given = sorted(k for k, v in options.items() if v is not None)
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise BadInputError(f"The scratch zoo builds untrained models and takes no {flag}; use file:PATH to load your own weights.")
        if dataset is None:  # a library caller without a data set: size the model for the one it is meant for
            from robustft.plugin import registries, resolve_dataset

            dataset = resolve_dataset(info.dataset, registries())
        in_channels = int(dataset.input_shape[0])
        log.debug(
            "Building %s with random initialisation for %s (%d classes, %d-channel inputs).",
            info.name,
            dataset.name,
            dataset.num_classes,
            in_channels,
        )
        model = build_architecture(info.name, num_classes=int(dataset.num_classes), in_channels=in_channels)
        return model.to(device)

    def describe_architecture(self, info: ModelInfo, *, dataset: DatasetPlugin, **options: Any) -> dict[str, Any] | None:
        return {"architecture": info.name, "architecture_options": {}, "normalization": None}  # the name is the architecture


@hookimpl
def register_zoos(register) -> None:
    register(ScratchZoo())
