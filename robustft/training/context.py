"""What a scheme trains with: the engine's :class:`robustft.contracts.TrainContext` (the models, the training
attacks of each norm, the pass account, the schedule, the precision contexts), and the pieces it is built from."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from robustft import distributed, per_norm
from robustft.attack_state import attack_generator
from robustft.config import DEFAULT_LR, FinetuneConfig
from robustft.contracts import Attack, AttackFactory, AttackResult, TrainContext
from robustft.errors import BadInputError
from robustft.losses import outer_loss
from robustft.norms import Norm
from robustft.registry import PluginFault, Registries, checked
from robustft.schedules import lr_at
from robustft.training import precision
from robustft.training.precision import Performance

if TYPE_CHECKING:
    from robustft.training.preflight import Plan


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
        spec = TrainingAttack(
            factory, registries.plugin_of("attacks", factory), per_norm.resolve(config.attack_steps, norm, "--attack-steps"), options
        )
        spec.build(norm, float(eps[norm]))
        attacks[norm] = spec
    return attacks


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

    def count_passes(self, forward: int = 0, backward: int = 0, *, images: int = 1, attack: bool = False) -> None:
        if attack:
            self.passes.attack_forward += forward * images
            self.passes.attack_backward += backward * images
        else:
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
        return precision.attack_autocast(self.config, self.device)

    def update_autocast(self) -> contextlib.AbstractContextManager[Any]:
        return precision.update_autocast(self.performance, self.device)

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


def training_context(plan: Plan) -> EngineContext:
    """The context of a planned run, its model prepared for the device.

    Attacks use ``ctx.model``; the update runs through ``ctx.update_model``, which under torchrun is the
    DistributedDataParallel wrapper (it averages gradients over the ranks). Compiled modules share the
    parameters; checkpoints keep using the plain module's state dict. The loop broadcasts rank 0's buffers at
    the start of every step (before the attacks), so DDP's own broadcast at each forward pass would only
    repeat it.
    """
    c, perf = plan.config, plan.performance
    perf.prepare(plan.model, plan.device)
    update = distributed.wrap_model(plan.model, plan.device, broadcast_buffers=False)
    if perf.compile:
        attack_model: nn.Module = torch.compile(plan.model)
        update_model: nn.Module = attack_model if update is plan.model else torch.compile(update)
    else:
        attack_model, update_model = plan.model, update
    return EngineContext(
        model=attack_model,
        update_model=update_model,
        device=plan.device,
        eps={n: float(plan.eps[n]) for n in plan.norms},
        attack_factory=None,
        attack_steps=0,
        attacks=plan.attacks,
        epochs=c.epochs,
        batches_per_epoch=len(plan.loader),
        rng=torch.Generator().manual_seed(c.seed + 1),
        num_classes=plan.dataset.num_classes,
        config=c,
    )


def checked_loss(out: Any, scheme: str, plugin: str) -> tuple[Tensor, dict[str, Any]]:
    """``(scalar loss tensor, dict of logs)`` from a scheme's ``loss``, or one sentence naming the plugin."""
    what = f"scheme {scheme!r} loss()"
    if not (isinstance(out, tuple) and len(out) == 2):
        raise PluginFault(f"Plugin {plugin!r} is faulty: {what} returned {type(out).__name__}, not a (loss, logs) pair.")
    loss = checked(out[0], Tensor, what=what, plugin=plugin)
    logs = checked(out[1], dict, what=what + " (its logs)", plugin=plugin)
    if loss.numel() != 1:
        raise PluginFault(f"Plugin {plugin!r} is faulty: {what} returned a loss of shape {tuple(loss.shape)}, not a scalar.")
    return loss.reshape(()), logs
