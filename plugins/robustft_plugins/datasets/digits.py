"""scikit-learn's 8x8 handwritten digits as a robustft data set (real data, offline, no download).

1,797 grey-scale images of the digits 0-9 (UCI "Optical Recognition of Handwritten Digits"), shipped
inside scikit-learn. Pixel counts 0..16 are scaled to [0, 1]. A fixed stratified split keeps 360 images
(20%) for testing. No augmentation: flips change digits and 8x8 crops leave nothing to crop.

Radii (d = 64): l-inf 0.1, l2 0.4, l1 2. They mirror CIFAR-10's geometry (``robustft geometry
--dataset digits``): the l1 ball is not inside the l-inf ball nor the reverse (0.1 < 2 < 6.4); the
largest l2 ball inside the union of the l1 and l-inf balls (radius 0.259) does not cover l2 = 0.4,
while the convex hull of the union holds one of radius 2 / sqrt(20) = 0.447 that does, so E-AT's
premise (train on l1 and l-inf only) holds, as it does for CIFAR-10 (0.218 < 0.5 < 0.614). And an
l-inf-robust model is clearly weaker in l1, the situation E-AT fine-tuning repairs.
"""

from __future__ import annotations

from fractions import Fraction
from functools import cached_property

import torch
from torch.utils.data import TensorDataset

from robustft.plugin import DatasetPlugin, Norm, hookimpl

TEST_SIZE = 360
SPLIT_SEED = 0


class Digits(DatasetPlugin):
    name = "digits"
    description = "scikit-learn's 8x8 handwritten digits (1,437 train / 360 test), offline"
    aliases = ("sklearn-digits",)
    num_classes = 10
    input_shape = (1, 8, 8)
    default_eps = {Norm.LINF: Fraction(1, 10), Norm.L2: Fraction(2, 5), Norm.L1: Fraction(2)}

    @cached_property
    def _split(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        images, labels = load_digits(return_X_y=True)
        x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=TEST_SIZE, random_state=SPLIT_SEED, stratify=labels)

        def to_tensor(x):  # counts 0..16 -> [0, 1], shape (N, 1, 8, 8)
            return torch.as_tensor(x, dtype=torch.float32).div_(16.0).reshape(-1, *self.input_shape)

        return to_tensor(x_train), torch.as_tensor(y_train), to_tensor(x_test), torch.as_tensor(y_test)

    def train(self, *, augment: bool = True) -> TensorDataset:  # scikit-learn ships the data: no options
        x, y, _, _ = self._split
        return TensorDataset(x, y)

    def test(self) -> TensorDataset:
        _, _, x, y = self._split
        return TensorDataset(x, y)


@hookimpl
def register_datasets(register) -> None:
    register(Digits())
