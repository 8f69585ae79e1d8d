"""Any folder of images: ``imagefolder:<path>`` with ``train/`` and ``test/`` (or ``val/``) subfolders.

Layout: ``<path>/train/<class>/<image>`` and ``<path>/test/<class>/<image>`` (``val/`` when there is
no ``test/``), any format PIL reads (PNG, JPEG, ...). Classes are the subfolders of ``train/`` in sorted
order; the test folder may hold a subset of them, never others. Images are converted to RGB.

Evaluation needs no training images: a folder without ``train/`` serves as a test split alone, either
``<path>/test/<class>/<image>`` (or ``val/``) or ``<path>/<class>/<image>`` itself, with its own class
subfolders in sorted order as the classes (``robustft eval --dataset imagefolder:cifar10/test``); only
fine-tuning then refuses it. The sorted order must be the model's class order, as it is for CIFAR-10's
folders; when the test split holds every class, its points and labels are the same whichever of these
layouts names it.

``--image-size S`` (default 32) sets the input size S x S:

* evaluation: resize the shorter side to S, centre crop S x S;
* training: S < 128 (CIFAR-like): the same resize, then random crop with S/8 pixels of zero padding and
  horizontal flip (the CIFAR recipe); S >= 128 (ImageNet-like): random resized crop to S and flip.

Radii: small images (S < 128) get CIFAR-10's (l-inf 8/255, l2 0.5, l1 12); large ones ImageNet's
(l-inf 4/255, l2 2, l1 255); give others with ``--eps``. Those are the two regimes the papers evaluate;
the l-inf radius is per pixel and does not depend on the size, and the l1/l2 radii are the community's
standard ones rather than a rescaling by dimension (which would give 588 for l1 at 224 x 224 where
ImageNet uses 255).

Every file's header is read when a split is built: unreadable files (not an image, a broken header, more
pixels than PIL's decompression-bomb limit) are named and the command stops, or with ``--skip-bad-images``
they are left out with a count (``image_files.py``).

Both splits are put in a fixed pseudo-random order (seed 0): folders are sorted by class, and the
evaluator takes the first ``--n-ex`` points and fine-tuning's ``--n-train`` the first N training points,
which should cover every class.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robustft.plugin import BadInputError, DatasetPlugin, Norm, UserError, hookimpl
from robustft_plugins.datasets.image_files import load_rgb, refuse_or_skip

if TYPE_CHECKING:  # torchvision imports in seconds; plugins load at every CLI start
    from torchvision import transforms

log = logging.getLogger("robustft")
SMALL_EPS = {Norm.LINF: Fraction(8, 255), Norm.L2: Fraction(1, 2), Norm.L1: Fraction(12)}
LARGE_EPS = {Norm.LINF: Fraction(4, 255), Norm.L2: Fraction(2), Norm.L1: Fraction(255)}
LARGE_FROM = 128
TEST_ORDER_SEED = 0
#: Fine-tuning recipes of the two regimes (E-AT App. A; RAMP Sec. 5.1). CIFAR-10: 3 epochs, batch 128, weight
#: decay 5e-4, 10 attack steps (the learning rate is the model's: 0.05 small, 0.01 large networks).
SMALL_RECIPE = {"epochs": 3, "batch_size": 128, "weight_decay": 5e-4, "attack_steps": 10}
SMALL_RECIPE_SOURCE = "E-AT App. A, CIFAR-10"
#: ImageNet: 1 epoch, lr 0.01 divided by 10 every third of it, batch 256, weight decay 1e-4, APGD with 5 steps
#: in l-inf and l2 and 15 in l1.
LARGE_RECIPE = {"epochs": 1, "lr": 0.01, "batch_size": 256, "weight_decay": 1e-4, "attack_steps": {"inf": 5, "2": 5, "1": 15}}
LARGE_RECIPE_SOURCE = "E-AT App. A and RAMP Sec. 5.1, ImageNet"


def _fixed_classes(root: str, class_to_idx: dict[str, int], transform: Any, *, skip_bad: bool = False) -> Any:
    """An ImageFolder whose class indices come from the training folder, not from its own subfolders, and
    whose files all have readable headers (bad ones refused, or left out with ``skip_bad``)."""
    from torchvision import datasets

    class FixedClasses(datasets.ImageFolder):
        def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
            present = sorted(p.name for p in Path(directory).iterdir() if p.is_dir())
            unknown = [c for c in present if c not in class_to_idx]
            if unknown:
                raise UserError(f"The test folder {directory!r} has class {unknown[0]!r}, which the training folder lacks.")
            return sorted(class_to_idx, key=class_to_idx.get), class_to_idx

    data = FixedClasses(root, transform=transform, loader=load_rgb, allow_empty=True)  # a test folder may lack classes
    data.samples = data.imgs = refuse_or_skip(data.samples, root, skip=skip_bad, warn=log.warning)
    data.targets = [label for _, label in data.samples]
    return data


def to_float_tensor() -> transforms.ToTensor:
    """PIL image (RGB, as ImageFolder loads it) -> float tensor C x H x W in [0, 1]."""
    from torchvision import transforms

    return transforms.ToTensor()


class ImageFolderData(DatasetPlugin):
    name = "imagefolder"
    description = "any image folder: imagefolder:PATH with train/ and test/ (or val/) class folders, or a test split alone"
    aliases = ("folder",)
    num_classes = 0
    input_shape = (3, 32, 32)
    default_eps = SMALL_EPS
    recipe, recipe_source = SMALL_RECIPE, SMALL_RECIPE_SOURCE
    accepted_options = ("path", "data_dir", "image_size", "skip_bad_images")
    default_size = 32
    label = "image folder"
    #: Subfolders tried, in order, for the test split.
    test_splits: tuple[str, ...] = ("test", "val")

    def configure(self, **options: Any) -> DatasetPlugin:
        clone = super().configure(**options)
        size = int(options.get("image_size") or self.default_size)
        if size < 8:
            raise BadInputError(f"--image-size must be at least 8, got {size}.")
        clone.input_shape = (3, size, size)
        large = size >= LARGE_FROM
        clone.default_eps = LARGE_EPS if large else SMALL_EPS
        clone.recipe, clone.recipe_source = (LARGE_RECIPE, LARGE_RECIPE_SOURCE) if large else (SMALL_RECIPE, SMALL_RECIPE_SOURCE)
        clone._root = clone.locate()
        clone._classes = clone._find_classes() if clone._root is not None else None
        clone.num_classes = len(clone._classes) if clone._classes else self.num_classes
        return clone

    _root: Path | None = None
    _classes: dict[str, int] | None = None

    def locate(self) -> Path | None:
        """The folder named by the path; imagefolder needs a path and checks its layout at once."""
        raw = self.options.get("path") or self.options.get("data_dir")
        if not raw:
            raise BadInputError("The imagefolder data set needs a folder: --dataset imagefolder:PATH.")
        root = Path(raw).expanduser()
        if not root.is_dir():
            raise UserError(f"The image folder {str(root)!r} does not exist.")
        if not (root / "train").is_dir() and self._test_dir(root) is None:
            raise UserError(
                f"The image folder {str(root)!r} has neither a train/ subfolder nor class subfolders to evaluate on "
                "(expected train/<class>/<image> and test/<class>/<image>, or <class>/<image> for evaluation alone)."
            )
        return root

    def _test_dir(self, root: Path) -> Path | None:
        """The test split: the first of :attr:`test_splits` present, else, without ``train/``, the folder itself
        when it has class subfolders (a test split given alone)."""
        split = next((root / s for s in self.test_splits if (root / s).is_dir()), None)
        if split is not None or (root / "train").is_dir():
            return split
        return root if any(p.is_dir() for p in root.iterdir()) else None

    def _class_dir(self) -> Path:
        """Where the classes come from: ``train/``, or the test split when the folder has no training images."""
        assert self._root is not None
        train = self._root / "train"
        folder = train if train.is_dir() else self._test_dir(self._root)
        assert folder is not None  # locate() refused a folder with neither
        return folder

    def _find_classes(self) -> dict[str, int]:
        folder = self._class_dir()
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
        if len(names) < 2:
            raise UserError(f"The {self.label} {str(folder)!r} needs at least two class subfolders, found {len(names)}.")
        return {n: i for i, n in enumerate(names)}

    @property
    def size(self) -> int:
        return self.input_shape[1]

    def eval_transform(self) -> transforms.Compose:
        from torchvision import transforms

        return transforms.Compose([transforms.Resize(self.size), transforms.CenterCrop(self.size), to_float_tensor()])

    def train_transform(self) -> transforms.Compose:
        from torchvision import transforms

        flip = transforms.RandomHorizontalFlip()
        if self.size >= LARGE_FROM:
            return transforms.Compose([transforms.RandomResizedCrop(self.size), flip, to_float_tensor()])
        return transforms.Compose(
            [transforms.Resize(self.size), transforms.RandomCrop(self.size, padding=max(1, self.size // 8)), flip, to_float_tensor()]
        )

    def _folder(self, folder: Path, transform: Any) -> torch.utils.data.Dataset:
        data = _fixed_classes(str(folder), self._classes or {}, transform, skip_bad=bool(self.options.get("skip_bad_images")))
        if len(data) == 0:
            raise UserError(f"The {self.label} {str(folder)!r} holds no images in its class subfolders.")
        return data

    def _located(self) -> Path:
        if self._root is None or self._classes is None:
            self._root = self.locate()
            self._classes = self._find_classes()
        assert self._root is not None
        return self._root

    def train(self, *, augment: bool = True) -> torch.utils.data.Dataset:
        root = self._located()
        if not (root / "train").is_dir():
            raise UserError(
                f"The {self.label} {str(root)!r} holds test images only; fine-tuning needs its training images in "
                "train/<class>/<image> beside test/<class>/<image>."
            )
        # In the fixed order too: the folders are sorted by class, and --n-train takes the first N points.
        return _in_fixed_order(self._folder(root / "train", self.train_transform() if augment else self.eval_transform()))

    def test(self) -> torch.utils.data.Dataset:
        root = self._located()
        folder = self._test_dir(root)
        if folder is None:
            raise UserError(f"The {self.label} {str(root)!r} has no {' or '.join(s + '/' for s in self.test_splits)} subfolder.")
        return _in_fixed_order(self._folder(folder, self.eval_transform()))


def _in_fixed_order(data: torch.utils.data.Dataset) -> torch.utils.data.Subset:
    """``data`` in a pseudo-random order fixed by :data:`TEST_ORDER_SEED`, so that its first N points (the
    evaluator's ``--n-ex``, fine-tuning's ``--n-train``) are a sample of every class."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(TEST_ORDER_SEED)).tolist()
    return torch.utils.data.Subset(data, order)


@hookimpl
def register_datasets(register) -> None:
    register(ImageFolderData())
