"""The torchvision zoo: ``torchvision:<name>`` or ``torchvision:<name>.<WEIGHTS>`` (torchvision's weight enums).

* ``torchvision:resnet18`` builds the architecture; ``torchvision:resnet18.IMAGENET1K_V1`` (or
  ``.DEFAULT``) names pretrained weights, fetched into torch hub's cache only with ``--download``
  (a cached copy loads offline). ``--checkpoint FILE`` loads a local state dict instead (safetensors,
  or torch with ``weights_only=True``).
* Normalisation: torchvision models expect ImageNet-normalised inputs; the mean and std of the weight
  enum's transforms (ImageNet's for an architecture without weights) are folded into the model, which
  takes ``[0, 1]`` inputs.
* The number of classes comes from the data set; named pretrained weights keep their own (1,000 for the
  ImageNet enums) and must match it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft.plugin import BadInputError, DatasetPlugin, ModelInfo, ModelZoo, UnknownNameError, UserError, hookimpl

log = logging.getLogger("robustft")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def split_name(name: str) -> tuple[str, str | None]:
    """``resnet18.IMAGENET1K_V1`` -> (``resnet18``, ``IMAGENET1K_V1``); ``resnet18`` -> (``resnet18``, None)."""
    arch, _, weights = name.partition(".")
    return arch.lower(), (weights or None)


class TorchvisionZoo(ModelZoo):
    """torchvision's classification models, with their weight enums; normalisation folded in."""

    name = "torchvision"
    aliases = ("tv",)
    description = "torchvision classifiers: torchvision:NAME[.WEIGHTS] (weights fetched only with --download)"

    def models(self) -> list[ModelInfo]:
        return []  # over a hundred; torchvision.models.list_models() lists them

    def resolve(self, name: str) -> ModelInfo | None:
        import torchvision.models as tvm

        arch, weights = split_name(name)
        if arch not in tvm.list_models(module=tvm):
            return None
        if weights is not None:
            self._weights(arch, weights)  # an unknown enum member is reported before any compute
        return ModelInfo(name=name, dataset="imagenet", description="torchvision model")

    @staticmethod
    def _weights(arch: str, weights: str) -> Any:
        import torchvision.models as tvm

        enum = tvm.get_model_weights(arch)
        members = {m.name: m for m in enum} | {"DEFAULT": enum.DEFAULT}
        if weights not in members:
            raise UnknownNameError(f"weights of torchvision model {arch!r}", weights, members)
        return members[weights]

    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        import torchvision.models as tvm

        from robustft_plugins.zoos.file_zoo import WithNormalization, load_weights, read_state_dict

        for refused in ("arch", "model_dir"):
            if options.get(refused):
                raise BadInputError(
                    f"The torchvision zoo takes no --{refused.replace('_', '-')}; use torchvision:NAME[.WEIGHTS] or --checkpoint."
                )
        arch, weight_name = split_name(info.name)
        checkpoint, download = options.get("checkpoint"), bool(options.get("download", False))
        if checkpoint and weight_name:
            raise BadInputError(f"Give either the weights {weight_name} or --checkpoint for torchvision:{arch}, not both.")
        weights = self._weights(arch, weight_name) if weight_name else None
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if weights is not None:
            transform = weights.transforms()
            mean, std = tuple(getattr(transform, "mean", mean)), tuple(getattr(transform, "std", std))
            classes = len(weights.meta.get("categories") or [])
            if dataset is not None and classes and classes != dataset.num_classes:
                raise BadInputError(
                    f"torchvision weights {weight_name} have {classes} classes but data set {dataset.name!r} has {dataset.num_classes}."
                )
            model = self._pretrained(arch, weights, download)
        else:
            kwargs = {"num_classes": dataset.num_classes} if dataset is not None else {}
            model = tvm.get_model(arch, weights=None, **kwargs)
            if checkpoint:
                load_weights(model, read_state_dict(checkpoint), checkpoint, f"torchvision model {arch!r}")
            else:
                log.warning(
                    "torchvision:%s starts from random weights: name weights (torchvision:%s.DEFAULT) or pass --checkpoint.", arch, arch
                )
        return WithNormalization(model, mean, std).to(device).eval()

    def describe_architecture(self, info: ModelInfo, *, dataset: DatasetPlugin, **options: Any) -> dict[str, Any] | None:
        """torchvision's network and the normalisation :meth:`load` folds in (the weights' own, else ImageNet's)."""
        arch, weights_name = split_name(info.name)
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if weights_name:
            transform = self._weights(arch, weights_name).transforms()
            mean, std = tuple(getattr(transform, "mean", mean)), tuple(getattr(transform, "std", std))
        return {
            "architecture": f"torchvision:{arch}",
            "architecture_options": {},
            "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        }

    @staticmethod
    def _pretrained(arch: str, weights: Any, download: bool) -> nn.Module:
        import torchvision.models as tvm

        from robustft_plugins.zoos.file_zoo import load_weights, read_state_dict

        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file() and not download:
            raise UserError(
                f"torchvision weights {weights} are not in torch hub's cache ({str(cached)!r}) and downloads are off: "
                f"rerun with --download, or download {weights.url} and save it there."
            )
        model = tvm.get_model(arch, weights=None, num_classes=len(weights.meta["categories"]))
        if not cached.is_file():
            cached.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(weights.url, str(cached), progress=False)
            except Exception as exc:  # urllib, socket and OS errors alike
                raise UserError(
                    f"Downloading {weights.url} failed ({type(exc).__name__}): download it yourself and save it as {str(cached)!r}."
                ) from None
        load_weights(model, read_state_dict(cached), cached, f"torchvision model {arch!r}")
        return model


@hookimpl
def register_zoos(register) -> None:
    register(TorchvisionZoo())
