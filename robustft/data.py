"""Training data loaders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from robustft.contracts import DatasetPlugin

if TYPE_CHECKING:
    from robustft.config import FinetuneConfig


def make_train_loader(
    dataset: DatasetPlugin, config: FinetuneConfig, generator: torch.Generator, device: torch.device
) -> torch.utils.data.DataLoader:
    """Shuffled batches of the training split (optionally only its first ``n_train`` points)."""
    train_set = dataset.train(augment=True)
    if config.n_train is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(config.n_train, len(train_set))))
    return torch.utils.data.DataLoader(
        train_set,
        batch_size=config.batch_size,
        shuffle=True,
        generator=generator,
        num_workers=config.workers,
        pin_memory=device.type == "cuda",
    )
