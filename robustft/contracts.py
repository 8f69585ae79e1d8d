"""The contracts between robustft's core and its plugins.

The core knows no particular scheme, attack, model zoo or data set; it knows these classes. A plugin
subclasses one and hands it to the ``register`` callable of the matching hook (see
:mod:`robustft.hookspecs`). Everything a plugin registers carries its own ``name`` (lower-case, with
dashes), a one-line ``description`` and optional ``aliases``.

Conventions shared by every contract:

* images are float tensors of shape ``(N, C, H, W)`` with values in ``[0, 1]``; any normalisation
  lives inside the model;
* a model maps such images to logits ``(N, num_classes)``;
* perturbation radii are plain floats here (the CLI parses them exactly as fractions first).
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustft.attack_contract import Attack, AttackFactory, AttackResult  # noqa: E402,F401 - part of the contracts
from robustft.errors import BadInputError
from robustft.norms import Norm
from robustft.scheme_options import SchemeOption, SchemeOptions, option

# --------------------------------------------------------------------------------------- evaluation


class EvalSuite(abc.ABC):
    """An evaluation protocol: per norm, the attacks to run one after the other.

    The evaluator runs each attack only on the points that every earlier attack left correctly
    classified, checks every adversarial point against its ball and ``[0, 1]`` itself, and computes the
    union per point. A suite therefore only says *which* attacks, in which order.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def attacks(self, norm: Norm, eps: float, *, num_classes: int, steps: int, seed: int, registry: Any) -> list[tuple[str, Attack]]:
        """``(label, attack)`` pairs for one norm; ``registry`` holds the installed attack families."""


# ------------------------------------------------------------------------------------------ schemes


class TrainContext(abc.ABC):
    """What the engine offers a scheme while it trains. Implemented by the core engine.

    Attributes: ``model``, ``device``, ``epoch`` (0-based), ``batch`` (0-based within the epoch),
    ``epochs``, ``batches_per_epoch``, ``eps`` (``{Norm: float}``, the radii of the training norms),
    ``rng`` (a seeded ``torch.Generator`` on the CPU: schemes draw their randomness from it so that
    runs are reproducible and resumable), ``num_classes``, ``optimizer`` (the run's optimizer),
    ``attack_steps`` (the run's ``--attack-steps``, for schemes with an attack of their own).
    """

    model: nn.Module
    device: torch.device
    epoch: int
    batch: int
    epochs: int
    batches_per_epoch: int
    eps: dict[Norm, float]
    rng: torch.Generator
    num_classes: int
    optimizer: torch.optim.Optimizer
    attack_steps: int

    @abc.abstractmethod
    def attack(self, norm: Norm, x: Tensor, y: Tensor, model: nn.Module | None = None) -> AttackResult:
        """Attack ``(x, y)`` in ``norm`` with the run's training attack (:meth:`Attack.__call__`: the model in
        eval mode, BatchNorm statistics frozen, while it runs and back in its mode afterwards). The context
        gives the attack a generator seeded from the run's seed and saves the attack's state in checkpoints,
        and books the passes the result reports as attack cost."""

    @abc.abstractmethod
    def count_passes(self, forward: int = 0, backward: int = 0, *, images: int = 1, attack: bool = False) -> None:
        """Record forward/backward passes spent outside :meth:`attack` (for cost accounting): the update's by
        default, or, with ``attack=True``, those of an attack the scheme runs itself (MSD's steepest descent)."""

    @abc.abstractmethod
    def adversarial_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        """The run's outer loss per point (``--outer-loss``: cross-entropy at ``x_adv``, or TRADES)."""

    @abc.abstractmethod
    def lr_at(self, position: float) -> float:
        """The run's learning rate ``position`` epochs into training (the schedule the engine applies)."""

    @abc.abstractmethod
    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        """A fresh optimizer with the run's settings for another model (RAMP's clean copy, say)."""

    # Distributed runs (torchrun, docs/distributed.md). In one process all three are identities, so a
    # scheme that uses them runs unchanged there; a scheme that ignores them still trains under torchrun,
    # but its statistics and random choices are then each process's own.

    def reduce_sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over the processes of a distributed run (a copy in one process).

        Schemes sum their per-batch statistics with it (robust errors, counts) so that every process
        keeps the global ones and makes the same choice from them (E-AT's norm draw, say).
        """
        return tensor.clone()

    def global_sums(self, *values: Tensor | float) -> list[float]:
        """``values`` summed over the processes of a distributed run, as Python floats, in order.

        A tensor contributes one float per element (pass ``mask.sum()`` for a count, ``counts`` of shape
        ``(3,)`` for three); a number (the batch size) contributes one. Tensors stay on the device until
        the single host read at the end, so a scheme's per-batch statistics cost one synchronisation
        however many there are. In one process the values themselves.
        """
        device = next((v.device for v in values if isinstance(v, Tensor)), torch.device("cpu"))
        parts = [
            value.detach().reshape(-1).to(device=device, dtype=torch.float64)
            if isinstance(value, Tensor)
            # a fill on the device, not a copy from host memory (which would wait for the queued work)
            else torch.full((1,), float(value), dtype=torch.float64, device=device)
            for value in values
        ]
        return self.reduce_sum(torch.cat(parts)).tolist()

    def attack_autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The precision context for a training attack. By default (``--attack-precision fp32``) autocast is
        off inside it, as in both papers' reference code: gradients computed in bf16/fp16 are weaker and
        misreport the robust training error E-AT samples by. ``--attack-precision amp`` keeps the run's
        autocast. :meth:`attack` applies it; a scheme running an attack of its own (MSD) wraps it in this."""
        return contextlib.nullcontext()

    def update_autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The mixed-precision context for the forward pass of a scheme's own update (RAMP's natural copy):
        the run's bf16 autocast, or no autocast when the run's ``--amp`` is off or ``fp16`` (fp16 updates
        need a gradient scaler, which the engine keeps for its own update only)."""
        return contextlib.nullcontext()

    def global_mean_loss(self, loss: Tensor, n: int) -> Tensor:
        """``loss``, the mean over this process's ``n`` points, scaled so that backpropagating it through a
        distributed module (:meth:`distribute`) gives the gradient of the mean over every process's points,
        however the global batch was split. For a scheme's own updates (RAMP's natural copy); the engine
        does this for the loss :meth:`Scheme.loss` returns. ``loss`` itself in one process."""
        return loss

    def attack_view(self, model: nn.Module) -> nn.Module:
        """The module to attack for the ``model`` :meth:`Scheme.loss` received: without the
        DistributedDataParallel wrapper, whose gradient hooks attacks must not fire."""
        return model

    def distribute(self, module: nn.Module) -> nn.Module:
        """``module`` wrapped so that its updates average gradients over the processes (DDP), for a
        second model a scheme trains itself (RAMP's natural copy); ``module`` itself in one process."""
        return module


class Scheme(abc.ABC):
    """A training scheme: the loss of one batch, and optionally what happens around each epoch.

    The engine owns the loop: optimizer, learning-rate schedule, checkpoints, progress. For each batch
    it calls :meth:`loss` with the model in train mode and takes one optimizer step on the returned
    loss. A scheme that needs more than a per-batch loss overrides :meth:`run_epoch`.

    Subclasses set ``name``, ``description``, ``default_norms`` and may declare their options as a nested
    ``class Options(SchemeOptions)`` (:mod:`robustft.scheme_options`). ``__init__`` receives the training norms
    and the users' option values as keywords (``--option NAME=VALUE`` text, or Python values), checks them once
    and keeps them, typed, in ``self.options``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    default_norms: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2, Norm.L1)
    #: Smallest number of training norms the scheme makes sense with.
    min_norms: ClassVar[int] = 1
    #: The scheme's options: a :class:`SchemeOptions` subclass (none by default).
    Options: ClassVar[type[SchemeOptions]] = SchemeOptions
    #: True for a scheme that runs an attack of its own instead of ``ctx.attack`` (MSD): pre-flight then refuses
    #: ``--attack`` and ``--attack-option``, which it would not read; ``--attack-steps`` still sets its steps.
    own_attack: ClassVar[bool] = False
    #: This scheme's option values, checked (an instance of ``Options``).
    options: SchemeOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Caught when the plugin is imported, so its author reads it (robustft reports the plugin as failed).
        if isinstance(cls.__dict__.get("options"), Mapping):
            raise TypeError(
                f"scheme {cls.__qualname__} declares options as a dict of SchemeOption; plugin API 1.0 declares them "
                "as a nested `class Options(SchemeOptions)` of option() fields (docs/plugins.md, 'Scheme options')"
            )
        if not (isinstance(cls.Options, type) and issubclass(cls.Options, SchemeOptions)):
            raise TypeError(f"scheme {cls.__qualname__}'s Options must subclass SchemeOptions")

    def __init__(self, norms: Sequence[Norm], **options: Any) -> None:
        self.norms = tuple(norms)
        if len(self.norms) < self.min_norms:
            raise BadInputError(f"Scheme {self.name!r} needs at least {self.min_norms} norms, got {len(self.norms)}.")
        self.options = self.Options.build(options, self.name)

    def threat_model_warnings(self, eps: Mapping[Norm, Fraction], dim: int) -> list[str]:
        """Sentences to warn with before training, given the radii of the whole threat model (the data set's
        defaults and ``--eps``, every norm, trained or not) and the input dimension; none by default."""
        return []

    @abc.abstractmethod
    def loss(self, model: nn.Module, x: Tensor, y: Tensor, ctx: TrainContext) -> tuple[Tensor, dict[str, float]]:
        """The loss to minimise on this batch and a dict of numbers to log (floats)."""

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Called before the first batch of every epoch."""

    def on_epoch_end(self, ctx: TrainContext) -> dict[str, float]:
        """Called after the last batch of every epoch; returns numbers to log."""
        return {}

    def run_epoch(self, ctx: TrainContext, batches: Iterable[tuple[Tensor, Tensor]], step: Callable[[Tensor, Tensor], None]) -> None:
        """Run one epoch. The default calls ``step(x, y)`` (loss, backward, optimizer step) per batch."""
        for x, y in batches:
            step(x, y)

    def state_dict(self) -> dict[str, Any]:
        """State to save in checkpoints (plain Python numbers, lists, dicts and tensors only)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


# ------------------------------------------------------------------------------------ models, data


@dataclass(frozen=True)
class ModelInfo:
    """A model a zoo can load."""

    name: str
    dataset: str
    threat: Norm | None = None
    aliases: tuple[str, ...] = ()
    description: str = ""
    #: Learning rate the papers used to fine-tune it (0.05 for small nets, 0.01 for large ones).
    finetune_lr: float | None = None


class ModelZoo(abc.ABC):
    """A source of models. ``load`` returns an ``nn.Module`` that takes ``[0, 1]`` inputs."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def models(self) -> list[ModelInfo]:
        """The models this zoo knows (may be empty for zoos that take any name or a path)."""

    def suggestions(self, name: str) -> dict[str, str]:
        """Names (and aliases) worth suggesting for an unknown ``name``, each mapped to its canonical name.

        A zoo whose full listing is expensive (an import of seconds) may return a cheap subset when
        ``name`` cannot be one of its own.
        """
        return {n: m.name for m in self.models() for n in (m.name, *m.aliases)}

    def resolve(self, name: str) -> ModelInfo | None:
        """The :class:`ModelInfo` for ``name`` or one of its aliases, or None."""
        key = name.lower()
        for info in self.models():
            if key == info.name.lower() or key in (a.lower() for a in info.aliases):
                return info
        return None

    @abc.abstractmethod
    def load(self, info: ModelInfo, *, device: torch.device, dataset: DatasetPlugin | None = None, **options: Any) -> nn.Module:
        """The model on ``device``, taking ``[0, 1]`` inputs.

        ``dataset`` is the configured data set the model will see (its ``num_classes`` and
        ``input_shape`` size a freshly built architecture); ``options`` are the user's non-empty
        ``model_dir``, ``checkpoint``, ``arch`` and ``download``. Refuse an option the zoo cannot honour
        with a :class:`robustft.errors.BadInputError` rather than ignoring it.
        """

    def describe_architecture(self, info: ModelInfo, *, dataset: DatasetPlugin, **options: Any) -> dict[str, Any] | None:
        """The network of ``info`` (loaded with ``options``, for ``dataset``) as ``robustft export`` records it in the
        exported folder's config.json, for the file zoo to rebuild without this zoo (docs/export.md), or None (the
        default): this zoo's networks cannot be described so, and export refuses their runs in one sentence.

        A description is ``{"architecture": NAME, "architecture_options": {...}, "normalization": None or
        {"mean": [...], "std": [...]}}``: ``NAME`` a built-in architecture of plugins/robustft_plugins/zoos/architectures.py,
        ``timm:NAME`` or ``torchvision:ARCH``, whose state dict, with ``normalization`` folded in as the file zoo
        does, must be key for key that of the network :meth:`load` returns (export checks it).
        """
        return None


class DatasetPlugin(abc.ABC):
    """A data set: train and test splits of ``(image in [0,1], label)`` pairs, and its threat model defaults.

    Users pass options such as ``--data-dir``, ``--image-size``, ``--download`` or ``--extra-data``; the
    core hands the non-empty ones to :meth:`configure`, which returns a configured copy (so
    ``num_classes`` and ``input_shape`` may depend on them). ``NAME:VALUE`` on the command line
    (``imagefolder:/data/pets``) passes ``path=VALUE``. Options not in ``accepted_options`` are refused
    with one sentence.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    num_classes: int
    input_shape: tuple[int, int, int]
    #: Default radius per norm (the papers' radii for the data set: E-AT Sec. 4, RAMP Sec. 5.1).
    default_eps: Mapping[Norm, Fraction]
    #: Option names :meth:`configure` accepts (``data_dir``, ``image_size``, ``download``, ``extra_data``, ``path``).
    accepted_options: ClassVar[tuple[str, ...]] = ()
    #: The data set's fine-tuning recipe: :class:`robustft.config.FinetuneConfig` settings (``epochs``, ``lr``,
    #: ``batch_size``, ``weight_decay``, ``attack_steps`` as a number or a per-norm table, ...) that replace
    #: robustft's defaults for this data set; a config file, the command line and the model's own
    #: fine-tuning rate still win. ``recipe_source`` says where it comes from (a paper and section).
    recipe: ClassVar[Mapping[str, Any]] = {}
    recipe_source: ClassVar[str] = ""
    options: Mapping[str, Any] = {}

    def configure(self, **options: Any) -> DatasetPlugin:
        """A copy of this data set with ``options`` applied (override to validate or derive attributes)."""
        for key in options:
            if key not in self.accepted_options:
                flag = "NAME:PATH" if key == "path" else "--" + key.replace("_", "-")
                raise BadInputError(f"Data set {self.name!r} does not take {flag}.")
        clone = copy.copy(self)
        clone.options = dict(options)
        return clone

    @abc.abstractmethod
    def train(self, *, augment: bool = True) -> torch.utils.data.Dataset: ...

    @abc.abstractmethod
    def test(self) -> torch.utils.data.Dataset: ...

    @property
    def dim(self) -> int:
        c, h, w = self.input_shape
        return c * h * w


__all__ = [
    "Attack",
    "AttackFactory",
    "AttackResult",
    "DatasetPlugin",
    "EvalSuite",
    "ModelInfo",
    "ModelZoo",
    "Scheme",
    "SchemeOption",
    "SchemeOptions",
    "TrainContext",
    "option",
]
