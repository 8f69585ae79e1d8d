"""The attack contract: what a training or evaluation attack implements (``perturb``), what it returns
(:class:`AttackResult`), and the factory that builds one per norm and radius (:class:`AttackFactory`).

Part of the contracts of :mod:`robustft.contracts`, which re-exports every name; the template method
``Attack.__call__`` owns the model's mode, the parameters' gradient flags and the check of the result, so
that an attack implements the perturbation only (docs/plugins.md, "Attacks").
"""

from __future__ import annotations

import abc
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from robustft.errors import BadInputError, UnknownNameError
from robustft.norms import Norm
from robustft.registry import PluginFault


@dataclass
class AttackResult:
    """What an attack returns for a batch ``(x, y)``.

    ``x_adv`` lies in the attack's lp ball around ``x`` and in ``[0, 1]``. ``loss`` is the per-point
    value of the attack's objective at ``x_adv`` (the best one found). ``success`` is a boolean per point:
    True when some iterate of the attack was misclassified. That is the "robust training error" E-AT's
    sampling uses; evaluation never trusts it and re-checks ``x_adv`` itself.

    ``forward_passes`` and ``backward_passes`` are the passes through the model the attack made, per image of
    the batch: a forward pass over the whole batch counts 1, and so does one over part of it (a restart on the
    points still robust), so the numbers bound an image's cost from above. The training context books
    ``N * forward_passes`` and ``N * backward_passes`` (metrics.jsonl's ``passes``, the cost axis of
    ``robustft compare``). :meth:`Attack.__call__` refuses a result without them; only a result made outside an
    attack (a scripted one in a scheme's tests) may leave them ``None``.
    """

    x_adv: Tensor
    loss: Tensor
    success: Tensor
    forward_passes: int | None = None
    backward_passes: int | None = None


#: The modes :attr:`Attack.model_mode` may name.
ATTACK_MODEL_MODES = ("eval", "train")


class Attack(abc.ABC):
    """An attack built for one norm and one radius, called on ``(model, x, y)``.

    A subclass implements :meth:`perturb` only. Calling the attack runs the template :meth:`__call__`: it puts
    the model in :attr:`model_mode` (eval: BatchNorm statistics frozen, dropout off) with its parameters'
    ``requires_grad`` off, runs :meth:`perturb`, puts the mode of every module and every flag back as they
    were (also when :meth:`perturb` raises) and checks the result. Randomness comes from :meth:`generator`
    (during training a generator the context seeds from the run's seed and saves in checkpoints, see
    :meth:`state_dict`), so runs with a random-start attack are reproducible and resume bit for bit.
    """

    norm: Norm
    eps: float
    #: The model's mode while :meth:`perturb` runs: ``"eval"`` (what adversarial training and evaluation attack)
    #: or ``"train"``.
    model_mode: ClassVar[str] = "eval"
    _generator: torch.Generator | None = None
    _generator_given: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__call__" in cls.__dict__:
            raise TypeError(
                f"Attack {cls.__name__} overrides __call__; since plugin API 1.0 an attack implements "
                "perturb(model, x, y) instead, and Attack.__call__ sets the model's mode around it (docs/plugins.md)."
            )

    @abc.abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """The attack itself: ``model`` is in :attr:`model_mode` with parameter gradients off; return an
        :class:`AttackResult` with ``x_adv`` in the ball and ``[0, 1]`` and the passes made per image."""

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> AttackResult:
        """:meth:`perturb` with ``model`` in :attr:`model_mode` and its parameters' ``requires_grad`` off (attacks
        take gradients with respect to the input only, and frozen parameters spare the memory autograd would
        keep for theirs); every module's mode and every flag is restored afterwards, also on an exception.
        Returns the checked result. Not meant to be overridden."""
        if self.model_mode not in ATTACK_MODEL_MODES:
            raise self._fault(f"declares model_mode {self.model_mode!r}, not one of {', '.join(ATTACK_MODEL_MODES)}")
        modes = [(module, module.training) for module in model.modules()]
        params = list(model.parameters())
        flags = [p.requires_grad for p in params]
        try:
            model.train(self.model_mode == "train")
            for p in params:
                p.requires_grad_(False)
            result = self.perturb(model, x, y)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
            for module, training in modes:
                module.training = training
        return self._checked(result, x)

    # ------------------------------------------------------------------------------ randomness and state

    def use_generator(self, generator: torch.Generator) -> None:
        """Draw this attack's randomness from ``generator`` (on the device the attack runs on). The training
        context gives each training attack one, seeded from the run's seed."""
        self._generator, self._generator_given = generator, True

    def generator(self, device: torch.device | str) -> torch.Generator:
        """The generator to draw from for inputs on ``device``: the one given with :meth:`use_generator`, else
        one made on first use and seeded from torch's global generator (so that a caller that seeds torch, as
        the evaluator does before each attack, stays reproducible)."""
        device = torch.device(device)
        current = self._generator
        if current is None or (not self._generator_given and current.device.type != device.type):
            seed = int(torch.randint(0, 2**62, (1,)))  # torch's global CPU generator: no device is waited for
            self._generator = current = torch.Generator(device=device).manual_seed(seed)
        return current

    def state_dict(self) -> dict[str, Any]:
        """State to save in training checkpoints (plain Python values and tensors): by default the state of the
        generator (see :meth:`generator`), so that a resumed run draws what the uninterrupted one would have.
        An attack with state of its own extends the dict returned by ``super().state_dict()``."""
        if self._generator is None:
            return {}
        return {"generator": self._generator.get_state(), "generator_device": self._generator.device.type}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned. A generator state saved on another kind of device (a run
        resumed on the CPU that started on a GPU) is left out: the generator keeps its seed."""
        saved = state.get("generator")
        if saved is None:
            return
        generator = self._generator
        if generator is None:
            generator = self.generator(state.get("generator_device", "cpu"))
        if generator.device.type == state.get("generator_device", generator.device.type):
            generator.set_state(saved)

    # ------------------------------------------------------------------------------------------ checks

    def _fault(self, problem: str) -> PluginFault:
        cls = type(self)
        return PluginFault(f"Attack {cls.__name__} (module {cls.__module__}) is faulty: it {problem}.")

    def _checked(self, result: Any, x: Tensor) -> AttackResult:
        """``result`` if it keeps the contract, else a :class:`PluginFault` saying what is wrong. Shapes and
        types only: nothing here reads a tensor's value, which on a GPU would wait for the queued work."""
        if not isinstance(result, AttackResult):
            raise self._fault(f"returned {type(result).__name__} from perturb(), not an AttackResult")
        n = x.shape[0]
        if not isinstance(result.x_adv, Tensor) or result.x_adv.shape != x.shape:
            raise self._fault(f"returned x_adv of shape {_shape(result.x_adv)} for inputs of shape {tuple(x.shape)}")
        if not isinstance(result.loss, Tensor) or result.loss.shape != (n,):
            raise self._fault(f"returned loss of shape {_shape(result.loss)}, not ({n},)")
        if not isinstance(result.success, Tensor) or result.success.shape != (n,) or result.success.dtype != torch.bool:
            raise self._fault(f"returned success of shape {_shape(result.success)}, not a boolean tensor of shape ({n},)")
        for field_name in ("forward_passes", "backward_passes"):
            value = getattr(result, field_name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise self._fault(f"returned {field_name}={value!r}, not the number of passes it made per image")
            setattr(result, field_name, int(value))
        return result


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


class AttackFactory(abc.ABC):
    """A family of attacks (``apgd``) registered under a name; builds :class:`Attack` objects.

    ``build`` receives the norm, the radius, the number of steps and the family's own keyword options (the
    user's ``--attack-option NAME=VALUE`` and ``attack_options`` in a config file, or a suite's settings).
    ``purpose`` is ``"train"`` (cheap and deterministic: the setting adversarial training uses) or
    ``"eval"`` (the strongest setting the family has). ``options`` names the options ``build`` accepts, each
    with a one-line help; ``build`` calls :meth:`check_options` first, which refuses any other in one sentence
    naming the closest valid ones.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    norms: ClassVar[tuple[Norm, ...]] = (Norm.L1, Norm.L2, Norm.LINF)
    options: ClassVar[Mapping[str, str]] = {}

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse, in one sentence, an option not in :attr:`options`."""
        unknown = sorted(set(options) - set(self.options))
        if not unknown:
            return
        if not self.options:
            raise BadInputError(f"Attack {self.name!r} takes no options, got {unknown[0]!r}.")
        raise UnknownNameError(f"option of attack {self.name!r}", unknown[0], self.options)

    @abc.abstractmethod
    def build(self, norm: Norm, eps: float, *, steps: int, purpose: str = "train", **options: Any) -> Attack: ...
