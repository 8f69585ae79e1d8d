"""The RobustBench model zoo (Croce et al., "RobustBench: a standardized adversarial robustness
benchmark", NeurIPS 2021 Datasets and Benchmarks): ``robustbench:<name>``.

The models are read from robustbench's own registry (``robustbench.model_zoo.model_dicts``), without
network: CIFAR-10, CIFAR-100 and ImageNet, threat models l-inf and l2 (RobustBench has no l1 models
and no ImageNet l2 models). A name RobustBench uses in more than one threat model or data set
(``Engstrom2019Robustness`` is l-inf and l2 on CIFAR-10 and l-inf on ImageNet) is written
``<dataset>/<threat>/<name>``, the layout of the model folder; that form is accepted for every model.

Short aliases name the models the two papers fine-tune (E-AT Table 2 and Table 3, RAMP Table 3), each
with the learning rate the papers fine-tune it with (0.01 for these large networks; RAMP uses 2.5e-4 for
XCiT-S). Models the papers use that RobustBench does not host: the l1-robust PreAct ResNet-18 of Croce &
Hein (2021) and the l2-robust ImageNet ResNet-50 of Engstrom et al. (2019); load them with
``file:PATH --arch ...``.

Checkpoints live in ``--model-dir`` (default ``$ROBUSTFT_CACHE/robustbench``) as
``<model_dir>/<dataset>/<threat>/<name>.pt``, robustbench's own layout, so a folder robustbench already
filled works as it is. A file placed there loads without network, with ``weights_only=True``.
Downloads (robustbench's Google Drive links, or the Hugging Face hub for the timm-backed XCiT models)
happen only with ``--download``. A missing file offline, a failed download and an HTML page saved in
place of a checkpoint each end in one sentence naming the file expected and where to put it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustft.plugin import BadInputError, DatasetPlugin, ModelInfo, ModelZoo, Norm, UserError, cache_dir, hookimpl, load_torch

log = logging.getLogger("robustft")

#: Data sets and threat models robustft lists (RobustBench's corruption benchmarks are not lp threat models).
DATASETS = ("cifar10", "cifar100", "imagenet")
THREATS = {"Linf": Norm.LINF, "L2": Norm.L2}
LARGE_LR, SMALL_LR = 0.01, 0.05


#: Short aliases for the models E-AT (Tables 2, 3) and RAMP (Table 3) fine-tune:
#: alias -> (data set, threat, RobustBench name, fine-tuning learning rate).
PAPER_MODELS: dict[str, tuple[str, str, str, float]] = {
    "Gowal2020_WRN70": ("cifar10", "Linf", "Gowal2020Uncovering_70_16_extra", LARGE_LR),
    "Gowal2020_WRN28": ("cifar10", "Linf", "Gowal2020Uncovering_28_10_extra", LARGE_LR),
    "Gowal2020_WRN34": ("cifar10", "Linf", "Gowal2020Uncovering_34_20", LARGE_LR),
    "Carmon2019_WRN28": ("cifar10", "Linf", "Carmon2019Unlabeled", LARGE_LR),
    "Engstrom2019_RN50": ("cifar10", "Linf", "Engstrom2019Robustness", LARGE_LR),
    "Gowal2020_WRN70_L2": ("cifar10", "L2", "Gowal2020Uncovering_extra", LARGE_LR),
    "Augustin2020_RN50_L2": ("cifar10", "L2", "Augustin2020Adversarial", LARGE_LR),
    "Engstrom2019_RN50_L2": ("cifar10", "L2", "Engstrom2019Robustness", LARGE_LR),
    "Engstrom2019_RN50_ImageNet": ("imagenet", "Linf", "Engstrom2019Robustness", LARGE_LR),
    "Debenedetti2022_XCiT_S": ("imagenet", "Linf", "Debenedetti2022Light_XCiT-S12", 2.5e-4),
}

# Small networks (ResNet-18 family) are fine-tuned with 0.05 in the papers, large ones with 0.01; for
# models the papers do not use, the name is the only hint robustft has.
_SMALL_NET = re.compile(r"(?:^|[_-])(?:R18|RN18|PRN18|ResNet-?18|PreActResNet-?18)(?:$|[_-])", re.IGNORECASE)
_MAYBE_OURS = re.compile(r"\d{4}|standard|/", re.IGNORECASE)
_DATASET_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}


def qualified(dataset: str, threat: str, name: str) -> str:
    """``<dataset>/<threat>/<name>``: the name that is unique across RobustBench, and the file's place."""
    return f"{dataset}/{threat}/{name}"


class RobustBenchZoo(ModelZoo):
    """Models from RobustBench's registry; checkpoints from ``--model-dir`` or, with ``--download``, the web."""

    name = "robustbench"
    description = "RobustBench's CIFAR-10/100 and ImageNet l-inf/l2 models (pip install 'robustft[zoos]')"
    aliases = ("rb",)

    @cached_property
    def _registry(self) -> Mapping[tuple[str, str], Mapping[str, Mapping[str, Any]]]:
        """(data set, threat) -> robustbench's ``{name: {"model": builder, "gdrive_id": ...}}``."""
        from robustft_plugins.zoos.robustbench_compat import import_robustbench

        import_robustbench()
        from robustbench.model_zoo import model_dicts
        from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

        return {
            (dataset, threat): model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]
            for dataset in DATASETS
            for threat in THREATS
            if ThreatModel(threat) in model_dicts.get(BenchmarkDataset(dataset), {})
        }

    @cached_property
    def _infos(self) -> list[ModelInfo]:
        counts: dict[str, int] = {}
        for entries in self._registry.values():
            for model_name in entries:
                counts[model_name] = counts.get(model_name, 0) + 1
        short = {(d, t, n): (alias, lr) for alias, (d, t, n, lr) in PAPER_MODELS.items()}
        infos = []
        for (dataset, threat), entries in self._registry.items():
            for model_name in entries:
                full = qualified(dataset, threat, model_name)
                alias, lr = short.get((dataset, threat, model_name), (None, None))
                if lr is None:
                    lr = SMALL_LR if _SMALL_NET.search(model_name) else LARGE_LR
                unique = counts[model_name] == 1
                aliases = ((alias,) if alias else ()) + ((full,) if unique else ())
                infos.append(
                    ModelInfo(
                        name=model_name if unique else full,
                        dataset=dataset,
                        threat=THREATS[threat],
                        aliases=aliases,
                        description=f"RobustBench {dataset} {threat}" + (" (fine-tuned in the E-AT/RAMP papers)" if alias else ""),
                        finetune_lr=lr,
                    )
                )
        return infos

    def models(self) -> list[ModelInfo]:
        try:
            return list(self._infos)
        except UserError as exc:  # robustbench not installed: the other zoos keep working
            if not self._warned:
                log.warning("%s", exc.message)
                self._warned = True
            return []

    _warned = False

    def suggestions(self, name: str) -> dict[str, str]:
        # Only a name that could be ours pays for robustbench's import; otherwise suggest the paper aliases.
        if not _MAYBE_OURS.search(name):
            return {alias: alias for alias in PAPER_MODELS}
        return super().suggestions(name)

    def resolve(self, name: str) -> ModelInfo | None:
        # Every RobustBench name and alias carries a year (or is "Standard", or is qualified with "/"):
        # other names are answered without importing robustbench, which takes seconds.
        if not _MAYBE_OURS.search(name):
            return None
        if any(name.lower() == alias.lower() for alias in PAPER_MODELS):
            self._infos  # a paper alias without robustbench installed: say how to install it  # noqa: B018
        return super().resolve(name)

    # ------------------------------------------------------------------------------------------ load

    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        for refused in ("checkpoint", "arch"):
            if options.get(refused):
                raise BadInputError(
                    f"The robustbench zoo takes no --{refused}; put the checkpoint in --model-dir as <dataset>/<threat>/<name>.pt."
                )
        unknown = sorted(set(options) - {"model_dir", "download", "checkpoint", "arch"})
        if unknown:
            raise BadInputError(f"The robustbench zoo does not take the option {unknown[0]!r}.")
        if dataset is not None and dataset.num_classes != _DATASET_CLASSES[info.dataset]:
            raise BadInputError(
                f"RobustBench model {info.name!r} has {_DATASET_CLASSES[info.dataset]} classes but data set "
                f"{dataset.name!r} has {dataset.num_classes}."
            )
        model_dir = Path(options.get("model_dir") or cache_dir() / "robustbench").expanduser()
        download = bool(options.get("download", False))
        threat = "Linf" if info.threat is Norm.LINF else "L2"
        model_name = info.name.rsplit("/", 1)[-1]
        entry = self._registry[(info.dataset, threat)][model_name]
        path = model_dir / info.dataset / threat / f"{model_name}.pt"
        timm_name = f"{model_name.lower().replace('-', '_')}_{info.dataset}_{threat.lower()}"
        import timm

        if timm.is_model(timm_name):
            model = self._load_timm(timm_name, info, path, download)
        elif isinstance(entry.get("gdrive_id"), list):
            raise BadInputError(
                f"RobustBench model {model_name!r} is an ensemble of several checkpoints, which robustft does not load; "
                "pick a single-network model."
            )
        elif info.dataset == "imagenet" and model_name.startswith("Standard"):
            raise BadInputError(
                f"RobustBench model {model_name!r} is torchvision's non-robust ResNet-50: use torchvision:resnet50.IMAGENET1K_V1 instead."
            )
        else:
            model = self._load_checkpoint(entry, info, model_name, path, download)
        return model.to(device).eval()

    def _load_checkpoint(self, entry: Mapping[str, Any], info: ModelInfo, model_name: str, path: Path, download: bool) -> nn.Module:
        if not path.is_file():
            if not download:
                raise UserError(
                    f"RobustBench model {model_name!r} needs its checkpoint {str(path)!r}, which is missing and downloads are off: "
                    f"rerun with --download, or download https://drive.google.com/uc?id={entry['gdrive_id']} and save it there "
                    "(or point --model-dir at a folder holding <dataset>/<threat>/<name>.pt)."
                )
            self._download(entry["gdrive_id"], model_name, path)
        state = self._read(path, model_name)
        return self._fill(entry["model"](), state, info, model_name, path)

    @staticmethod
    def _download(gdrive_id: str, model_name: str, path: Path) -> None:
        from robustbench.utils import download_gdrive_new

        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".part")
        log.info("Downloading RobustBench model %s to %s.", model_name, path)
        try:
            download_gdrive_new(gdrive_id, partial)
        except Exception as exc:  # gdown raises its own, requests' and OS errors alike
            partial.unlink(missing_ok=True)
            raise UserError(
                f"Downloading RobustBench model {model_name!r} failed ({type(exc).__name__}): download "
                f"https://drive.google.com/uc?id={gdrive_id} yourself and save it as {str(path)!r}."
            ) from None
        if not partial.is_file():
            raise UserError(
                f"Downloading RobustBench model {model_name!r} produced no file: download "
                f"https://drive.google.com/uc?id={gdrive_id} yourself and save it as {str(path)!r}."
            )
        partial.replace(path)

    @staticmethod
    def _read(path: Path, model_name: str) -> Any:
        with path.open("rb") as handle:
            head = handle.read(64).lstrip().lower()
        if head.startswith((b"<!doctype html", b"<html")):
            raise UserError(
                f"The file {str(path)!r} is an HTML page (a failed download), not RobustBench model {model_name!r}: "
                "delete it and rerun with --download, or save the real checkpoint there."
            )
        return load_torch(path, f"RobustBench checkpoint of {model_name}")

    @staticmethod
    def _fill(model: nn.Module, checkpoint: Any, info: ModelInfo, model_name: str, path: Path) -> nn.Module:
        """Load ``checkpoint`` into robustbench's architecture with robustbench's own key fixes."""
        from robustbench.model_zoo.enums import BenchmarkDataset
        from robustbench.utils import _safe_load_state_dict, add_substr_to_state_dict, rm_substr_from_state_dict

        if not isinstance(checkpoint, dict):
            raise UserError(f"The file {str(path)!r} holds no state dict for RobustBench model {model_name!r}.")
        if "last" in checkpoint and ("Kireev2021Effectiveness" in model_name or model_name == "Andriushchenko2020Understanding"):
            checkpoint = checkpoint["last"]
        state = checkpoint.get("state_dict", checkpoint)
        state = rm_substr_from_state_dict(rm_substr_from_state_dict(state, "module."), "model.")
        if info.dataset == "imagenet" and "Swin" in model_name and hasattr(model, "model"):
            from timm.models.swin_transformer import checkpoint_filter_fn

            state = checkpoint_filter_fn(state, model.model)  # older checkpoints, newer timm key layout
        if info.dataset == "imagenet" and not _imagenet_keeps_keys(model_name):
            state = add_substr_to_state_dict(state, "model.")  # robustbench wraps these in a normalising layer
        try:
            return _safe_load_state_dict(model, model_name, state, BenchmarkDataset(info.dataset))
        except (RuntimeError, KeyError) as exc:
            raise UserError(
                f"The checkpoint {str(path)!r} does not fit RobustBench model {model_name!r} "
                f"({str(exc).splitlines()[0][:160]}): delete it and download it again."
            ) from None

    @staticmethod
    def _load_timm(timm_name: str, info: ModelInfo, path: Path, download: bool) -> nn.Module:
        """timm-backed RobustBench models (XCiT, ...): a placed file, or timm's hub download with --download."""
        import timm

        local = next((p for p in (path, path.with_suffix(".safetensors")) if p.is_file()), None)
        if local is None and not download:
            raise UserError(
                f"RobustBench model {info.name!r} comes from the Hugging Face hub through timm ({timm_name}) and no copy is at "
                f"{str(path)!r}: rerun with --download on a connected machine, or save its weights there."
            )
        if local is None:
            try:
                return timm.create_model(timm_name, pretrained=True, num_classes=_DATASET_CLASSES[info.dataset])
            except Exception as exc:  # hub errors come in many classes
                raise UserError(
                    f"Downloading {timm_name} from the Hugging Face hub failed ({type(exc).__name__}): "
                    f"save its weights as {str(path)!r} and rerun without --download."
                ) from None
        from robustft_plugins.zoos.file_zoo import load_weights, read_state_dict

        model = timm.create_model(timm_name, pretrained=False, num_classes=_DATASET_CLASSES[info.dataset])
        load_weights(model, read_state_dict(local), local, f"RobustBench model {info.name!r}")
        return model


def _imagenet_keeps_keys(model_name: str) -> bool:
    """ImageNet models whose checkpoints already carry robustbench's key layout (robustbench's own list)."""
    return model_name.startswith(("Singh2023Revisiting_", "Xu2024MIMIR_")) or model_name in {"Peng2023Robust", "Chen2024Data_WRN_50_2"}


@hookimpl
def register_zoos(register) -> None:
    register(RobustBenchZoo())
