"""Training data loaders, in-memory image data sets, and extra (pseudo-labelled) training data.

Extra data. Models trained with additional data (Carmon et al., "Unlabeled data improves adversarial
robustness", NeurIPS 2019: 500k Tiny-Images pseudo-labelled for CIFAR-10) were fine-tuned in E-AT
(Sec. 4 and App. A) and RAMP (App. B.1) on batches holding the same number of real and extra images; an
epoch ends when the whole real training set has been used once. With ``--extra-data FILE`` the data
set's ``extra()`` returns that data and :func:`make_train_loader` builds such batches: each batch of
``batch_size`` holds ``ceil(batch_size / 2)`` real and ``floor(batch_size / 2)`` extra points (the last
batch pairs the remaining real points with as many extra ones), so an epoch has about twice as many
batches as without extra data. The extra points are drawn without replacement, a fresh permutation each
time the extra set is used up.

File formats for ``--extra-data``:

* ``.npz`` with ``images`` (uint8, ``N x H x W x C``, or ``N x H x W`` for grey-scale) and ``labels``
  (integers, ``N``), read with ``allow_pickle=False``;
* Carmon et al.'s ``ti_500K_pseudo_labeled.pickle`` as distributed: a dict with ``data`` (uint8
  ``N x 32 x 32 x 3``) and ``extrapolated_targets``, read with :func:`safe_unpickle`, which admits only
  NumPy arrays and plain containers (no code runs).
"""

from __future__ import annotations

import functools
import io
import math
import pickle
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from robustft.contracts import DatasetPlugin
from robustft.errors import BadInputError, UserError

if TYPE_CHECKING:
    from robustft.config import FinetuneConfig

Transform = Callable[[Tensor], Tensor]


class ImageArrayDataset(torch.utils.data.Dataset):
    """Images held in memory as uint8 ``N x C x H x W``; items are ``(float image in [0, 1], label)``.

    ``transform`` (augmentation) acts on the float image of one item.
    """

    def __init__(self, images: Tensor, labels: Tensor, transform: Transform | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("images must be uint8 N x C x H x W")
        if labels.shape[0] != images.shape[0]:
            raise ValueError("one label per image")
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        x = self.images[index].float().div_(255.0)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[index]


def nhwc_to_tensor(images: np.ndarray) -> Tensor:
    """uint8 ``N x H x W x C`` (or ``N x H x W``) NumPy images as a uint8 ``N x C x H x W`` tensor."""
    array = np.asarray(images)
    if array.ndim == 3:
        array = array[..., None]
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2)))


def data_root(options: dict[str, Any]) -> Path:
    """``--data-dir``, else ``$ROBUSTFT_CACHE/data`` when that variable is set, else ``./data``."""
    import os

    from robustft.paths import CACHE_ENV

    if options.get("data_dir"):
        return Path(options["data_dir"]).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]) / "data"
    return Path("data")


# ------------------------------------------------------------------------------- safe unpickling


class _ArraysOnly(pickle.Unpickler):
    """Unpickles NumPy arrays and plain containers; any other class is refused instead of built."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("builtins", "bytearray"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused {module}.{name}")


def safe_unpickle(path: str | Path, what: str) -> Any:
    """A pickle of arrays and plain data (CIFAR batches, Carmon's 500k file); one sentence on failure."""
    path = Path(path)
    try:
        data = path.read_bytes()
        return _ArraysOnly(io.BytesIO(data), encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"The {what} {str(path)!r} does not exist.") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"The {what} {str(path)!r} is damaged or holds more than arrays ({str(exc)[:120]}).") from None


def get_key(mapping: Any, *names: str) -> Any:
    """``mapping[name]`` for the first name present, as ``str`` or ``bytes`` (Python 2 pickles use bytes)."""
    if isinstance(mapping, dict):
        for name in names:
            for key in (name, name.encode()):
                if key in mapping:
                    return mapping[key]
    return None


# ------------------------------------------------------------------------------------ extra data


def load_extra_data(
    path: str | Path, input_shape: Sequence[int], num_classes: int, transform: Transform | None = None
) -> ImageArrayDataset:
    """Read ``--extra-data`` (see the module docstring) and check it fits the data set."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"The extra data file {str(path)!r} does not exist.")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                images, labels = archive.get("images"), archive.get("labels")
        except (OSError, ValueError) as exc:
            raise UserError(f"The extra data file {str(path)!r} is not a readable .npz file ({str(exc)[:120]}).") from None
    else:
        content = safe_unpickle(path, "extra data file")
        images, labels = get_key(content, "data", "images"), get_key(content, "extrapolated_targets", "labels")
    if images is None or labels is None:
        raise UserError(
            f"The extra data file {str(path)!r} needs 'images' and 'labels' arrays (.npz) or 'data' and 'extrapolated_targets' (pickle)."
        )
    images, labels = np.asarray(images), np.asarray(labels).reshape(-1)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape[0] != labels.shape[0]:
        raise UserError(
            f"The extra data file {str(path)!r} must hold uint8 images N x H x W x C and N labels, "
            f"not {images.dtype} {tuple(images.shape)} and {tuple(labels.shape)}."
        )
    tensor = nhwc_to_tensor(images)
    if tuple(tensor.shape[1:]) != tuple(input_shape):
        raise UserError(
            f"The extra images in {str(path)!r} are {tuple(tensor.shape[1:])} (C, H, W); the data set's are {tuple(input_shape)}."
        )
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        # Casting would turn 2.7 into 2 without a word: pseudo-labels must be class indices already.
        raise UserError(f"The extra labels in {str(path)!r} must be integer class indices, not {labels.dtype}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"The extra labels in {str(path)!r} must lie in 0..{num_classes - 1}.")
    return ImageArrayDataset(tensor, torch.as_tensor(labels.astype(np.int64)), transform)


class HalfExtraBatches(torch.utils.data.Sampler[list[int]]):
    """Batches of indices into ``ConcatDataset([real, extra])``: half real, half extra (see module docstring)."""

    def __init__(self, n_real: int, n_extra: int, batch_size: int, generator: torch.Generator) -> None:
        if n_extra <= 0:
            raise UserError("The extra data set is empty.")
        self.n_real, self.n_extra, self.generator = n_real, n_extra, generator
        self.real_per_batch = max(1, math.ceil(batch_size / 2))
        self.extra_per_batch = batch_size - self.real_per_batch
        self._extra_order: list[int] = []

    def __len__(self) -> int:
        return math.ceil(self.n_real / self.real_per_batch)

    def last_batch_size(self) -> int:
        """The size of an epoch's final batch (the short one, when the real points do not divide evenly)."""
        real = self.n_real - (len(self) - 1) * self.real_per_batch
        return real + (self.extra_per_batch if real == self.real_per_batch else min(real, self.extra_per_batch))

    def _next_extra(self, count: int) -> list[int]:
        taken: list[int] = []
        while len(taken) < count:
            if not self._extra_order:
                self._extra_order = torch.randperm(self.n_extra, generator=self.generator).tolist()
            need = count - len(taken)
            taken += self._extra_order[:need]
            del self._extra_order[:need]
        return [self.n_real + i for i in taken]

    def __iter__(self) -> Iterator[list[int]]:
        order = torch.randperm(self.n_real, generator=self.generator).tolist()
        for start in range(0, self.n_real, self.real_per_batch):
            real = order[start : start + self.real_per_batch]
            # the last, short batch keeps the half-and-half ratio
            extra_count = self.extra_per_batch if len(real) == self.real_per_batch else min(len(real), self.extra_per_batch)
            yield real + self._next_extra(extra_count)


def make_train_loader(
    dataset: DatasetPlugin,
    config: FinetuneConfig,
    generator: torch.Generator,
    device: torch.device,
    *,
    rank: int = 0,
    world: int = 1,
) -> torch.utils.data.DataLoader:
    """Shuffled batches of the training split (optionally only its first ``n_train`` points).

    When the data set offers extra data (``dataset.extra()`` returns a data set, from ``--extra-data``),
    every batch is half real, half extra; otherwise batches are plain shuffled real data. With
    ``world > 1`` (under torchrun, see :func:`robustft.distributed.make_distributed_loader`) the loader
    yields rank ``rank``'s slice of each of those global batches; ``generator`` must then be seeded
    identically on every rank.
    """
    from robustft import distributed

    train_set = dataset.train(augment=True)
    if config.n_train is not None:
        train_set = torch.utils.data.Subset(train_set, range(min(config.n_train, len(train_set))))
    extra_fn = getattr(dataset, "extra", None)
    extra = extra_fn() if callable(extra_fn) else None
    from robustft.models import on_for_cuda

    common: dict[str, Any] = {"num_workers": config.workers, "pin_memory": on_for_cuda(config.pin_memory, device)}
    if world > 1 and config.workers:
        common["worker_init_fn"] = functools.partial(distributed.seed_worker, rank)
    if extra is None:
        if world == 1:
            return torch.utils.data.DataLoader(train_set, batch_size=config.batch_size, shuffle=True, generator=generator, **common)
        sampler = distributed.ShardedBatchSampler(len(train_set), config.batch_size, rank=rank, world=world, generator=generator)
        # The loader draws its workers' base seed from the generator before the sampler's permutation, as
        # the single-process loader does; sharing the generator keeps the two sequences in step.
        return torch.utils.data.DataLoader(train_set, batch_sampler=sampler, generator=generator, **common)
    halves = HalfExtraBatches(len(train_set), len(extra), config.batch_size, generator)
    batches: torch.utils.data.Sampler[list[int]] = halves
    if world > 1:
        if config.batch_size < world:
            raise BadInputError(f"--batch-size {config.batch_size} is the global batch: it must be at least the {world} processes.")
        batches = distributed.RankSlices(halves, rank=rank, world=world, last_batch_size=halves.last_batch_size())
    return torch.utils.data.DataLoader(torch.utils.data.ConcatDataset([train_set, extra]), batch_sampler=batches, **common)
