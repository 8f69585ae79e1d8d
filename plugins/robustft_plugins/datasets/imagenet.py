"""ImageNet-1k (Deng et al., CVPR 2009; Russakovsky et al., IJCV 2015) from ``train/`` and ``val/`` folders.

Layout under ``--data-dir`` (default ``$ROBUSTFT_CACHE/data/imagenet``, else ``./data/imagenet``):
``train/<wnid>/<image>.JPEG`` and ``val/<wnid>/<image>.JPEG`` (the usual ImageFolder layout; the
validation images sorted into class folders). ImageNet cannot be downloaded automatically (its licence
asks each user to register), so a missing folder ends in one sentence saying where the folders go.

Pre-processing: training uses the augmentation of Engstrom et al.'s robustness library, which E-AT App. A
fine-tunes ImageNet models with: a random resized crop to 224 x 224, a horizontal flip, colour jitter
(brightness, contrast and saturation 0.1) and AlexNet's PCA lighting noise (standard deviation 0.05 along
the principal components of ImageNet's RGB values; Krizhevsky et al. 2012), clamped back into [0, 1] so the
attacks' box stays valid; evaluation resizes the shorter side to 256 and takes the central 224 x 224 crop (the
``Res256Crop224`` pre-processing RobustBench uses for its ImageNet models). Inputs stay in [0, 1]; the
models normalise inside. Radii (E-AT Table 3, RAMP Sec. 5.1): l-inf 4/255, l2 2, l1 255. The validation
set is evaluated in a fixed pseudo-random order (see :mod:`robustft_plugins.datasets.imagefolder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustft.plugin import DatasetPlugin, UserError, data_root, hookimpl

if TYPE_CHECKING:  # torchvision imports in seconds; plugins load at every CLI start
    from torchvision import transforms
from robustft_plugins.datasets.imagefolder import LARGE_EPS, LARGE_RECIPE, LARGE_RECIPE_SOURCE, ImageFolderData, to_float_tensor

SIZE, RESIZE = 224, 256
#: Eigenvalues and eigenvectors (columns) of the covariance of ImageNet's RGB pixel values, as used for
#: AlexNet's lighting augmentation and by the robustness library.
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009), (-0.5808, -0.0045, -0.8140), (-0.5836, -0.6948, 0.4203))
LIGHTING_STD = 0.05
JITTER = 0.1


class Lighting:
    """AlexNet's PCA lighting noise on a 3 x H x W tensor in [0, 1]: add ``V (alpha * lambda)`` to every pixel,
    ``alpha ~ N(0, std^2)`` per component, then clamp to [0, 1]."""

    def __init__(self, std: float = LIGHTING_STD) -> None:
        self.std = std

    def __call__(self, image: Any) -> Any:
        import torch

        if self.std == 0:
            return image
        alpha = torch.randn(3) * self.std
        shift = torch.tensor(PCA_EIGVEC) @ (alpha * torch.tensor(PCA_EIGVAL))
        return (image + shift.view(3, 1, 1).to(image.dtype)).clamp(0.0, 1.0)


class ImageNet(ImageFolderData):
    name = "imagenet"
    description = "ImageNet-1k from train/ and val/ class folders (224x224; eval resize 256, centre crop 224)"
    aliases = ("imagenet-1k", "ilsvrc2012")
    num_classes = 1000
    input_shape = (3, SIZE, SIZE)
    default_eps = LARGE_EPS
    recipe, recipe_source = LARGE_RECIPE, LARGE_RECIPE_SOURCE
    accepted_options = ("data_dir", "download", "skip_bad_images")
    label = "ImageNet folder"
    test_splits = ("val",)

    def configure(self, **options: Any) -> DatasetPlugin:
        clone = DatasetPlugin.configure(self, **options)
        root = clone._candidate()
        # Sized from the folders when they are there; otherwise the error waits until data is needed,
        # so 'robustft geometry --dataset imagenet' works without the data.
        clone._root = root if (root / "train").is_dir() else None
        clone._classes = clone._find_classes() if clone._root is not None else None
        clone.num_classes = len(clone._classes) if clone._classes else self.num_classes
        return clone

    def _candidate(self) -> Path:
        return data_root(self.options) if self.options.get("data_dir") else data_root({}) / "imagenet"

    def locate(self) -> Path:
        root = self._candidate()
        if not (root / "train").is_dir() or not (root / "val").is_dir():
            hint = " (ImageNet cannot be downloaded automatically: get it from image-net.org)" if self.options.get("download") else ""
            raise UserError(
                f"ImageNet is not in {str(root)!r}: put the train/ and val/ class folders there, or point --data-dir at them{hint}."
            )
        return root

    def eval_transform(self) -> transforms.Compose:
        from torchvision import transforms

        return transforms.Compose([transforms.Resize(RESIZE), transforms.CenterCrop(SIZE), to_float_tensor()])

    def train_transform(self) -> transforms.Compose:
        from torchvision import transforms

        return transforms.Compose(
            [
                transforms.RandomResizedCrop(SIZE),
                transforms.RandomHorizontalFlip(),
                transforms.ColorJitter(brightness=JITTER, contrast=JITTER, saturation=JITTER),
                to_float_tensor(),
                Lighting(),
            ]
        )


@hookimpl
def register_datasets(register) -> None:
    register(ImageNet())
