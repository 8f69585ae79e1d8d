"""The timm zoo (Wightman, "PyTorch Image Models"): ``timm:<name>`` for any model timm can build.

* Weights: ``--checkpoint FILE`` loads a local file (safetensors, or torch with ``weights_only=True``);
  ``--download`` fetches timm's pretrained weights from the Hugging Face hub (timm's cache is reused);
  with neither, the model keeps its random initialisation and a warning says so.
* Normalisation: timm models expect inputs normalised with their ``pretrained_cfg`` mean and std; the
  zoo wraps the network so that the model robustft sees takes ``[0, 1]`` inputs.
* Size: the number of classes and input channels come from the data set; a model with a fixed input size
  (ViTs) is built for the data set's image size (timm resamples position embeddings of pretrained ones).

Hub weights are unpickled with ``weights_only=True`` whatever timm asks for: timm 1.0.9 loads a model that
names its own weights file (``hf_hub_filename``) with ``weights_only=False``, which would run whatever a
planted pickle holds; :func:`safe_weight_loading` makes both of timm's download loaders refuse such a file,
and the refusal is one sentence naming the culprit (``robustft.io``'s wording).

timm's tiny test models (``timm:test_vit``, ``timm:test_efficientnet``, ``timm:test_byobnet``) build
offline in a fraction of a second and serve the tests.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import pickle
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from robustft.plugin import BadInputError, DatasetPlugin, ModelInfo, ModelZoo, UnsafeFileError, UserError, hookimpl, pickle_culprit

log = logging.getLogger("robustft")

INSTALL_HINT = "pip install 'robustft[zoos]'"


def import_timm() -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # timm's own use of deprecated torch.jit APIs
            import timm
    except ImportError:
        raise UserError(f"The timm zoo needs the timm package: {INSTALL_HINT}.") from None
    return timm


@contextlib.contextmanager
def safe_weight_loading() -> Iterator[None]:
    """While timm builds a pretrained model, its two download loaders unpickle with ``weights_only=True``
    (timm's builder calls them by module-level name, so they are swapped there and put back after)."""
    from timm.models import _builder

    originals = {
        name: getattr(_builder, name) for name in ("load_state_dict_from_hf", "load_state_dict_from_url") if hasattr(_builder, name)
    }

    def forced(loader: Any) -> Any:
        @functools.wraps(loader)
        def load(*args: Any, **kwargs: Any) -> Any:
            kwargs["weights_only"] = True
            return loader(*args, **kwargs)

        return load

    for name, loader in originals.items():
        setattr(_builder, name, forced(loader))
    try:
        yield
    finally:
        for name, loader in originals.items():
            setattr(_builder, name, loader)


def _refused(name: str, exc: pickle.UnpicklingError) -> UnsafeFileError:
    return UnsafeFileError(
        f"The downloaded weights of timm:{name} were refused: they hold objects other than tensors "
        f"and plain data, which loading would execute{pickle_culprit(exc)}."
    )


class TimmZoo(ModelZoo):
    """Any timm model, normalisation folded in; pretrained weights only with ``--download``."""

    name = "timm"
    description = "any timm model: timm:NAME (--checkpoint FILE, or --download for hub weights)"

    def models(self) -> list[ModelInfo]:
        return []  # thousands; 'timm.list_models()' lists them

    def resolve(self, name: str) -> ModelInfo | None:
        # Plain names reach every zoo; only a name timm knows is ours (timm's import is paid only then).
        if not name or name.lower() != name or any(c in name for c in "/\\:"):
            return None
        timm = import_timm()
        return ModelInfo(name=name, dataset="imagenet", description="timm model") if timm.is_model(name) else None

    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        from robustft_plugins.zoos.file_zoo import WithNormalization, load_weights, read_state_dict

        timm = import_timm()
        if options.get("arch"):
            raise BadInputError("The timm zoo builds the model its name says and takes no --arch.")
        if options.get("model_dir"):
            raise BadInputError("The timm zoo keeps hub weights in timm's own cache and takes no --model-dir; use --checkpoint FILE.")
        checkpoint, download = options.get("checkpoint"), bool(options.get("download", False))
        if checkpoint and download:
            raise BadInputError("Give either --checkpoint or --download for a timm model, not both.")
        kwargs: dict[str, Any] = {}
        if dataset is not None:
            kwargs.update(num_classes=dataset.num_classes, in_chans=dataset.input_shape[0])
        cfg = timm.get_pretrained_cfg(info.name)
        if dataset is not None and cfg is not None and getattr(cfg, "fixed_input_size", False):
            size = tuple(dataset.input_shape[1:])
            if size != tuple(cfg.input_size[1:]):
                kwargs["img_size"] = size
        try:
            with safe_weight_loading():
                model = timm.create_model(info.name, pretrained=download, **kwargs)
        except pickle.UnpicklingError as exc:
            raise _refused(info.name, exc) from None
        except TypeError as exc:
            raise BadInputError(f"timm model {info.name!r} cannot be built for this data set ({exc}).") from None
        except Exception as exc:  # hub and network errors come in many classes
            if not download:
                raise
            raise UserError(
                f"Downloading timm:{info.name}'s weights failed ({type(exc).__name__}): save them to a file and pass --checkpoint FILE."
            ) from None
        if checkpoint:
            load_weights(model, read_state_dict(checkpoint), checkpoint, f"timm model {info.name!r}")
        elif not download:
            log.warning("timm:%s starts from random weights: pass --checkpoint FILE or --download for trained ones.", info.name)
        data_cfg = model.pretrained_cfg or {}
        mean, std = data_cfg.get("mean", (0.0,)), data_cfg.get("std", (1.0,))
        channels = dataset.input_shape[0] if dataset is not None else len(mean)
        if len(mean) != channels:  # grey-scale data on an RGB-normalised model: average the statistics
            mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
        return WithNormalization(model, mean, std).to(device).eval()

    def describe_architecture(self, info: ModelInfo, *, dataset: DatasetPlugin, **options: Any) -> dict[str, Any] | None:
        """timm's network and the normalisation :meth:`load` folds in, worked out the same way."""
        cfg = import_timm().get_pretrained_cfg(info.name)
        arch_options: dict[str, Any] = {}
        if cfg is not None and getattr(cfg, "fixed_input_size", False) and tuple(dataset.input_shape[1:]) != tuple(cfg.input_size[1:]):
            arch_options["img_size"] = list(dataset.input_shape[1:])
        mean = list(getattr(cfg, "mean", None) or (0.0,))
        std = list(getattr(cfg, "std", None) or (1.0,))
        channels = int(dataset.input_shape[0])
        if len(mean) != channels:  # as load(): grey-scale data on an RGB-normalised model
            mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
        return {
            "architecture": f"timm:{info.name}",
            "architecture_options": arch_options,
            "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        }


@hookimpl
def register_zoos(register) -> None:
    register(TimmZoo())
