"""MNIST (LeCun et al., "Gradient-based learning applied to document recognition", 1998).

Files: torchvision's layout under ``--data-dir`` (default ``$ROBUSTFT_CACHE/data``, else ``./data``):
``MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (the unpacked IDX files). torchvision reads
them (no pickle involved); ``--download`` fetches them with torchvision, otherwise a missing file ends
in one sentence saying where the files go.

No augmentation (flips and crops change digits). Radii (E-AT's MNIST setting; Croce & Hein 2020b use
the same): l-inf 0.3, l2 2, l1 10.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from robustft.plugin import DatasetPlugin, ImageArrayDataset, Norm, UserError, data_root, hookimpl

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class Mnist(DatasetPlugin):
    name = "mnist"
    description = "MNIST handwritten digits (60,000 train / 10,000 test, 28x28 grey), torchvision's files"
    num_classes = 10
    input_shape = (1, 28, 28)
    default_eps = {Norm.LINF: Fraction(3, 10), Norm.L2: Fraction(2), Norm.L1: Fraction(10)}
    accepted_options = ("data_dir", "download")
    #: E-AT App. E: the cyclic schedule with peak 0.05 (used there for training and fine-tuning), 3 epochs,
    #: APGD with 50 steps in l1 at an initial sparsity of 10% (instead of 5%) and 5 in l-inf; the paper does
    #: not give l2's, which keeps robustft's 10.
    recipe = {
        "epochs": 3,
        "lr": 0.05,
        "lr_schedule": "cyclic",
        "batch_size": 128,
        "weight_decay": 5e-4,
        "attack_steps": {"inf": 5, "1": 50},
        "attack_options": {"1": {"topk": 0.1}},
    }
    recipe_source = "E-AT App. E, MNIST"

    def configure(self, **options: Any) -> DatasetPlugin:
        clone = super().configure(**options)
        clone._cache = {}
        return clone

    _cache: dict[str, ImageArrayDataset] = {}

    def _split(self, train: bool) -> ImageArrayDataset:
        import torchvision.datasets

        root: Path = data_root(self.options)
        key = f"{root}:{train}"
        if key not in self._cache:
            raw = root / "MNIST" / "raw"
            missing = [name for name in RAW_FILES if not (raw / name).is_file()]
            if missing and not self.options.get("download"):
                raise UserError(
                    f"MNIST is not in {str(root)!r} ({missing[0]} is missing from {str(raw)!r}) and downloads are off: "
                    "rerun with --download, or put the four unpacked IDX files there (--data-dir chooses the folder)."
                )
            try:
                data = torchvision.datasets.MNIST(str(root), train=train, download=bool(missing))
            except (RuntimeError, OSError, ValueError) as exc:
                raise UserError(f"MNIST in {str(raw)!r} could not be read or downloaded ({str(exc)[:120]}).") from None
            images = data.data.to(torch.uint8).unsqueeze(1)
            self._cache[key] = ImageArrayDataset(images, data.targets)
        return self._cache[key]

    def train(self, *, augment: bool = True) -> ImageArrayDataset:
        return self._split(True)

    def test(self) -> ImageArrayDataset:
        return self._split(False)


@hookimpl
def register_datasets(register) -> None:
    register(Mnist())
