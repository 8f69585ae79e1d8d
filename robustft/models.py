"""Resolving a model name to a zoo and loading it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustft.contracts import DatasetPlugin, ModelInfo, ModelZoo
from robustft.errors import UnknownNameError
from robustft.registry import Registries


def zoo_hint(registries: Registries) -> str:
    zoos = ", ".join(registries.zoos.names()) or "none"
    return f"Installed model zoos: {zoos}; pick a zoo explicitly with ZOO:NAME, and list models with 'robustft list models'."


def resolve_model(name: str, registries: Registries) -> tuple[ModelZoo, ModelInfo]:
    """Find ``name`` (``NAME`` in any zoo, or ``ZOO:NAME``) and return its zoo and :class:`ModelInfo`."""
    zoo_name, sep, model_name = name.partition(":")
    if sep and zoo_name and zoo_name in registries.zoos:
        zoo = registries.zoos.get(zoo_name)
        info = zoo.resolve(model_name)
        if info is None:
            known = zoo.suggestions(model_name)
            raise UnknownNameError(f"model of zoo {zoo.name!r}", model_name, known, zoo_hint(registries), known)
        return zoo, info
    if sep and zoo_name and len(zoo_name) > 1:  # a prefix that names no installed zoo
        raise UnknownNameError("model zoo", zoo_name, registries.zoos.all_names(), zoo_hint(registries))
    for entry in registries.zoos:
        info = entry.obj.resolve(name)
        if info is not None:
            return entry.obj, info
    known = {k: v for e in registries.zoos for k, v in e.obj.suggestions(name).items()}
    raise UnknownNameError("model", name, known, zoo_hint(registries), known)


def load_model(name: str, registries: Registries, device: torch.device, **options: Any) -> tuple[nn.Module, ModelInfo]:
    zoo, info = resolve_model(name, registries)
    model = zoo.load(info, device=device, **options)
    return model.to(device), info


def resolve_dataset(name: str, registries: Registries, **options: Any) -> DatasetPlugin:
    """The data set ``name`` (or ``NAME:PATH``, which passes ``path=PATH``) configured with the non-None ``options``."""
    base, sep, path = name.partition(":")
    if sep and base in registries.datasets:
        options["path"] = path
        name = base
    plugin = registries.datasets.get(name)
    return plugin.configure(**{k: v for k, v in options.items() if v is not None})


def on_for_cuda(setting: bool | None, device: torch.device) -> bool:
    """A GPU-path switch: ``setting`` when the user gave one, else on for CUDA and off elsewhere."""
    return device.type == "cuda" if setting is None else bool(setting)


def select_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; any other value is passed to torch and checked."""
    from robustft.errors import BadInputError, UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BadInputError(f"Device {name!r} is not a torch device such as cpu, cuda or cuda:1.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device {name!r} was asked for, but this machine has no CUDA GPU; use --device cpu.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"Device {name!r} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s).")
    return device
