"""The training engine: one loop for every scheme.

The engine owns what all schemes share: the optimizer (SGD with momentum and weight decay on every
parameter), the learning-rate schedule (divided by 10 every ``lr_step`` epochs, set before every batch
for every parameter group), the model's mode (eval while attacking, train for the update), progress,
metrics, checkpoints and the run directory. A scheme only says what the loss of a batch is.

Reliability (docs/reliability.md):

* pre-flight: every name, radius, the device, the output folder (writable, with space), the data and
  the model are checked before any compute and before the run folder is created;
* checkpoints at every epoch end and, with ``checkpoint_every=N``, every N batches; each carries the
  model, optimizer, scheme state, every RNG state and the data order's position, so that
  ``finetune(resume=run_dir)`` continues bit for bit where the run stopped;
* SIGINT/SIGTERM finish the current batch, write a checkpoint and stop with exit code 130/143;
* a non-finite loss stops the run (or, up to ``max_nan_batches`` times, skips the update).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import robustft
from robustft import distributed, memory, per_norm
from robustft.attack_state import attack_generator, attack_states, load_attack_states
from robustft.config import DEFAULT_LR, NOT_SETTINGS, OPERATIONAL_FIELDS, FinetuneConfig, build_config, dumps_toml, with_recipe
from robustft.contracts import Attack, AttackFactory, AttackResult, DatasetPlugin, ModelInfo, ModelZoo, Scheme, TrainContext
from robustft.errors import BadInputError, UserError
from robustft.geometry import check_radii
from robustft.io import UnsafeFileError, remove_stale_temporaries, atomic_write_text, checksum_path, load_torch, read_jsonl, rewrite_jsonl, save_torch
from robustft.loggers import Loggers, final_summary
from robustft.losses import outer_loss
from robustft.models import on_for_cuda, resolve_dataset, resolve_model, select_device
from robustft.norms import Norm, eps_to_strings, format_radius
from robustft.pluginmanager import PluginHost, get_host
from robustft.progress import ProgressReporter
from robustft.registry import PluginFault, Registries, checked
from robustft.rundir import (
    check_free_space,
    check_writable,
    checkpoint_name,
    create_run_dir,
    killed_before_start,
    list_checkpoints,
    mark_latest,
    plan_run_dir,
    read_run_info,
    run_lock,
    write_run_info,
)
from robustft.schedules import lr_at
from robustft.schemas import RUN_INFO_FORMAT, Checkpoint

log = logging.getLogger("robustft")

CHECKPOINT_FORMAT = "robustft-checkpoint"
#: Mid-epoch checkpoints kept (older ones are deleted; epoch checkpoints are all kept).
KEEP_BATCH_CHECKPOINTS = 2


class TrainingError(UserError):
    """Training cannot go on (a non-finite loss, say); the message says where."""


class RunInterrupted(UserError):
    """The run was stopped by SIGINT or SIGTERM after writing a checkpoint; exit code 128 + signal."""


@dataclass
class PassCounter:
    """Forward and backward passes, counted in images (a batch of 128 through the model is 128)."""

    attack_forward: int = 0
    attack_backward: int = 0
    update_forward: int = 0
    update_backward: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class TrainingAttack:
    """The training attack of one norm: its family, the plugin that registered it, steps and options."""

    factory: AttackFactory
    plugin: str
    steps: int
    options: Mapping[str, Any] = field(default_factory=dict)

    def build(self, norm: Norm, eps: float) -> Attack:
        """The attack for ``norm`` at radius ``eps``; a family that refuses its options says so in one sentence."""
        built = self.factory.build(norm, eps, steps=self.steps, purpose="train", **self.options)
        return checked(built, Attack, what=f"attack {getattr(self.factory, 'name', '?')!r} build()", plugin=self.plugin)


class EngineContext(TrainContext):
    """The engine's implementation of :class:`robustft.contracts.TrainContext`."""

    def __init__(
        self,
        model: nn.Module,
        device: torch.device,
        eps: Mapping[Norm, float],
        attack_factory: AttackFactory | None,
        attack_steps: int,
        epochs: int,
        batches_per_epoch: int,
        rng: torch.Generator,
        num_classes: int,
        config: FinetuneConfig | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        attack_plugin: str | None = None,
        update_model: nn.Module | None = None,
        attacks: Mapping[Norm, TrainingAttack] | None = None,
    ) -> None:
        """``attacks`` gives each training norm its own family, steps and options (a run's plan); without
        it every norm of ``eps`` gets ``attack_factory`` with ``attack_steps`` steps."""
        self.model = model
        #: What Scheme.loss receives: ``model``, or under torchrun the DDP wrapper around it.
        self.update_model = model if update_model is None else update_model
        self.device = device
        self.eps = dict(eps)
        self.epochs = epochs
        self.batches_per_epoch = batches_per_epoch
        self.rng = rng
        self.num_classes = num_classes
        self.epoch = 0
        self.batch = 0
        self.passes = PassCounter()
        self.config = config or FinetuneConfig(lr=DEFAULT_LR)
        self.optimizer = optimizer if optimizer is not None else self.make_optimizer(model)
        if attacks is None:
            plugin = attack_plugin or str(getattr(attack_factory, "name", type(attack_factory).__name__))
            attacks = {norm: TrainingAttack(attack_factory, plugin, attack_steps) for norm in self.eps}
        self.attacks = dict(attacks)
        #: For schemes with one attack of their own across norms (MSD): the most steps any norm has.
        self.attack_steps = max((a.steps for a in self.attacks.values()), default=attack_steps)
        self._built: dict[Norm, Attack] = {}

    def training_attack(self, norm: Norm) -> Attack:
        if norm not in self._built:
            if norm not in self.eps:
                raise BadInputError(f"No radius for norm {norm}: give one with --eps {norm}=RADIUS.")
            if norm not in self.attacks:
                raise BadInputError(f"No training attack for norm {norm}: give one with --attack {norm}=NAME.")
            attack = self.attacks[norm].build(norm, self.eps[norm])
            attack.use_generator(attack_generator(self.config.seed, norm, self.device, distributed.rank()))
            self._built[norm] = attack
        return self._built[norm]

    def attack(self, norm: Norm, x: Tensor, y: Tensor, model: nn.Module | None = None) -> AttackResult:
        model = self.model if model is None else self.attack_view(model)
        attack = self.training_attack(norm)
        spec = self.attacks[norm]
        with self.attack_autocast():
            result = attack(model, x, y)  # Attack.__call__: eval mode (BatchNorm frozen), checks the result
        checked(result, AttackResult, what=f"the {norm.label} training attack", plugin=spec.plugin)
        n = x.shape[0]
        self.passes.attack_forward += n * result.forward_passes
        self.passes.attack_backward += n * result.backward_passes
        return result

    def count_passes(self, forward: int = 0, backward: int = 0, *, images: int = 1) -> None:
        self.passes.update_forward += forward * images
        self.passes.update_backward += backward * images

    def adversarial_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        if self.config.outer_loss == "trades":
            self.count_passes(forward=1, images=x.shape[0])  # the extra clean forward pass
        return outer_loss(self.config.outer_loss, model, x, x_adv, y, self.config.trades_beta)

    def lr_at(self, position: float) -> float:
        c = self.config
        return lr_at(c.lr_schedule, float(c.lr or DEFAULT_LR), position, c.epochs, c.lr_step)

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        c = self.config
        return torch.optim.SGD(model.parameters(), lr=float(c.lr or DEFAULT_LR), momentum=c.momentum, weight_decay=c.weight_decay)

    def reduce_sum(self, tensor: Tensor) -> Tensor:
        return distributed.all_reduce_sum(tensor)

    @functools.cached_property
    def performance(self) -> Performance:
        return Performance.resolve(self.config, self.device)

    def attack_autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.config.attack_precision == "amp":
            return contextlib.nullcontext()  # inherit the run's autocast around the scheme's loss
        return torch.autocast(device_type=self.device.type, enabled=False)

    def update_autocast(self) -> contextlib.AbstractContextManager[Any]:
        perf = self.performance
        return perf.autocast(self.device) if perf.amp == "bf16" else contextlib.nullcontext()

    def global_mean_loss(self, loss: Tensor, n: int) -> Tensor:
        if not distributed.is_distributed():
            return loss
        (total,) = self.global_sums(n)
        return distributed.scale_to_global_mean(loss, n, int(total))

    def attack_view(self, model: nn.Module) -> nn.Module:
        # The engine's own wrapper maps back to the (possibly compiled) module it wraps.
        return self.model if model is self.update_model else distributed.local_module(model)

    def distribute(self, module: nn.Module) -> nn.Module:
        return distributed.wrap_model(module, self.device)


@dataclass
class RunResult:
    """What :func:`finetune` returns."""

    run_dir: Path
    weights: Path
    config: FinetuneConfig
    epochs: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "weights": str(self.weights),
            "model": self.config.model,
            "dataset": self.config.dataset,
            "scheme": self.config.scheme,
            "epochs": self.epochs,
        }


# ----------------------------------------------------------------------------------- the GPU path


@dataclass(frozen=True)
class Performance:
    """How a run uses its device (issue 5). ``auto`` settings are on for CUDA and off on the CPU, where
    the run is then numerically what it was without them."""

    amp: str  # "bf16", "fp16" or "off"
    channels_last: bool
    cudnn_benchmark: bool
    compile: bool
    workers: int
    pin_memory: bool

    @classmethod
    def resolve(cls, config: FinetuneConfig, device: torch.device) -> Performance:
        cuda = device.type == "cuda"
        amp = config.amp
        if amp == "auto":
            amp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "off"
        workers = config.workers if config.workers is not None else (min(4, os.cpu_count() or 1) if cuda else 0)
        return cls(
            amp=amp,
            channels_last=on_for_cuda(config.channels_last, device),
            cudnn_benchmark=on_for_cuda(config.cudnn_benchmark, device),
            compile=bool(config.compile),
            workers=workers,
            pin_memory=on_for_cuda(config.pin_memory, device),
        )

    def autocast(self, device: torch.device) -> Any:
        """Autocast for attacks and the loss (a no-op when ``amp`` is off)."""
        dtype = torch.bfloat16 if self.amp == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype, enabled=self.amp != "off")

    def describe(self) -> str:
        parts = [f"amp {self.amp}", f"channels-last {'on' if self.channels_last else 'off'}",
                 f"workers {self.workers}", f"pinned memory {'on' if self.pin_memory else 'off'}"]
        if self.compile:
            parts.append("torch.compile")
        return ", ".join(parts)


# ------------------------------------------------------------------------------------------ pre-flight


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


def _learning_rate(config: FinetuneConfig, info: ModelInfo) -> tuple[float, str]:
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


def training_attacks(
    config: FinetuneConfig, norms: Iterable[Norm], eps: Mapping[Norm, Fraction], registries: Registries
) -> dict[Norm, TrainingAttack]:
    """Pre-flight: each training norm's attack family, steps and options (``--attack``, ``--attack-steps``,
    ``--attack-option``, per norm or for all), checked by building each attack once."""
    attacks = {}
    for norm in norms:
        factory = registries.attacks.get(per_norm.resolve(config.attack, norm, "--attack"))
        if norm not in factory.norms:
            others = ", ".join(n.value for n in factory.norms)
            raise BadInputError(
                f"Attack {factory.name!r} does not support norm {norm} (only {others}): "
                f"give that norm another attack with --attack {norm}=NAME."
            )
        options = per_norm.merged_for(config.attack_options, norm.value)
        spec = TrainingAttack(factory, registries.plugin_of("attacks", factory),
                              per_norm.resolve(config.attack_steps, norm, "--attack-steps"), options)
        spec.build(norm, float(eps[norm]))
        attacks[norm] = spec
    return attacks


def check_device(device: torch.device) -> None:
    """Pre-flight: a tensor can be placed on ``device``."""
    try:
        torch.empty(1, device=device)
    except (RuntimeError, AssertionError) as exc:
        raise UserError(f"Device {str(device)!r} cannot be used ({str(exc).splitlines()[0][:160]}).") from None


def _model_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _load_model(plan_zoo: ModelZoo, info: ModelInfo, registries: Registries, device: torch.device,
                dataset: DatasetPlugin, options: Mapping[str, Any]) -> nn.Module:
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
    lr, lr_source = _learning_rate(config, info)
    config = dataclasses.replace(
        config,
        provenance={
            **config.provenance,
            "lr": lr_source,
            **({} if config.dataset else {"dataset": f"model {info.name}"}),
            **({} if config.norms else {"norms": f"scheme {scheme_cls.name}"}),
            "eps": f"data set {dataset.name}" + ("" if config.provenance.get("eps", "default") == "default" else f" + {config.provenance['eps']}"),
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
        loader = distributed.make_distributed_loader(dataset, dataclasses.replace(config, workers=performance.workers, pin_memory=performance.pin_memory), data_rng, device)
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
    return Plan(config, scheme_cls, scheme, attacks, zoo, info, dataset, norms,
                {n: eps[n] for n in norms}, device, run_dir, model, loader, data_rng, performance)


# ----------------------------------------------------------------------------------------- resume


def resume_config(run_dir: Path, options: Mapping[str, Any]) -> FinetuneConfig:
    """The configuration a resumed run continues with: the run's ``config.toml``.

    Options given with ``--resume`` must agree with it, except the operational ones (device, workers,
    checkpoint interval, NaN tolerance), which may change, and ``--epochs``, which extends (or shortens) the
    run on purpose; such an override is recorded in the provenance as ``option (--resume)``.
    """
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"Run folder {str(run_dir)!r} has no config.toml, so it cannot be resumed.")
    saved = build_config(run_dir / "config.toml")
    given = {k: v for k, v in options.items() if v is not None}
    overrides: dict[str, Any] = {}
    for key, value in given.items():
        name = key.replace("-", "_")
        if name in OPERATIONAL_FIELDS:
            continue
        if name in RESUME_OVERRIDES:
            overrides[name] = getattr(build_config(**{name: value}), name)
            continue
        wanted = getattr(build_config(**{name: value}), name, None)
        have = getattr(saved, name, None)
        if name in {"eps", "options"} and isinstance(wanted, Mapping):
            conflict = any((have or {}).get(k) != v for k, v in wanted.items())
        elif name == "out":
            conflict = Path(str(value)).resolve() != run_dir.resolve()
        else:
            conflict = wanted != have
        if conflict:
            flag = "--" + name.replace("_", "-")
            raise BadInputError(
                f"Option {flag} conflicts with the configuration of the run being resumed "
                f"({run_dir / 'config.toml'}); --resume continues that configuration unchanged."
            )
    operational = {n: given[n] for n in given if n in OPERATIONAL_FIELDS}
    converted = build_config(**operational)
    provenance = {**saved.provenance, **{n: RESUME_OVERRIDE_SOURCE for n in overrides if overrides[n] != getattr(saved, n)}}
    return dataclasses.replace(saved, **{n: getattr(converted, n) for n in operational}, **overrides, provenance=provenance)


#: Settings ``--resume`` may change on purpose: the length of the run.
RESUME_OVERRIDES = frozenset({"epochs"})
RESUME_OVERRIDE_SOURCE = "option (--resume)"


def edited_settings(saved: Mapping[str, Any], config: FinetuneConfig) -> list[str]:
    """The settings in which ``config`` (the run's config.toml, with any ``--resume`` override) differs from the
    configuration a checkpoint was written with, other than operational ones and deliberate overrides."""
    current = config.to_toml_dict()
    skip = OPERATIONAL_FIELDS | NOT_SETTINGS | {k for k, v in config.provenance.items() if v == RESUME_OVERRIDE_SOURCE}
    return sorted(k for k in set(saved) | set(current) if k not in skip and saved.get(k) != current.get(k))


def load_last_checkpoint(run_dir: Path) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest checkpoint of a run that loads and verifies, falling back with a warning past damaged ones."""
    for _, path in reversed(list_checkpoints(run_dir)):
        try:
            state = load_torch(path, "checkpoint", require_checksum=True)
            if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "position" not in state:
                raise UserError(f"The checkpoint {str(path)!r} is not a robustft training checkpoint.")
            Checkpoint.check(state, path)  # the structure restore() relies on, before it relies on it
        except UnsafeFileError:
            raise  # a planted file is a security problem to look at, not damage to skip over
        except UserError as exc:
            log.warning("%s Falling back to the previous checkpoint.", exc.message)
            continue
        return state, path
    return None, None


def _trim_metrics(path: Path, epoch: int, batch: int) -> None:
    """Keep the metrics recorded up to a checkpoint at (epochs done, batches done); drop a torn last line."""
    kept = []
    for record in read_jsonl(path):
        kind, e, b = record.get("kind"), record.get("epoch", 0), record.get("batch", 0)
        if kind == "batch" and not (e <= epoch or (e == epoch + 1 and b <= batch)):
            continue
        if kind == "epoch" and e > epoch:
            continue
        kept.append(record)
    rewrite_jsonl(path, kept)


# ------------------------------------------------------------------------------------------- signals


class StopRequest:
    """SIGINT/SIGTERM handlers that ask the training loop to stop after the current batch.

    A second signal stops at once (KeyboardInterrupt). Handlers are only installed on the main thread
    (Python allows nothing else) and the previous ones come back on :meth:`restore`.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            self.again = signum
            raise KeyboardInterrupt
        self.signum = signum

    #: The second signal, which stopped the run at once.
    again: int | None = None

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""


# ------------------------------------------------------------------------------------ the training run


def _rng_states(ctx: EngineContext, data_epoch_start: Tensor) -> dict[str, Any]:
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "data": data_epoch_start, "scheme": ctx.rng.get_state(),
                              "attacks": attack_states(ctx._built)}
    if ctx.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(ctx.device)
    return states


@dataclass
class EpochStats:
    """What an epoch has accumulated so far (saved in mid-epoch checkpoints)."""

    images: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0
    nan_batches: int = 0
    passes_before: dict[str, int] = field(default_factory=dict)


class Trainer:
    """One run of the loop, fresh or resumed."""

    def __init__(self, plan: Plan, registries: Registries, progress: ProgressReporter, run_info: dict[str, Any], loggers: Loggers) -> None:
        self.plan = plan
        self.config = c = plan.config
        self.progress = progress
        self.run_info = run_info
        self.run_dir = plan.run_dir
        self.model = plan.model
        self.scheme = plan.scheme
        self.loader = plan.loader
        self.data_rng = plan.data_rng
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.loggers = loggers  # metrics.jsonl (always) and the --log trackers
        self.scheme_plugin = registries.plugin_of("schemes", plan.scheme_cls)
        self.perf = perf = plan.performance
        if plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = perf.cudnn_benchmark
        if perf.channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Attacks use ``attack_model``; the update runs through ``train_model``, which under torchrun is
        # the DistributedDataParallel wrapper (it averages gradients over the ranks). Compiled modules
        # share the parameters; checkpoints keep using the plain module's state dict.
        # The engine broadcasts rank 0's buffers at the start of every step (before the attacks), so DDP's
        # own broadcast at each forward pass would only repeat it.
        update = distributed.wrap_model(self.model, plan.device, broadcast_buffers=False)
        if perf.compile:
            self.attack_model: nn.Module = torch.compile(self.model)
            self.train_model: nn.Module = self.attack_model if update is self.model else torch.compile(update)
        else:
            self.attack_model, self.train_model = self.model, update
        self.scaler = torch.amp.GradScaler(plan.device.type) if perf.amp == "fp16" else None
        self.ctx = EngineContext(
            model=self.attack_model,
            update_model=self.train_model,
            device=plan.device,
            eps={n: float(plan.eps[n]) for n in plan.norms},
            attack_factory=None,
            attack_steps=0,
            attacks=plan.attacks,
            epochs=c.epochs,
            batches_per_epoch=len(self.loader),
            rng=torch.Generator().manual_seed(c.seed + 1),
            num_classes=plan.dataset.num_classes,
            config=c,
        )
        self.optimizer = self.ctx.optimizer
        # Schemes that keep the default epoch (batch after batch) can stop and resume anywhere in it;
        # one that overrides run_epoch (RAMP's gradient projection) is checkpointed at epoch ends only,
        # unless it declares ``mid_epoch_resume = True``.
        self.mid_epoch = bool(getattr(plan.scheme, "mid_epoch_resume", type(plan.scheme).run_epoch is Scheme.run_epoch))
        self.start_epoch, self.start_batch = 0, 0
        self.nan_batches = 0
        self.stats = EpochStats()
        self.data_epoch_start = self.data_rng.get_state()
        self.last_checkpoint: Path | None = None
        self.stop = StopRequest()
        self.stop_agreed = False  # under torchrun: some rank had a stop request at the last step
        self.main = distributed.is_main()

    # -------------------------------------------------------------------------------- checkpoints

    def restore(self, state: Mapping[str, Any], path: Path) -> None:
        """Put the run back where the checkpoint ``path`` left it."""
        epoch, batch = (int(v) for v in state["position"])
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            raise UserError(f"The checkpoint {str(path)!r} does not fit this run's model ({str(exc).splitlines()[0][:160]}).") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_epoch, self.start_batch = epoch, batch
        self.nan_batches = int(state.get("nan_batches", 0))
        self.ctx.passes = PassCounter(**state.get("passes", {}))
        self.stats = EpochStats(**state["epoch_stats"]) if batch else EpochStats()
        self.resume_state = state
        self.last_checkpoint = path
        self.data_rng.set_state(state["rng"]["data"])
        self.data_epoch_start = self.data_rng.get_state()
        if batch == 0:  # at an epoch boundary: everything can be restored now
            self._restore_scheme_and_rngs(state)
        if self.main:
            _trim_metrics(self.metrics_path, epoch, batch)
            self.loggers.log({"kind": "resume", "epoch": epoch + 1, "batch": batch, "checkpoint": path.name})

    def _restore_scheme_and_rngs(self, state: Mapping[str, Any]) -> None:
        self.scheme.load_state_dict(state["scheme"])
        self.ctx.rng.set_state(state["rng"]["scheme"])
        rngs = state["rng"]
        per_rank = state.get("rng_ranks")
        if per_rank and len(per_rank) == distributed.world_size():
            rngs = per_rank[distributed.rank()]  # the same number of processes: each continues its own streams
        elif distributed.rank() > 0:
            log.debug("Resumed with another number of processes: rank %d restarts its augmentation stream.", distributed.rank())
            rngs = {"torch": torch.Generator().manual_seed(self.config.seed + 1_000_003 * distributed.rank()).get_state()}
        torch.set_rng_state(rngs["torch"])
        load_attack_states(rngs.get("attacks", {}), self.ctx.training_attack)
        if "cuda" in rngs and self.ctx.device.type == "cuda":
            torch.cuda.set_rng_state(rngs["cuda"], self.ctx.device)

    def save_checkpoint(self, epoch: int, batch: int) -> Path:
        """Checkpoint after ``batch`` batches of epoch ``epoch`` (0-based); ``batch == 0``: after ``epoch`` epochs.

        Every rank calls it (the ranks' RNG states are gathered); rank 0 alone writes.
        """
        path = self.run_dir / "checkpoints" / checkpoint_name(epoch if batch == 0 else epoch + 1, batch)
        rngs = _rng_states(self.ctx, self.data_epoch_start if batch else self.data_rng.get_state())
        rng_ranks = distributed.gather_object(rngs) if distributed.is_distributed() else None
        self.last_checkpoint = path
        if not self.main:
            return path
        save_torch(
            {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,  # epochs completed
                "position": [epoch, batch],
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "lr": self.ctx.lr_at(epoch + batch / len(self.loader)),
                "scheme": self.scheme.state_dict(),
                "rng": rngs,
                **({"rng_ranks": rng_ranks} if rng_ranks else {}),
                "passes": self.ctx.passes.as_dict(),
                "nan_batches": self.nan_batches,
                "epoch_stats": dataclasses.asdict(self.stats),
                "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                "config": self.config.to_toml_dict(),
            },
            path,
        )
        self._prune()
        return path

    def _prune(self) -> None:
        found = list_checkpoints(self.run_dir)
        newest_epoch = max((pos for pos, p in found if pos[1] == 0), default=None)
        mid = [(pos, p) for pos, p in found if pos[1] != 0]
        stale = mid[:-KEEP_BATCH_CHECKPOINTS] + [(pos, p) for pos, p in mid[-KEEP_BATCH_CHECKPOINTS:] if newest_epoch and pos < newest_epoch]
        for _, path in stale:
            path.unlink(missing_ok=True)
            checksum_path(path).unlink(missing_ok=True)

    # -------------------------------------------------------------------------------------- loop

    def _fail(self, status: str) -> None:
        self.run_info.update(status=status, stopped=_dt.datetime.now().isoformat(timespec="seconds"))
        if self.main:
            write_run_info(self.run_dir, self.run_info)

    def _resume_hint(self) -> str:
        return f"robustft finetune --resume {self.run_dir}"

    def _batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """The epoch's batches; a resumed epoch skips (loads but does not train on) those done before."""
        iterator = iter(self.loader)
        if epoch == self.start_epoch and self.start_batch:
            for _ in range(self.start_batch):
                next(iterator)
            # Skipping drew augmentation randomness again: put every RNG back where the checkpoint was.
            self._restore_scheme_and_rngs(self.resume_state)
        return iterator

    def _interrupt(self, epoch: int, *, epoch_done: bool = False) -> None:
        where = f"epoch {epoch + 1}" if epoch_done else f"epoch {epoch + 1}, batch {self.ctx.batch}"
        if epoch_done:
            kept = f"checkpoint {self.last_checkpoint} written"
        elif self.mid_epoch:
            saved = self.save_checkpoint(epoch, self.ctx.batch)
            kept = f"checkpoint {saved} written"
        else:
            kept = f"last checkpoint {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
        self._fail("interrupted")
        raise RunInterrupted(
            f"Interrupted by {self.stop.name} after {where} ({kept}); continue with: {self._resume_hint()}",
            exit_code=128 + int(self.stop.signum or signal.SIGINT),
        )

    def _step(self, epoch: int) -> Callable[[Tensor, Tensor], None]:
        ctx, model, optimizer, scheme, device = self.ctx, self.train_model, self.optimizer, self.scheme, self.ctx.device
        perf, scaler = self.perf, self.scaler
        c = self.config
        batches = len(self.loader)

        def step(x: Tensor, y: Tensor) -> None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if perf.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            lr = ctx.lr_at(epoch + ctx.batch / batches)
            for group in optimizer.param_groups:  # every group: the reference code forgot its second one
                group["lr"] = lr
            model.train()
            distributed.broadcast_buffers(self.model)  # every rank attacks with rank 0's BatchNorm statistics
            # BatchNorm statistics move during the loss's forward passes; a skipped batch must not keep them.
            buffers = [b.detach().clone() for b in model.buffers()] if c.max_nan_batches else []
            with perf.autocast(device):  # the attacks inside the loss switch it off (ctx.attack_autocast)
                loss, logs = self._checked_loss(scheme.loss(model, x, y, ctx))
            record: dict[str, Any] = {"kind": "batch", "epoch": epoch + 1, "batch": ctx.batch + 1, "lr": lr}
            value, images, finite = self._global_loss(loss, x.shape[0])
            if finite and distributed.is_distributed():  # unequal pieces weigh their points alike
                loss = distributed.scale_to_global_mean(loss, x.shape[0], images)
            if finite:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:  # fp16: scale the loss so small gradients survive, unscale before the step
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                ctx.passes.update_forward += x.shape[0]
                ctx.passes.update_backward += x.shape[0]
                self.stats.images += images
                self.stats.loss_sum += value * images
                record.update(loss=value, **logs)
            else:
                self.nan_batches += 1
                self.stats.nan_batches += 1
                if self.nan_batches > c.max_nan_batches:
                    kept = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
                    self._fail("failed")
                    raise TrainingError(
                        f"The loss became {value} at epoch {epoch + 1}, batch {ctx.batch + 1} "
                        f"(non-finite batches: {self.nan_batches}, --max-nan-batches {c.max_nan_batches}); {kept}."
                    )
                with torch.no_grad():
                    for buffer, saved in zip(model.buffers(), buffers):
                        buffer.copy_(saved)
                log.warning("Skipped batch %d of epoch %d: the loss was %s (no update; %d of %d allowed).",
                            ctx.batch + 1, epoch + 1, value, self.nan_batches, c.max_nan_batches)
                record.update(loss=None, skipped="non-finite loss", **logs)
            if self.main:
                self.loggers.log(record)
            shown: dict[str, Any] = {"loss": self.stats.loss_sum / max(self.stats.images, 1)}
            shown.update({k.replace("rerr_", "rerr "): v for k, v in logs.items() if k.startswith("rerr_") and k != "rerr_batch"})
            self.progress.advance(shown)
            ctx.batch += 1
            if self.mid_epoch and c.checkpoint_every and ctx.batch % c.checkpoint_every == 0 and ctx.batch < batches:
                self.stats.seconds += time.perf_counter() - self._clock
                self._clock = time.perf_counter()
                self.save_checkpoint(epoch, ctx.batch)
            if self._stop_requested(per_step=True) and ctx.batch < batches:  # at an epoch's end: see run()
                self._interrupt(epoch)

        return step

    def _global_loss(self, loss: Tensor, n: int) -> tuple[float, int, bool]:
        """(mean loss, images, finite) of the step over all ranks; in one process, this process's own.

        Under torchrun one all-reduce per step also carries the ranks' stop requests, so that every rank
        skips a non-finite step, or stops, at the same batch (DDP needs every rank in every step).
        """
        value = float(loss.detach())  # the step's one host synchronisation (outside the attack loops)
        finite = math.isfinite(value)
        if not distributed.is_distributed():
            return value, n, finite
        totals = distributed.all_reduce_sum(
            torch.tensor([value * n if finite else 0.0, float(n), 0.0 if finite else 1.0, float(self.stop.signum is not None)], dtype=torch.float64)
        )
        self.stop_agreed = bool(totals[3] > 0)
        images = int(totals[1])
        if totals[2] > 0:
            return (value if not finite else math.nan), images, False
        return float(totals[0]) / images, images, True

    def _stop_requested(self, *, per_step: bool = False) -> bool:
        """Whether to stop: a signal here, or, under torchrun, on any rank (then on every rank together)."""
        if not distributed.is_distributed():
            return self.stop.signum is not None
        if per_step:
            return self.stop_agreed  # agreed in this step's all-reduce
        return bool(distributed.all_reduce_sum(torch.tensor([float(self.stop.signum is not None)])) > 0)

    def _checked_loss(self, out: Any) -> tuple[Tensor, dict[str, Any]]:
        """``(scalar loss tensor, dict of logs)`` from a scheme's ``loss``, or one sentence naming the plugin."""
        what = f"scheme {self.scheme.name!r} loss()"
        if not (isinstance(out, tuple) and len(out) == 2):
            raise PluginFault(f"Plugin {self.scheme_plugin!r} is faulty: {what} returned {type(out).__name__}, not a (loss, logs) pair.")
        loss = checked(out[0], Tensor, what=what, plugin=self.scheme_plugin)
        logs = checked(out[1], dict, what=what + " (its logs)", plugin=self.scheme_plugin)
        if loss.numel() != 1:
            raise PluginFault(f"Plugin {self.scheme_plugin!r} is faulty: {what} returned a loss of shape {tuple(loss.shape)}, not a scalar.")
        return loss.reshape(()), logs

    def run(self, result: RunResult) -> None:
        c, ctx, scheme = self.config, self.ctx, self.scheme
        self.stop.install()
        try:
            for epoch in range(self.start_epoch, c.epochs):
                resumed_mid = epoch == self.start_epoch and self.start_batch > 0
                ctx.epoch, ctx.batch = epoch, (self.start_batch if resumed_mid else 0)
                if not resumed_mid:
                    self.stats = EpochStats(passes_before=ctx.passes.as_dict())
                    self.data_epoch_start = self.data_rng.get_state()
                memory.reset_peak(ctx.device)  # each epoch's own peak, also for later runs in this process
                self._clock = time.perf_counter()
                scheme.on_epoch_start(ctx)
                self.progress.start(f"epoch {epoch + 1}/{c.epochs}", len(self.loader))
                for _ in range(ctx.batch):
                    self.progress.advance({})
                try:
                    scheme.run_epoch(ctx, self._batches(epoch), self._step(epoch))
                finally:
                    self.progress.stop()
                result.epochs.append(self._end_epoch(epoch))
                if self._stop_requested() and epoch + 1 < c.epochs:  # a signal in an epoch's last batch
                    self._interrupt(epoch, epoch_done=True)
        except KeyboardInterrupt:
            if self.stop.again is None:
                raise
            # A second signal stops at once: no checkpoint for this batch, but the exit code still says which
            # signal ended the job (a scheduler must not take it for a finished one).
            self._fail("interrupted")
            kept = f"last checkpoint {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint yet"
            raise RunInterrupted(
                f"Interrupted again by {signal.Signals(self.stop.again).name}: stopped at once ({kept}); "
                f"continue with: {self._resume_hint()}",
                exit_code=128 + int(self.stop.again),
            ) from None
        finally:
            self.stop.restore()

    def _end_epoch(self, epoch: int) -> dict[str, Any]:
        ctx = self.ctx
        seconds = self.stats.seconds + time.perf_counter() - self._clock
        passes = {k: v - self.stats.passes_before.get(k, 0) for k, v in ctx.passes.as_dict().items()}
        peak = memory.peak_mib(ctx.device)
        if distributed.is_distributed():  # every rank's passes; the slowest rank's time; the largest peak
            summed = distributed.all_reduce_sum(torch.tensor(list(passes.values()), dtype=torch.int64))
            passes = dict(zip(passes, (int(v) for v in summed)))
            gathered = distributed.gather_tensor(torch.tensor([[seconds, peak or 0.0]], dtype=torch.float64), dst=None)
            assert gathered is not None
            seconds, peak = float(gathered[:, 0].max()), (float(gathered[:, 1].max()) or None)
        images = self.stats.images
        attack_passes = passes["attack_forward"] + passes["attack_backward"]
        summary = {
            "kind": "epoch",
            "epoch": epoch + 1,
            "loss": self.stats.loss_sum / max(images, 1),
            "seconds": seconds,
            "images": images,
            "images_per_s": images / seconds if seconds > 0 else None,
            "attack_passes_per_s": attack_passes / seconds if seconds > 0 else None,
            "peak_memory_mib": peak,
            "nan_batches": self.stats.nan_batches,
            "passes": passes,
            **self.scheme.on_epoch_end(ctx),
        }
        if distributed.is_distributed():
            summary["processes"] = distributed.world_size()
        if self.main:
            self.loggers.log(summary)
        self.save_checkpoint(epoch + 1, 0)
        return summary


def finetune(
    config: FinetuneConfig | None = None,
    *,
    config_file: str | Path | None = None,
    resume: str | Path | None = None,
    host: PluginHost | None = None,
    progress: ProgressReporter | None = None,
    log: Iterable[str] = (),
    **options: Any,
) -> RunResult:
    """Fine-tune a model with a scheme; write a run directory; return where it is.

    ``options`` are :class:`robustft.config.FinetuneConfig` fields (``model="digits-cnn-linf"``,
    ``scheme="e-at"``, ``epochs=3``, ``eps={"inf": "8/255"}``, ...); with ``config_file`` they override
    the file's values. ``resume`` continues the run in that folder from its last good checkpoint
    (options must then agree with its ``config.toml``, see :func:`resume_config`).

    Under ``torchrun`` every process calls this: they join one process group, train with
    DistributedDataParallel on slices of each global batch, and rank 0 alone writes the run folder and
    reports progress (docs/distributed.md). A resumed run reads its folder on every rank.

    ``log`` names experiment trackers (robustft/loggers.py) besides metrics.jsonl; each gets every record.
    """
    progress = progress or ProgressReporter()
    registries = (host or get_host()).registries
    loggers = Loggers.create(log, host)  # an unknown name or a missing package fails before any compute
    run_dir: Path | None = None
    previous: dict[str, Any] | None = None  # the resumed run's run.json
    if resume is not None:
        if config is not None or config_file is not None:
            raise BadInputError("Give --resume or --config, not both: a resumed run keeps its own config.toml.")
        run_dir = Path(resume)
        previous = None if killed_before_start(run_dir) else read_run_info(run_dir)
        if previous is not None and previous.get("status") == "finished":
            raise UserError(f"Run {str(run_dir)!r} has already finished; its final weights are in {run_dir / 'model.pt'}.")
        config = resume_config(run_dir, options)
    elif config is None:
        config = build_config(config_file, **options)
    elif options:
        config = dataclasses.replace(config, **options)

    distributed.init_from_env(distributed.local_device(select_device(config.device)))
    main = distributed.is_main()
    if not main:
        progress = ProgressReporter()  # rank 0 reports for everyone
    plan = preflight(config, registries, run_dir)
    config = plan.config
    with contextlib.ExitStack() as held:
        if main:  # one process at a time writes a run folder; under torchrun rank 0 alone writes
            if resume is None:
                create_run_dir(plan.run_dir)
            held.enter_context(run_lock(plan.run_dir))
            for folder in (plan.run_dir, plan.run_dir / "checkpoints"):  # what killed writes left (we hold the lock)
                remove_stale_temporaries(folder)
            if resume is None and (plan.run_dir / "config.toml").exists():  # another run got there first
                raise UserError(f"Output folder {str(plan.run_dir)!r} is not empty; choose another --out or remove it.")
        if main and (resume is None or RESUME_OVERRIDE_SOURCE in config.provenance.values()):
            atomic_write_text(  # a resumed run with --epochs records its new length
                plan.run_dir / "config.toml",
                dumps_toml(config.to_toml_dict(), header=f"robustft {robustft.__version__} fine-tuning run; repeat with --config, continue with --resume"),
            )
        if previous is None:  # a new run, or one killed before its first run.json
            run_info: dict[str, Any] = {
                "format": RUN_INFO_FORMAT,
                "robustft_version": robustft.__version__,
                "base_model": config.model,
                "zoo": plan.zoo.name,
                "model_name": plan.info.name,
                "dataset": config.dataset,
                "model_options": config.model_options(),
                "data_options": config.data_options(),
                "scheme": plan.scheme_cls.name,
                "norms": [n.value for n in plan.norms],
                "eps": eps_to_strings(config.eps),
                "started": _dt.datetime.now().isoformat(timespec="seconds"),
            }
        else:
            run_info = {k: v for k, v in previous.items() if k != "stopped"}
        run_info["status"] = "running"
        if distributed.is_distributed():
            run_info["processes"] = distributed.world_size()
        if main:
            write_run_info(plan.run_dir, run_info)

        trainer = Trainer(plan, registries, progress, run_info, loggers.bind(plan.run_dir, config.to_toml_dict()))
        result = RunResult(run_dir=plan.run_dir, weights=plan.run_dir / "model.pt", config=config)
        if resume is not None:
            state, path = load_last_checkpoint(plan.run_dir)
            if state is not None and path is not None:
                saved = state.get("config")
                edited = edited_settings(saved, config) if isinstance(saved, Mapping) else []
                if edited:
                    raise UserError(
                        f"The configuration of {str(plan.run_dir)!r} was changed after its last checkpoint ({', '.join(edited)}): "
                        "--resume would train something else; restore config.toml, or start a new run with --config."
                    )
                epoch, batch = (int(v) for v in state["position"])
                if config.epochs < epoch + (1 if batch else 0):
                    raise BadInputError(f"--epochs {config.epochs} is fewer than the {epoch} epoch(s) the run has already trained.")
                trainer.restore(state, path)
                result.epochs = [r for r in read_jsonl(trainer.metrics_path) if r.get("kind") == "epoch"]
                progress.message(f"Resuming {plan.run_dir} from {path.name} (epoch {trainer.start_epoch + 1}, after batch {trainer.start_batch}).")
            else:
                if list_checkpoints(plan.run_dir):
                    log.warning("No checkpoint of %s could be used; the run starts again from the beginning.", plan.run_dir)
                if main:
                    _trim_metrics(trainer.metrics_path, 0, 0)
        eps = plan.eps
        progress.message(
            f"Fine-tuning {plan.info.name} on {plan.dataset.name} with {plan.scheme_cls.name} "
            f"({', '.join(f'{n.label} {format_radius(eps[n])}' for n in plan.norms)}) for {config.epochs} epoch(s) on {plan.device} "
            + (f"x {distributed.world_size()} processes " if distributed.is_distributed() else "")
            + f"({plan.performance.describe()}); run folder {plan.run_dir}"
        )
        try:
            trainer.run(result)
            if main:
                loggers.summary(final_summary(result.epochs))
        except KeyboardInterrupt:
            trainer._fail("interrupted")
            raise
        except Exception:
            if run_info.get("status") == "running":
                trainer._fail("failed")
            raise
        finally:
            loggers.close()

        run_info.update(status="finished", finished=_dt.datetime.now().isoformat(timespec="seconds"))
        if main:
            save_torch({"format": "robustft-weights", "model": plan.model.state_dict()}, result.weights)
            write_run_info(plan.run_dir, run_info)
            mark_latest(plan.run_dir)
        distributed.barrier()  # the others wait until the weights are written (a following command may read them)
    if result.epochs:
        last = result.epochs[-1]
        rate, passes, peak = last.get("images_per_s"), last.get("attack_passes_per_s"), last.get("peak_memory_mib")
        progress.message(
            "Last epoch: "
            + ", ".join(
                part for part in (
                    f"{rate:.1f} images/s" if rate else "",
                    f"{passes:.0f} attack passes/s" if passes else "",
                    f"peak memory {peak:.0f} MiB" if peak else "",
                ) if part
            )
            + "."
        )
    return result
