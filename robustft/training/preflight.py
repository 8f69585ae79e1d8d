"""Pre-flight: every name, radius and option, the device, the output folder (writable, with space), the data and
the model are checked, cheapest first, before any training compute and before the run folder is created
(docs/reliability.md). What it resolves is the run's :class:`Plan`."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustft import distributed, per_norm
from robustft.config import DEFAULT_LR, FinetuneConfig, with_recipe
from robustft.contracts import DatasetPlugin, ModelInfo, ModelZoo, Scheme
from robustft.errors import BadInputError, UserError
from robustft.geometry import check_radii
from robustft.models import resolve_dataset, resolve_model, select_device
from robustft.norms import Norm
from robustft.registry import Registries, checked
from robustft.rundir import check_free_space, check_writable, plan_run_dir
from robustft.training.context import TrainingAttack, training_attacks
from robustft.training.precision import Performance

log = logging.getLogger("robustft")


@dataclass
class Plan:
    """Everything pre-flight resolved and checked, before the run folder exists."""

    config: FinetuneConfig
    scheme_cls: type[Scheme]
    scheme: Scheme
    attacks: dict[Norm, TrainingAttack]
    zoo: ModelZoo
    info: ModelInfo
    dataset: DatasetPlugin
    norms: tuple[Norm, ...]
    eps: dict[Norm, Fraction]
    device: torch.device
    run_dir: Path
    model: nn.Module
    loader: torch.utils.data.DataLoader
    data_rng: torch.Generator
    performance: Performance


def learning_rate(config: FinetuneConfig, info: ModelInfo) -> tuple[float, str]:
    """The run's learning rate and where it came from: one given for the run, else the model's own
    fine-tuning rate (0.05 for small networks, 0.01 for large ones, E-AT App. A), else the data set's
    recipe, else robustft's default."""
    source = config.provenance.get("lr", "default")
    given = config.lr is not None and source != "default" and not source.startswith("recipe")
    if given:
        return float(config.lr), source
    if info.finetune_lr:
        return float(info.finetune_lr), f"model {info.name}"
    if config.lr is not None:
        return float(config.lr), source
    return DEFAULT_LR, "default"


def check_device(device: torch.device) -> None:
    """Pre-flight: a tensor can be placed on ``device``."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise UserError(f"Device {str(device)!r} cannot be used ({str(exc).splitlines()[0][:160]}).") from None


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _load_model(
    plan_zoo: ModelZoo, info: ModelInfo, registries: Registries, device: torch.device, dataset: DatasetPlugin, options: Mapping[str, Any]
) -> nn.Module:
    plugin = registries.plugin_of("zoos", plan_zoo)
    try:
        model = plan_zoo.load(info, device=device, dataset=dataset, **options)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a zoo's own failure, named for the user
        raise UserError(
            f"Model {info.name!r} could not be loaded by zoo {plan_zoo.name!r} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})."
        ) from None
    return checked(model, nn.Module, what=f"model zoo {plan_zoo.name!r} load()", plugin=plugin).to(device)


def _probe_model(model: nn.Module, dataset: DatasetPlugin, info: ModelInfo, device: torch.device) -> None:
    """Pre-flight: one forward pass on two test images gives (2, num_classes) logits.

    Runs in eval mode without gradients and with the RNG states forked, so the run is unchanged by it.
    """
    test = dataset.test()
    if len(test) == 0:
        raise UserError(f"Data set {dataset.name!r} has an empty test split.")
    x = torch.stack([test[i][0] for i in range(min(2, len(test)))]).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad():
            out = model(x)
    except Exception as exc:  # noqa: BLE001 - the model does not fit the data: say so in one sentence
        raise UserError(
            f"Model {info.name!r} fails on images of data set {dataset.name!r} (shape {tuple(x.shape[1:])}): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}."
        ) from None
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0], dataset.num_classes):
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise UserError(
            f"Model {info.name!r} gives outputs of shape {shape} on data set {dataset.name!r}, "
            f"expected ({x.shape[0]}, {dataset.num_classes}) logits."
        )


def attack_settings_given(config: FinetuneConfig, norms: tuple[Norm, ...]) -> list[str]:
    """The flags of the training-attack settings ``config`` changes from the defaults for ``norms``:
    ``--attack`` (another family for some norm) and ``--attack-option``. A run's config.toml records the
    family per norm, so the comparison is per norm, and a resumed run that kept the default passes."""
    default = FinetuneConfig().attack
    family = any(per_norm.resolve(config.attack, n, "--attack") != per_norm.resolve(default, n, "--attack") for n in norms)
    return [flag for flag, given in (("--attack", family), ("--attack-option", bool(config.attack_options))) if given]


def refuse_attack_settings(config: FinetuneConfig, scheme_cls: type[Scheme], resumed: bool = False) -> None:
    """Pre-flight: a scheme with an attack of its own (``Scheme.own_attack``) would silently ignore another
    training attack family or attack options, so both are refused; a resumed run that recorded them (made before
    they were refused) continues with a warning, since its settings cannot be left out."""
    given = attack_settings_given(config, tuple(config.norms or scheme_cls.default_norms))
    if given and resumed:
        log.warning(
            f"Scheme {scheme_cls.name!r} runs an attack of its own: the settings {' and '.join(given)} that the run recorded are not used."
        )
    elif given:
        raise BadInputError(
            f"Scheme {scheme_cls.name!r} runs an attack of its own, so {' and '.join(given)} would not be used: "
            "leave them out (--attack-steps sets its steps; 'robustft list schemes --options' lists its own options)."
        )


def preflight(config: FinetuneConfig, registries: Registries, run_dir: Path | None = None) -> Plan:
    """Check everything a run needs, cheapest first, before any training compute.

    Names, then radii and scheme options, then the device, the output folder (writable, free space),
    the data (the training split can be built and is not empty) and the model (it loads, fits the data,
    and the disk has room for its checkpoints). Each failure is one sentence (a :class:`UserError`).
    ``run_dir`` is the existing folder of a resumed run.
    """
    scheme_cls = registries.schemes.get(config.scheme)
    for name in config.attack.values():
        registries.attacks.get(name)  # an unknown family first, before anything loads
    if scheme_cls.own_attack:
        refuse_attack_settings(config, scheme_cls, resumed=run_dir is not None)
    zoo, info = resolve_model(config.model, registries)
    dataset = resolve_dataset(config.dataset or info.dataset, registries, **config.data_options())
    config = with_recipe(config, dataset.name, dataset.recipe, dataset.recipe_source)
    norms = tuple(config.norms or scheme_cls.default_norms)
    eps = {**dataset.default_eps, **config.eps}
    check_radii(eps, norms, dataset.name, dataset.dim)
    attacks = training_attacks(config, norms, eps, registries)
    scheme = scheme_cls(norms, **config.options)
    for message in scheme.threat_model_warnings(eps, dataset.dim):
        log.warning(message)
    device = distributed.local_device(select_device(config.device))
    check_device(device)
    lr, lr_source = learning_rate(config, info)
    config = dataclasses.replace(
        config,
        provenance={
            **config.provenance,
            "lr": lr_source,
            **({} if config.dataset else {"dataset": f"model {info.name}"}),
            **({} if config.norms else {"norms": f"scheme {scheme_cls.name}"}),
            "eps": f"data set {dataset.name}"
            + ("" if config.provenance.get("eps", "default") == "default" else f" + {config.provenance['eps']}"),
        },
        dataset=config.dataset or info.dataset,
        norms=norms,
        eps={n: eps[n] for n in norms},
        lr=lr,
        # what each training norm resolved to, as config.toml records it
        attack={n.value: attacks[n].factory.name for n in norms},
        attack_steps={n.value: attacks[n].steps for n in norms},
        attack_options={n.value: dict(attacks[n].options) for n in norms if attacks[n].options},
    )
    if run_dir is None:
        # Under torchrun rank 0 names the folder (it may hold a timestamp) and tells the others.
        run_dir = distributed.broadcast_object(plan_run_dir(info.name, scheme_cls.name, config.out) if distributed.is_main() else None)
    if distributed.is_main():  # the only process that writes there
        check_writable(run_dir)
        check_free_space(run_dir)

    performance = Performance.resolve(config, device)
    data_rng = torch.Generator().manual_seed(config.seed)
    try:
        loader = distributed.make_distributed_loader(
            dataset, dataclasses.replace(config, workers=performance.workers, pin_memory=performance.pin_memory), data_rng, device
        )
        batches = len(loader)
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - a data set that cannot build its split, named
        raise UserError(
            f"Data set {dataset.name!r} could not load its training split ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else 'no detail'})."
        ) from None
    if batches == 0:
        raise UserError(f"Data set {dataset.name!r} has no training points.")

    torch.manual_seed(config.seed)
    model = _load_model(zoo, info, registries, device, dataset, config.model_options())
    _probe_model(model, dataset, info, device)
    if distributed.rank() > 0:
        # Each rank augments its own slice of the batch: give it its own stream (rank 0 keeps the
        # single-process one). DDP copies rank 0's weights to every rank, whatever the seed.
        torch.manual_seed(config.seed + 1_000_003 * distributed.rank())
    if distributed.is_main():
        # A checkpoint holds the weights and the optimizer's momentum; two mid-epoch ones are kept besides
        # the epoch checkpoints, so ask for room for a few of them at least.
        check_free_space(run_dir, 64 * 2**20 + 6 * _model_bytes(model))
    return Plan(
        config,
        scheme_cls,
        scheme,
        attacks,
        zoo,
        info,
        dataset,
        norms,
        {n: eps[n] for n in norms},
        device,
        run_dir,
        model,
        loader,
        data_rng,
        performance,
    )


# ----------------------------------------------------------------------------------------- resume
