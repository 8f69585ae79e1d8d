"""Data set plugins on small files the tests make: CIFAR-10/100, MNIST, image folders, ImageNet, extra data."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from robustft.data import HalfExtraBatches, load_extra_data, make_train_loader, safe_unpickle
from robustft.errors import BadInputError, UserError
from robustft.norms import Norm
from robustft_plugins.datasets.cifar import Cifar10, Cifar100
from robustft_plugins.datasets.imagefolder import ImageFolderData
from robustft_plugins.datasets.imagenet import ImageNet
from robustft_plugins.datasets.mnist import Mnist

pytestmark = pytest.mark.usefixtures("one_thread")


def write_cifar(root: Path, *, classes: int = 10, per_batch: int = 4, n_test: int = 6, seed: int = 0) -> Path:
    """A CIFAR folder in the official python format (tiny: torchvision's MD5 check would refuse it; robustft
    does not check sums at load time, only torchvision's download does)."""
    rng = np.random.default_rng(seed)
    hundred = classes == 100
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    key = "fine_labels" if hundred else "labels"
    names = ["train"] if hundred else [f"data_batch_{i}" for i in range(1, 6)]
    for name in names + ["test"]:
        n = n_test if name == "test" else per_batch
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), key: rng.integers(0, classes, n).tolist()}
        target = folder / ("test" if hundred else "test_batch") if name == "test" else folder / name
        target.write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_cifar10_reads_torchvision_layout(tmp_path: Path) -> None:
    data = Cifar10().configure(data_dir=str(write_cifar(tmp_path)))
    train, test = data.train(augment=False), data.test()
    assert (len(train), len(test)) == (20, 6)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    raw = pickle.loads((tmp_path / "cifar-10-batches-py" / "data_batch_1").read_bytes())
    # row-major 3x32x32 planes, the official layout
    assert torch.equal((x * 255).round().to(torch.uint8).flatten(), torch.from_numpy(raw["data"][0]))
    assert int(y) == raw["labels"][0]
    assert data.default_eps == {Norm.LINF: Fraction(8, 255), Norm.L2: Fraction(1, 2), Norm.L1: Fraction(12)}


def test_cifar_augmentation_is_crop_and_flip(tmp_path: Path) -> None:
    data = Cifar10().configure(data_dir=str(write_cifar(tmp_path)))
    plain, augmented = data.train(augment=False), data.train(augment=True)
    torch.manual_seed(0)
    x = plain[0][0]
    outs = [augmented[0][0] for _ in range(20)]
    assert all(o.shape == x.shape for o in outs) and any(not torch.equal(o, x) for o in outs)
    # every augmented image is a (possibly flipped) shift of the original with zero padding of at most 4
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for o in outs:
        found = any(torch.equal(o, img[:, i : i + 32, j : j + 32]) for img in (padded, padded.flip(-1)) for i in range(9) for j in range(9))
        assert found


def test_cifar100_uses_fine_labels(tmp_path: Path) -> None:
    data = Cifar100().configure(data_dir=str(write_cifar(tmp_path, classes=100)))
    assert data.num_classes == 100 and len(data.train()) == 4 and len(data.test()) == 6


def test_missing_cifar_says_where_the_files_go(tmp_path: Path) -> None:
    data = Cifar10().configure(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(UserError) as info:
        data.train()
    message = info.value.message
    assert "nowhere" in message and "cifar-10-batches-py" in message and "--download" in message
    assert message.count(". ") == 0 and "\n" not in message


def test_cifar_batches_cannot_run_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    folder = write_cifar(tmp_path) / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(pickle.dumps({"data": Evil(), "labels": [0]}))
    with pytest.raises(UserError, match="holds more than arrays"):
        Cifar10().configure(data_dir=str(tmp_path)).test()
    assert not marker.exists()
    with pytest.raises(UserError, match="does not exist"):
        safe_unpickle(tmp_path / "missing.pickle", "file")


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of the MNIST files: magic (0, 0, type 0x08 = uint8, ndim), big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_files(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
    data = Mnist().configure(data_dir=str(tmp_path))
    x, y = data.train()[2]
    assert len(data.train()) == 5 and len(data.test()) == 3 and x.shape == (1, 28, 28) and 0 <= int(y) < 10
    assert data.default_eps[Norm.LINF] == Fraction(3, 10) and data.default_eps[Norm.L1] == 10
    with pytest.raises(UserError, match="--download"):
        Mnist().configure(data_dir=str(tmp_path / "empty")).test()


def write_folder(root: Path, splits: dict[str, dict[str, int]], size: tuple[int, int] = (40, 36)) -> Path:
    """Class folders of PNG and JPEG images written by PIL."""
    rng = np.random.default_rng(2)
    for split, classes in splits.items():
        for cls, count in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                suffix = ".png" if i % 2 == 0 else ".jpg"
                Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    return root


def test_imagefolder_sizes_classes_and_radii(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "pets", {"train": {"cat": 3, "dog": 2, "eel": 2}, "test": {"dog": 2, "eel": 1}})
    data = ImageFolderData().configure(path=str(root), image_size=24)
    assert data.num_classes == 3 and data.input_shape == (3, 24, 24)
    assert data.default_eps[Norm.LINF] == Fraction(8, 255)
    test = data.test()
    labels = sorted(int(test[i][1]) for i in range(len(test)))
    assert labels == [1, 1, 2]  # dog and eel keep the training folder's indices
    x, _ = data.train()[0]
    assert x.shape == (3, 24, 24) and x.dtype == torch.float32 and 0 <= x.min() <= x.max() <= 1
    large = ImageFolderData().configure(path=str(root), image_size=128)
    assert large.default_eps == {Norm.LINF: Fraction(4, 255), Norm.L2: Fraction(2), Norm.L1: Fraction(255)}


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="imagefolder:PATH"):
        ImageFolderData().configure()
    with pytest.raises(UserError, match="does not exist"):
        ImageFolderData().configure(path=str(tmp_path / "missing"))
    with pytest.raises(UserError, match="neither a train/ subfolder nor class subfolders"):
        ImageFolderData().configure(path=str(tmp_path))
    train_only = write_folder(tmp_path / "train-only", {"train": {"a": 1, "b": 1}})
    with pytest.raises(UserError, match="has no test/ or val/ subfolder"):
        ImageFolderData().configure(path=str(train_only)).test()
    root = write_folder(tmp_path / "odd", {"train": {"a": 1, "b": 1}, "test": {"c": 1}})
    with pytest.raises(UserError, match="class 'c'"):
        ImageFolderData().configure(path=str(root)).test()


def test_imagefolder_test_split_alone_evaluates_the_same_points(tmp_path: Path) -> None:
    """A test folder given alone (as ``imagefolder:<root>/test`` or a root holding only ``test/``) yields the
    same points and labels, in the same order, as the full layout; only fine-tuning refuses it."""
    root = write_folder(tmp_path / "full", {"train": {"a": 2, "b": 2, "c": 1}, "test": {"a": 3, "b": 2, "c": 3}})

    def points(test: torch.utils.data.Subset, split: Path) -> list[tuple[str, int]]:
        return [(str(Path(test.dataset.samples[i][0]).relative_to(split)), int(test[n][1])) for n, i in enumerate(test.indices)]

    full = points(ImageFolderData().configure(path=str(root)).test(), root / "test")
    assert len({label for _, label in full}) == 3
    only = write_folder(tmp_path / "only", {"test": {"a": 3, "b": 2, "c": 3}})
    for path, split in ((root / "test", root / "test"), (only, only / "test")):
        alone = ImageFolderData().configure(path=str(path))
        assert alone.num_classes == 3
        assert points(alone.test(), split) == full
        with pytest.raises(UserError, match="holds test images only; fine-tuning needs"):
            alone.train()


def test_lighting_moves_every_pixel_by_one_colour_and_stays_in_the_box() -> None:
    from robustft_plugins.datasets.imagenet import PCA_EIGVEC, Lighting

    torch.manual_seed(0)
    image = torch.full((3, 5, 5), 0.5)
    shifted = Lighting(0.05)(image)
    shift = shifted - image
    assert torch.allclose(shift, shift[:, :1, :1].expand_as(shift))  # one RGB shift for the whole image
    assert float(shift.abs().max()) > 0
    # mostly along the first component (eigenvalue 0.2175 against 0.0188 and 0.0045): a change of brightness
    first = torch.tensor(PCA_EIGVEC)[:, 0]
    assert float(torch.dot(shift[:, 0, 0], first).abs()) > 0.9 * float(shift[:, 0, 0].norm())
    saturated = Lighting(10.0)(torch.rand(3, 4, 4))
    assert 0 <= float(saturated.min()) and float(saturated.max()) <= 1


def test_imagenet_layout_and_preprocessing(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "inet", {"train": {"n01": 1, "n02": 1}, "val": {"n01": 1, "n02": 1}}, size=(300, 260))
    data = ImageNet().configure(data_dir=str(root))
    assert data.num_classes == 2 and data.input_shape == (3, 224, 224)
    assert data.default_eps == {Norm.LINF: Fraction(4, 255), Norm.L2: Fraction(2), Norm.L1: Fraction(255)}
    x, _ = data.test()[0]
    assert x.shape == (3, 224, 224)
    # evaluation is resize-256 then centre-crop-224, deterministic
    assert torch.equal(x, data.test()[0][0])
    assert data.train()[0][0].shape == (3, 224, 224)
    names = [type(t).__name__ for t in data.train_transform().transforms]
    assert names[:3] == ["RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter"] and names[-1] == "Lighting"
    missing = ImageNet().configure(data_dir=str(tmp_path / "none"))
    assert missing.num_classes == 1000  # sized without data (for 'robustft geometry')
    with pytest.raises(UserError, match="train/ and val/"):
        missing.test()


def extra_file(tmp_path: Path, n: int = 10, value: int = 255) -> Path:
    path = tmp_path / "extra.npz"
    np.savez(path, images=np.full((n, 32, 32, 3), value, dtype=np.uint8), labels=np.arange(n) % 10)
    return path


def test_extra_data_formats_and_checks(tmp_path: Path) -> None:
    extra = load_extra_data(extra_file(tmp_path), (3, 32, 32), 10)
    assert len(extra) == 10 and extra[3][0].shape == (3, 32, 32) and int(extra[3][1]) == 3
    carmon = tmp_path / "ti_500K_pseudo_labeled.pickle"
    carmon.write_bytes(pickle.dumps({"data": np.zeros((4, 32, 32, 3), np.uint8), "extrapolated_targets": np.array([1, 2, 3, 4])}))
    assert [int(load_extra_data(carmon, (3, 32, 32), 10)[i][1]) for i in range(4)] == [1, 2, 3, 4]
    with pytest.raises(UserError, match=r"\(3, 32, 32\)"):
        load_extra_data(extra_file(tmp_path), (1, 28, 28), 10)
    np.savez(tmp_path / "bad.npz", images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([0, 12]))
    with pytest.raises(UserError, match="0..9"):
        load_extra_data(tmp_path / "bad.npz", (3, 32, 32), 10)
    np.savez(tmp_path / "float.npz", images=np.zeros((2, 32, 32, 3), np.uint8), labels=np.array([0.0, 2.7]))
    with pytest.raises(UserError, match="must be integer class indices, not float64"):  # 2.7 is never cast to 2
        load_extra_data(tmp_path / "float.npz", (3, 32, 32), 10)


def config(**kw):
    return SimpleNamespace(**{"batch_size": 8, "n_train": None, "workers": 0, "pin_memory": None, **kw})


def test_the_loader_pins_memory_when_asked_and_on_cuda_by_default(tmp_path: Path) -> None:
    data = Cifar10().configure(data_dir=str(write_cifar(tmp_path, per_batch=5)))
    build = lambda cfg, device: make_train_loader(data, cfg, torch.Generator().manual_seed(0), torch.device(device))  # noqa: E731
    assert build(config(pin_memory=True), "cpu").pin_memory
    assert not build(config(), "cpu").pin_memory
    assert build(config(), "cuda").pin_memory  # built, not iterated: no GPU needed
    assert not build(config(pin_memory=False), "cuda").pin_memory


def test_batches_are_half_real_half_extra(tmp_path: Path) -> None:
    # real images are made black, extra ones are white (still partly white after crop-with-padding)
    root = write_cifar(tmp_path, per_batch=5)  # 25 real training images
    data = Cifar10().configure(data_dir=str(root), extra_data=str(extra_file(tmp_path, n=7)))
    data.train(augment=False).images.zero_()
    loader = make_train_loader(data, config(), torch.Generator().manual_seed(0), torch.device("cpu"))
    batches = list(loader)
    assert len(batches) == len(loader) == 7  # ceil(25 / 4): an epoch uses the real set once
    seen_real = 0
    for x, _ in batches:
        white = (x.flatten(1).max(1).values == 1).sum().item()
        real = x.shape[0] - white
        assert white == real  # half and half, the last short batch too
        seen_real += real
    assert seen_real == 25
    assert [b[0].shape[0] for b in batches] == [8] * 6 + [2]


def test_without_extra_data_loader_is_unchanged(tmp_path: Path) -> None:
    data = Cifar10().configure(data_dir=str(write_cifar(tmp_path)))
    assert data.extra() is None
    loader = make_train_loader(data, config(n_train=12), torch.Generator().manual_seed(3), torch.device("cpu"))
    plain = torch.utils.data.DataLoader(
        torch.utils.data.Subset(data.train(), range(12)), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    torch.manual_seed(0)
    first = [y.tolist() for _, y in loader]
    torch.manual_seed(0)
    assert first == [y.tolist() for _, y in plain]


def test_extra_sampler_draws_every_extra_point_before_repeating() -> None:
    sampler = HalfExtraBatches(n_real=12, n_extra=9, batch_size=6, generator=torch.Generator().manual_seed(0))
    batches = list(sampler)
    extra = [i - 12 for b in batches for i in b if i >= 12]
    assert len(batches) == 4 and len(extra) == 12
    assert sorted(extra[:9]) == list(range(9))  # a permutation before any repeat
