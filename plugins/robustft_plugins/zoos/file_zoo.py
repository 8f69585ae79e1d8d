"""The file zoo: ``file:<path> --arch <architecture>`` loads your own checkpoint into a built-in network.

``--arch`` names one of :data:`robustft_plugins.zoos.architectures.ARCHITECTURES` (``preact-resnet18``,
``preact-resnet18-softplus`` — the network of the E-AT authors' l1/l2/l-inf checkpoints — ``wrn-28-10``,
``digits-cnn``); the number of classes and input channels come from the data set (``--dataset``,
default CIFAR-10).

Accepted files: ``.safetensors`` (read with :mod:`safetensors`), and ``.pt``/``.pth``/``.bin`` and any
other name, read with ``torch.load(weights_only=True)`` (a pickle that would run code is refused). The
content may be a bare state dict or a dict holding one under ``"model"``, ``"state_dict"`` or
``"model_state_dict"`` (robustft's own run weights are ``{"model": ...}``); ``module.`` prefixes left by
``DataParallel``/DDP are stripped. The helpers :func:`read_state_dict` and :func:`load_weights` serve the
timm and torchvision zoos' ``--checkpoint`` too.

``file:<folder>`` loads a folder written by ``robustft export`` (docs/export.md): ``model.safetensors`` and a
``config.json`` that names the architecture (one of the built-in ones, ``timm:NAME`` or
``torchvision:ARCH``), its options, the number of classes, the input size, the normalisation and the data
set, so it needs no ``--arch`` and evaluates on the exported data set unless ``--dataset`` says otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustft.plugin import (
    EXPORT_CONFIG,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    EXPORT_WEIGHTS,
    BadInputError,
    DatasetPlugin,
    ModelInfo,
    ModelZoo,
    UserError,
    hookimpl,
    load_torch,
)

#: Keys under which checkpoints of common training code keep the state dict, in the order tried.
STATE_KEYS = ("model", "state_dict", "model_state_dict", "net")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path`` (safetensors or torch), unwrapped and without ``module.`` prefixes."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"The checkpoint {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            content: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"The checkpoint {str(path)!r} is not a readable safetensors file ({str(exc)[:160]}).") from None
    else:
        content = load_torch(path, "checkpoint")
    for _ in range(2):  # {"model": {"state_dict": ...}} occurs too
        if isinstance(content, Mapping) and not _is_state_dict(content):
            inner = next((content[k] for k in STATE_KEYS if isinstance(content.get(k), Mapping)), None)
            if inner is None:
                break
            content = inner
    if not isinstance(content, Mapping) or not _is_state_dict(content):
        raise UserError(
            f"The checkpoint {str(path)!r} holds no state dict (expected tensors, or a dict with one of the keys {', '.join(STATE_KEYS)})."
        )
    return {_strip(key): value for key, value in content.items() if isinstance(value, Tensor)}


def _is_state_dict(content: Mapping[Any, Any]) -> bool:
    return bool(content) and all(isinstance(k, str) for k in content) and any(isinstance(v, Tensor) for v in content.values())


def _strip(key: str) -> str:
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def load_weights(model: nn.Module, state: Mapping[str, Tensor], path: str | Path, what: str) -> None:
    """``model.load_state_dict(state)``, strictly; a mismatch is one sentence naming keys or shapes."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} shape mismatch(es), e.g. {k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
            )
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise UserError(f"The checkpoint {str(path)!r} does not fit {what}: {'; '.join(parts)}.")
    model.load_state_dict(state, strict=True)


class WithNormalization(nn.Module):
    """``model((x - mean) / std)``: a backbone trained on normalised inputs, taking ``[0, 1]`` inputs.

    The statistics are non-persistent buffers, so the state dict is the backbone's under ``model.``.
    """

    def __init__(self, model: nn.Module, mean: Any, std: Any) -> None:
        super().__init__()
        self.model = model
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if (std_t <= 0).any():
            raise BadInputError("Normalisation std must be positive.")
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)


class FileZoo(ModelZoo):
    """``file:<path>``: a local checkpoint for one of robustft's built-in architectures."""

    name = "file"
    description = "your own checkpoint: file:PATH --arch ARCH (.pt/.pth weights-only, or .safetensors)"

    def models(self) -> list[ModelInfo]:
        return []  # any path

    def resolve(self, name: str) -> ModelInfo | None:
        # Any existing file, or a name that looks like a checkpoint (file:missing.pt is said to be missing);
        # other names belong to other zoos.
        path = Path(name).expanduser()
        if name and path.is_dir():  # an exported folder (or a folder that is not one: load() says so)
            config = read_export_config(path) if (path / EXPORT_CONFIG).is_file() else {}
            return ModelInfo(name=name, dataset=str(config.get("dataset") or "cifar10"), description="exported robustft model")
        if not name or not (path.is_file() or path.suffix.lower() in CHECKPOINT_SUFFIXES):
            return None
        if not path.exists():  # said here, before the data set and the architecture are looked at
            raise UserError(f"The checkpoint {str(path)!r} does not exist.")
        return ModelInfo(name=name, dataset="cifar10", description="local checkpoint")

    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        from robustft_plugins.zoos.architectures import ARCHITECTURES, build_architecture

        if Path(info.name).expanduser().is_dir():
            return load_exported(Path(info.name).expanduser(), device=device, dataset=dataset, **options)
        arch = options.get("arch")
        if not arch:
            raise BadInputError(f"file:{info.name} needs --arch, one of {', '.join(ARCHITECTURES)}.")
        if options.get("checkpoint"):
            raise BadInputError("The file zoo reads the checkpoint named after file: and takes no --checkpoint.")
        if dataset is None:
            raise BadInputError(f"file:{info.name} needs a data set (--dataset) to size the network.")
        state = read_state_dict(info.name)
        model = build_architecture(arch, num_classes=dataset.num_classes, in_channels=dataset.input_shape[0])
        load_weights(model, state, info.name, f"architecture {arch!r} with {dataset.num_classes} classes")
        return model.to(device).eval()

    def describe_architecture(self, info: ModelInfo, *, dataset: DatasetPlugin, **options: Any) -> dict[str, Any] | None:
        """``--arch`` (a built-in architecture), or for an exported folder what its config.json says."""
        folder = Path(info.name).expanduser()
        if folder.is_dir() and (folder / EXPORT_CONFIG).is_file():
            config = read_export_config(folder)
            return {key: config.get(key) for key in ("architecture", "architecture_options", "normalization")}
        arch = str(options.get("arch") or "").lower()
        return {"architecture": arch, "architecture_options": {}, "normalization": None} if arch else None


# ------------------------------------------------------------------------------------ exported folders


def read_export_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of an exported folder, checked to be one robustft can load."""
    path = folder / EXPORT_CONFIG
    if not path.is_file():
        raise UserError(
            f"Folder {str(folder)!r} is not an exported robustft model (it has no {EXPORT_CONFIG}); write one with 'robustft export RUN --out DIR'."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(path)!r} is damaged (not valid JSON).") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise UserError(f'{str(path)!r} is not the config of a robustft export (its "format" is not {EXPORT_FORMAT!r}).')
    version = config.get("format_version")
    if not isinstance(version, int) or version > EXPORT_FORMAT_VERSION:
        raise UserError(
            f"{str(path)!r} has export format version {version!r}, newer than this robustft reads ({EXPORT_FORMAT_VERSION}): upgrade robustft."
        )
    missing = [key for key in ("architecture", "num_classes", "input_size") if key not in config]
    if missing:
        raise UserError(f"{str(path)!r} lacks the field {missing[0]!r}.")
    return config


def build_exported(config: Mapping[str, Any]) -> nn.Module:
    """The untrained network ``config`` (an export's config.json) describes, taking ``[0, 1]`` inputs.

    Built-in architectures get the normalisation folded in by their builder (non-persistent buffers);
    ``timm:NAME`` and ``torchvision:ARCH`` networks are wrapped in :class:`WithNormalization`, as their
    zoos wrap them, so the state dict's keys are the same as the run's.
    """
    from robustft_plugins.zoos.architectures import build_architecture

    arch = str(config["architecture"])
    options = dict(config.get("architecture_options") or {})
    num_classes, channels = int(config["num_classes"]), int(config["input_size"][0])
    norm = config.get("normalization") or None
    zoo, sep, name = arch.partition(":")
    if not sep:
        if norm:
            options.update(mean=norm["mean"], std=norm["std"])
        return build_architecture(arch, num_classes=num_classes, in_channels=channels, **options)
    if zoo == "timm":
        from robustft_plugins.zoos.timm_zoo import import_timm

        network = import_timm().create_model(name, pretrained=False, num_classes=num_classes, in_chans=channels, **options)
    elif zoo == "torchvision":
        import torchvision.models as tvm

        network = tvm.get_model(name, weights=None, num_classes=num_classes, **options)
    else:
        raise UserError(f"The exported architecture {arch!r} is not one robustft can build (built-in, timm:NAME or torchvision:ARCH).")
    return WithNormalization(network, norm["mean"], norm["std"]) if norm else network


def load_exported(folder: Path, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
    """An exported folder's model, built from its config.json, with its ``model.safetensors`` loaded strictly."""
    given = sorted(k for k in ("arch", "checkpoint", "model_dir") if options.get(k))
    if given:
        raise BadInputError(
            f"file:{folder} is an exported folder whose config.json names the architecture; it takes no --{given[0].replace('_', '-')}."
        )
    config = read_export_config(folder)
    if dataset is not None:
        wanted = (int(config["num_classes"]), int(config["input_size"][0]))
        if (dataset.num_classes, int(dataset.input_shape[0])) != wanted:
            raise BadInputError(
                f"file:{folder} classifies {wanted[0]} classes of {wanted[1]}-channel images, but data set {dataset.name!r} has "
                f"{dataset.num_classes} classes of {dataset.input_shape[0]}-channel images."
            )
    model = build_exported(config)
    weights = folder / EXPORT_WEIGHTS
    load_weights(model, read_state_dict(weights), weights, f"architecture {config['architecture']!r} of {str(folder)!r}")
    return model.to(device).eval()


@hookimpl
def register_zoos(register) -> None:
    register(FileZoo())
