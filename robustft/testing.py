"""Helpers for testing robustft plugins in their own test suites (what pytest's ``pytester`` is to pytest plugins).

    from robustft.testing import ScriptedContext, check_attack, check_scheme, run_cli, tiny_dataset, tiny_model

    def test_my_scheme_keeps_the_contract():
        check_scheme(MyScheme)                      # loss() on a tiny batch: a differentiable scalar and a dict

    def test_my_scheme_attacks_once_per_batch():
        ctx = ScriptedContext(error_rate={Norm.LINF: 0.5})
        MyScheme((Norm.LINF,)).loss(tiny_model(), *tiny_batch(), ctx)
        assert ctx.calls == [(Norm.LINF, 8)]

    def test_my_attack_keeps_the_contract():
        check_attack(MyAttack(Norm.LINF, 0.1))      # in the ball and box, passes reported, resumable

    def test_the_cli_lists_it():
        assert "my-scheme" in run_cli("list", "schemes").stdout

Everything is small, offline and seeded: a model of a few hundred weights, a data set of random 4x4 images, a
training context whose attacks are scripted (no engine, no real attack), and the command line run in-process.
Wrap them in ``@pytest.fixture`` as your suite prefers; robustft's own tests use the same kinds of helpers.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor, nn

from robustft.contracts import Attack, AttackResult, DatasetPlugin, Scheme, TrainContext
from robustft.lp import check_in_ball_and_box
from robustft.norms import Norm

#: The shape of the tiny images: one channel, 4 x 4 pixels.
SHAPE = (1, 4, 4)
CLASSES = 3


def tiny_model(num_classes: int = CLASSES, shape: Sequence[int] = SHAPE, seed: int = 0) -> nn.Module:
    """A linear classifier on flattened images, seeded (a few dozen weights; trains and attacks in microseconds)."""
    generator = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.5)
    return model


def tiny_batch(n: int = 8, num_classes: int = CLASSES, shape: Sequence[int] = SHAPE, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``n`` random images in [0, 1] and labels, seeded."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=generator), torch.randint(0, num_classes, (n,), generator=generator)


class TinyData(DatasetPlugin):
    """An in-memory data set of random images (see :func:`tiny_dataset`)."""

    name = "tiny"
    description = "random 4x4 images for plugin tests"
    default_eps = {Norm.LINF: Fraction(1, 10), Norm.L2: Fraction(1, 2), Norm.L1: Fraction(2)}

    def __init__(self, n: int = 32, num_classes: int = CLASSES, shape: Sequence[int] = SHAPE, seed: int = 0) -> None:
        self.num_classes, self.input_shape = num_classes, tuple(shape)
        self._train = tiny_batch(n, num_classes, shape, seed)
        self._test = tiny_batch(n, num_classes, shape, seed + 1)

    def train(self, *, augment: bool = True) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(*self._train)

    def test(self) -> torch.utils.data.Dataset:
        return torch.utils.data.TensorDataset(*self._test)


def tiny_dataset(n: int = 32, num_classes: int = CLASSES, shape: Sequence[int] = SHAPE, seed: int = 0) -> DatasetPlugin:
    """A :class:`robustft.contracts.DatasetPlugin` of ``n`` random training and ``n`` test images."""
    return TinyData(n, num_classes, shape, seed)


class ScriptedContext(TrainContext):
    """A training context for unit tests of a scheme's ``loss``: no engine, attacks scripted, every call recorded.

    ``attack(norm, x, y)`` returns ``script(norm, x, y)`` when a ``script`` is given, else the clean points with
    ``success`` set on the first ``error_rate[norm]`` fraction of them. ``calls`` lists ``(norm, batch size)``
    per attack and ``passes`` the ``(forward, backward, images)`` a scheme booked with :meth:`count_passes`.
    """

    def __init__(
        self,
        *,
        error_rate: Mapping[Norm, float] | None = None,
        script: Callable[[Norm, Tensor, Tensor], AttackResult] | None = None,
        eps: Mapping[Norm, float] | None = None,
        model: nn.Module | None = None,
        num_classes: int = CLASSES,
        epochs: int = 1,
        batches_per_epoch: int = 1,
        attack_steps: int = 10,
        lr: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.error_rate = dict(error_rate or {})
        self.script = script
        self.eps = dict(eps or {n: float(r) for n, r in TinyData.default_eps.items()})
        self.model = model if model is not None else tiny_model(num_classes)
        self.device = torch.device("cpu")
        self.epoch = self.batch = 0
        self.epochs, self.batches_per_epoch, self.attack_steps = epochs, batches_per_epoch, attack_steps
        self.rng = torch.Generator().manual_seed(seed)
        self.num_classes, self.lr = num_classes, lr
        self.optimizer = self.make_optimizer(self.model)
        self.calls: list[tuple[Norm, int]] = []
        self.passes: list[tuple[int, int, int]] = []  # (forward, backward, images) of each count_passes
        self.attack_passes: list[tuple[int, int, int]] = []  # the same, booked as a scheme's own attack

    def attack(self, norm: Norm, x: Tensor, y: Tensor, model: nn.Module | None = None) -> AttackResult:
        self.calls.append((norm, int(x.shape[0])))
        if self.script is not None:
            return self.script(norm, x, y)
        n = x.shape[0]
        success = torch.arange(n) < round(self.error_rate.get(norm, 0.0) * n)
        return AttackResult(x_adv=x.clone(), loss=torch.zeros(n), success=success)

    def count_passes(self, forward: int = 0, backward: int = 0, *, images: int = 1, attack: bool = False) -> None:
        (self.attack_passes if attack else self.passes).append((forward, backward, images))

    def adversarial_loss(self, model: nn.Module, x: Tensor, x_adv: Tensor, y: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(model(x_adv), y, reduction="none")

    def lr_at(self, position: float) -> float:
        return self.lr

    def make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=self.lr)


def check_scheme(scheme_cls: type[Scheme], norms: Sequence[Norm] | None = None, batches: int = 3, **options: Any) -> ScriptedContext:
    """Run ``scheme_cls``'s epoch hooks and ``loss`` on tiny batches, as the engine would, and assert its contract:
    ``loss`` returns a scalar tensor that gradients flow through and a dict of logs, and the epoch hooks run.
    Returns the context, whose ``calls`` and ``passes`` a test can inspect further."""
    scheme = scheme_cls(tuple(norms or scheme_cls.default_norms), **options)
    ctx = ScriptedContext(error_rate={n: 0.5 for n in Norm})
    model = ctx.model
    scheme.on_epoch_start(ctx)
    for index in range(batches):
        ctx.batch = index
        x, y = tiny_batch(seed=index)
        loss, logs = scheme.loss(model, x, y, ctx)
        assert isinstance(loss, Tensor) and loss.dim() == 0, f"{scheme_cls.__name__}.loss must return a scalar tensor"
        assert isinstance(logs, dict), f"{scheme_cls.__name__}.loss must return a dict of logs beside the loss"
        assert loss.requires_grad, f"{scheme_cls.__name__}.loss does not depend on the model"
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert any(p.grad is not None for p in model.parameters()), f"{scheme_cls.__name__}.loss does not depend on the model"
    stats = scheme.on_epoch_end(ctx)
    assert stats is None or isinstance(stats, dict), f"{scheme_cls.__name__}.on_epoch_end must return a dict or None"
    return ctx


def check_attack(attack: Attack, model: nn.Module | None = None, batch: tuple[Tensor, Tensor] | None = None, seed: int = 0) -> AttackResult:
    """Run ``attack`` as a training context would (with a seeded generator, the model in train mode before and after)
    and assert its contract: ``x_adv`` in the attack's ball and in [0, 1], the passes reported, the model's mode and
    parameters untouched, and its :meth:`~robustft.contracts.Attack.state_dict` enough to replay a call bit for bit
    (what a resumed run relies on). Returns the result of the first call, for further checks."""
    model = model if model is not None else tiny_model()
    x, y = batch if batch is not None else tiny_batch()
    name = type(attack).__name__
    attack.use_generator(torch.Generator().manual_seed(seed))
    model.train()
    before = {key: value.detach().clone() for key, value in model.state_dict().items()}
    state = attack.state_dict()
    result = attack(model, x, y)  # the template checks shapes, types and the passes
    assert model.training, f"{name} left the model in eval mode"
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items()), f"{name} changed the model"
    assert bool(check_in_ball_and_box(result.x_adv, x, attack.norm, float(attack.eps)).all()), (
        f"{name} returned points outside its {attack.norm.label} ball of radius {attack.eps} or [0, 1]"
    )
    attack.load_state_dict(state)
    again = attack(model, x, y)
    assert torch.equal(again.x_adv, result.x_adv) and torch.equal(again.success, result.success), (
        f"{name} gives another result after load_state_dict(state_dict()): a resumed run would not continue bit for bit"
    )
    return result


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """``robustft ARGS...`` run in this process (its installed plugins, yours included): exit code and output."""
    from robustft.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return CliResult(code, out.getvalue(), err.getvalue())


__all__ = [
    "CliResult",
    "ScriptedContext",
    "TinyData",
    "check_attack",
    "check_scheme",
    "run_cli",
    "tiny_batch",
    "tiny_dataset",
    "tiny_model",
]
