"""CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning multiple layers of features from tiny images", 2009).

Files: torchvision's layout under ``--data-dir`` (default ``$ROBUSTFT_CACHE/data``, else ``./data``):
``cifar-10-batches-py/{data_batch_1..5,test_batch}`` and ``cifar-100-python/{train,test}``, the
python-pickle batches of the official archives. ``--download`` fetches and unpacks the archive with
torchvision (which checks its MD5 sums); without it a missing file ends in one sentence saying where the
files go. The batches are read with :func:`robustft.data.safe_unpickle`, which admits NumPy arrays and
plain data only, so a tampered file cannot run code (torchvision would unpickle it freely).

Training augmentation (E-AT App. A, RAMP Sec. 5.1): random crop with 4 pixels of zero padding and
horizontal flip. Radii (E-AT Sec. 4, RAMP Sec. 5.1): l-inf 8/255, l2 0.5, l1 12. ``--extra-data FILE`` adds
pseudo-labelled images mixed half-and-half into each batch (see :mod:`robustft.data`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robustft.plugin import DatasetPlugin, ImageArrayDataset, UserError, data_root, get_key, hookimpl, load_extra_data, safe_unpickle

if TYPE_CHECKING:  # torchvision imports in seconds; plugins load at every CLI start
    from torchvision import transforms
from robustft_plugins.datasets.imagefolder import SMALL_EPS as CIFAR_EPS
from robustft_plugins.datasets.imagefolder import SMALL_RECIPE, SMALL_RECIPE_SOURCE


def cifar_augmentation() -> transforms.Compose:
    """Random crop (zero padding 4) and horizontal flip, on float tensors."""
    from torchvision import transforms

    return transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()])


class Cifar10(DatasetPlugin):
    name = "cifar10"
    description = "CIFAR-10 (50,000 train / 10,000 test, 32x32 colour, 10 classes), torchvision's files"
    aliases = ("cifar-10",)
    num_classes = 10
    input_shape = (3, 32, 32)
    default_eps = CIFAR_EPS
    recipe, recipe_source = SMALL_RECIPE, SMALL_RECIPE_SOURCE
    accepted_options = ("data_dir", "download", "extra_data")

    folder = "cifar-10-batches-py"
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    label_key = "labels"
    torchvision_class = "CIFAR10"
    display = "CIFAR-10"

    def configure(self, **options: Any) -> DatasetPlugin:
        clone = super().configure(**options)
        clone._cache = {}
        return clone

    _cache: dict[str, ImageArrayDataset] = {}

    @property
    def root(self) -> Path:
        return data_root(self.options)

    def _files(self, names: tuple[str, ...]) -> list[Path]:
        folder = self.root / self.folder
        missing = [folder / n for n in names if not (folder / n).is_file()]
        if missing and self.options.get("download"):
            self._download()
            missing = [p for p in missing if not p.is_file()]
        if missing:
            raise UserError(
                f"{self.display} is not in {str(self.root)!r} ({missing[0].name} is missing from {str(folder)!r}) "
                f"and downloads are off: rerun with --download, or unpack the official python archive there (--data-dir chooses the folder)."
            )
        return [folder / n for n in names]

    def _download(self) -> None:
        import torchvision.datasets

        try:
            getattr(torchvision.datasets, self.torchvision_class)(str(self.root), train=True, download=True)
        except Exception as exc:  # urllib, socket and archive errors alike
            raise UserError(
                f"Downloading {self.display} into {str(self.root)!r} failed ({type(exc).__name__}): "
                "unpack the official python archive there yourself."
            ) from None

    def _split(self, names: tuple[str, ...]) -> ImageArrayDataset:
        key = str(self.root / self.folder) + ":" + ",".join(names)
        if key not in self._cache:
            images, labels = [], []
            for path in self._files(names):
                batch = safe_unpickle(path, f"{self.display} file")
                data, targets = get_key(batch, "data"), get_key(batch, self.label_key)
                if data is None or targets is None:
                    raise UserError(f"The {self.display} file {str(path)!r} lacks its 'data' or '{self.label_key}' entry.")
                images.append(np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.append(np.asarray(targets, dtype=np.int64))
            self._cache[key] = ImageArrayDataset(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))
        return self._cache[key]

    def train(self, *, augment: bool = True) -> ImageArrayDataset:
        base = self._split(self.train_files)
        return ImageArrayDataset(base.images, base.labels, cifar_augmentation() if augment else None)

    def test(self) -> ImageArrayDataset:
        return self._split(self.test_files)

    def extra(self) -> ImageArrayDataset | None:
        """The ``--extra-data`` images, with the training augmentation; None without the option."""
        path = self.options.get("extra_data")
        if not path:
            return None
        return load_extra_data(path, self.input_shape, self.num_classes, cifar_augmentation())


class Cifar100(Cifar10):
    name = "cifar100"
    description = "CIFAR-100 (50,000 train / 10,000 test, 32x32 colour, 100 classes), torchvision's files"
    aliases = ("cifar-100",)
    num_classes = 100
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = "fine_labels"
    torchvision_class = "CIFAR100"
    display = "CIFAR-100"


__all__ = ["CIFAR_EPS", "Cifar10", "Cifar100", "cifar_augmentation"]


@hookimpl
def register_datasets(register) -> None:
    register(Cifar10())
    register(Cifar100())
