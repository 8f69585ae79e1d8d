"""APGD: outputs in ball and box, model left alone, honest losses and flags, cost, and strength vs AutoAttack."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import count_host_syncs
from sklearn.datasets import load_digits
from torch import nn

from robustft.errors import BadInputError
from robustft.lp import check_in_ball_and_box
from robustft.norms import Norm
from robustft_plugins.attacks.apgd import APGD, APGDFactory, dlr_loss, dlr_targeted_loss, register_attacks

NORMS = (Norm.LINF, Norm.L2, Norm.L1)
pytestmark = pytest.mark.usefixtures("one_thread")


#: Radii on 8x8 digits in [0, 1] where a clean MLP loses roughly half of its accuracy.
EPS = {Norm.LINF: 0.07, Norm.L2: 0.4, Norm.L1: 1.2}


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    images, labels = load_digits(return_X_y=True)
    x = torch.tensor(images / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return x[:1500], y[:1500], x[1500:1700], y[1500:1700]


@pytest.fixture(scope="module")
def trained(digits: tuple[torch.Tensor, ...]) -> nn.Module:
    """A clean MLP on digits (about 98% test accuracy after a fraction of a second of training)."""
    x_train, y_train, _, _ = digits
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), y_train).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for p in model.parameters():
        p.grad = None
    return model.eval()


def random_cnn(seed: int = 1) -> nn.Module:
    """An untrained CNN with BatchNorm, Dropout and one frozen layer (to see flags survive)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Flatten(),
        nn.Linear(8 * 64, 32),
        nn.ReLU(),
        nn.Linear(32, 10),
    )
    model[5].weight.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def batch(digits: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x_test, y_test = digits
    return x_test[:48], y_test[:48]


def build(norm: Norm, purpose: str = "train", steps: int = 10, **options: object) -> APGD:
    return APGDFactory().build(norm, EPS[norm], steps=steps, purpose=purpose, **options)


# ----------------------------------------------------------------------------------------------- geometry


CONFIGS = [
    ("train", {}),
    ("eval", {}),
    ("eval", {"loss": "dlr", "restarts": 2}),
    ("eval", {"loss": "dlr-targeted", "n_target_classes": 3}),
]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("purpose,options", CONFIGS)
@pytest.mark.parametrize("which", ["trained", "random"])
def test_outputs_lie_in_ball_and_box(
    norm: Norm, purpose: str, options: dict, which: str, trained: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
) -> None:
    model = trained if which == "trained" else random_cnn().eval()
    x, y = batch
    result = build(norm, purpose, **options)(model, x, y)
    assert result.x_adv.shape == x.shape and result.x_adv.dtype == x.dtype
    assert result.loss.shape == (len(x),) and result.success.dtype == torch.bool
    assert bool(check_in_ball_and_box(result.x_adv, x, norm, EPS[norm]).all())


@pytest.mark.parametrize("steps", [1, 2, 4, 10])
def test_large_radius_schedule_stays_in_the_true_ball(steps: int, trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    attack = build(Norm.L1, "eval", steps=steps, use_largereps=True, restarts=2)
    result = attack(trained, x, y)
    assert bool(check_in_ball_and_box(result.x_adv, x, Norm.L1, EPS[Norm.L1]).all())
    # Every stage costs its steps plus one forward pass; stages shrink so the last one keeps a step.
    stages = 3 if steps >= 3 else 1
    assert result.backward_passes % steps == 0
    runs = result.backward_passes // steps
    assert result.forward_passes == runs * (steps + stages)


# ------------------------------------------------------------------------------------ the model is left alone


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_mode_parameters_flags_and_grads_untouched(norm: Norm, mode: str, batch: tuple) -> None:
    model = random_cnn()
    model.train(mode == "train")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    x, y = batch
    build(norm, "eval", restarts=2)(model, x, y)
    assert model.training == (mode == "train")
    assert all(m.training == (mode == "train") for m in model.modules())
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name
        assert p.requires_grad == flags[name], name
        assert p.grad is None, name


def test_frozen_model_is_attacked_and_stays_frozen(trained: nn.Module, batch: tuple) -> None:
    """The evaluator switches requires_grad off on every parameter; gradients reach the input anyway."""
    x, y = batch
    for p in trained.parameters():
        p.requires_grad_(False)
    try:
        result = build(Norm.LINF)(trained, x, y)
        assert not any(p.requires_grad for p in trained.parameters())
        with torch.no_grad():
            clean = F.cross_entropy(trained(x), y, reduction="none")
        assert float(result.loss.mean()) > float(clean.mean())
    finally:
        for p in trained.parameters():
            p.requires_grad_(True)


def test_existing_parameter_grads_are_not_accumulated(trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    for p in trained.parameters():
        p.grad = torch.ones_like(p)
    try:
        build(Norm.LINF)(trained, x, y)
        assert all(torch.equal(p.grad, torch.ones_like(p)) for p in trained.parameters())
    finally:
        for p in trained.parameters():
            p.grad = None


def test_works_under_no_grad(trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    with torch.no_grad():
        result = build(Norm.L2)(trained, x, y)
    assert bool((result.loss > F.cross_entropy(trained(x), y, reduction="none") - 1e-6).all())


# --------------------------------------------------------------------------------- loss, success, x_adv


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("purpose,loss", [("train", "ce"), ("eval", "ce"), ("eval", "dlr"), ("train", "dlr")])
def test_returned_loss_is_the_loss_at_x_adv(norm: Norm, purpose: str, loss: str, trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    result = build(norm, purpose, loss=loss)(trained, x, y)
    with torch.no_grad():
        logits = trained(result.x_adv)
    expected = F.cross_entropy(logits, y, reduction="none") if loss == "ce" else dlr_loss(logits, y)
    assert torch.allclose(result.loss, expected, atol=1e-5, rtol=1e-5)


def test_targeted_loss_is_the_loss_at_x_adv_for_some_target(trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    result = build(Norm.LINF, "eval", loss="dlr-targeted", n_target_classes=4)(trained, x, y)
    with torch.no_grad():
        logits = trained(result.x_adv)
        ranked = trained(x).argsort(dim=1, descending=True)
    candidates = torch.stack([dlr_targeted_loss(logits, y, ranked[:, r]) for r in range(1, 5)], dim=1)
    assert bool(((candidates - result.loss[:, None]).abs().amin(dim=1) < 1e-5).all())


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("purpose", ["train", "eval"])
def test_success_flags_are_consistent(norm: Norm, purpose: str, trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    result = build(norm, purpose)(trained, x, y)
    with torch.no_grad():
        wrong = trained(result.x_adv).argmax(1) != y
        clean_wrong = trained(x).argmax(1) != y
    assert bool(result.success[wrong].all())  # misclassified at x_adv implies success
    if purpose == "train":
        assert bool(result.success[clean_wrong].all())  # no random start: iterate 0 is x itself
    else:
        assert torch.equal(result.success, wrong)  # eval returns the misclassified iterate where there is one
    assert 0 < int(result.success.sum()) < len(x)


def test_train_attack_never_lowers_the_clean_loss(trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    with torch.no_grad():
        clean = F.cross_entropy(trained(x), y, reduction="none")
    for norm in NORMS:
        result = build(norm)(trained, x, y)
        assert bool((result.loss >= clean - 1e-6).all())
        assert float(result.loss.mean()) > float(clean.mean())


def test_dlr_is_positive_exactly_when_misclassified() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [1.0, 2.0, 0.0, -1.0]])
    y = torch.tensor([0, 0])
    loss = dlr_loss(logits, y)
    assert loss[0] < 0 < loss[1]
    assert math.isclose(float(loss[1]), 1.0 / 2.0, rel_tol=1e-6)  # (2 - 1) / (2 - 0)
    # Shift- and scale-invariant.
    assert torch.allclose(dlr_loss(3 * logits + 7, y), loss)
    target = torch.tensor([1, 1])
    assert torch.allclose(dlr_targeted_loss(3 * logits + 7, y, target), dlr_targeted_loss(logits, y, target))


# ----------------------------------------------------------------------------------- seeds and options


def test_deterministic_with_seed(trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    for norm in NORMS:
        a = build(norm, "eval", seed=5)(trained, x, y)
        b = build(norm, "eval", seed=5)(trained, x, y)
        c = build(norm, "eval", seed=6)(trained, x, y)
        assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.loss, b.loss) and torch.equal(a.success, b.success)
        assert not torch.equal(a.x_adv, c.x_adv)


@pytest.mark.parametrize(
    "options",
    [
        {"losss": "ce"},
        {"loss": "cw"},
        {"restarts": 0},
        {"restarts": 1.5},
        {"topk": 0.0},
        {"random_start": "yes"},
        {"seed": "1"},
        {"n_target_classes": 0},
    ],
)
def test_bad_options_raise_bad_input(options: dict) -> None:
    with pytest.raises(BadInputError) as info:
        APGDFactory().build(Norm.L1, 1.0, steps=5, **options)
    assert info.value.message.endswith((".", "?")) and "\n" not in info.value.message  # one sentence


def test_bad_build_arguments_raise_bad_input() -> None:
    factory = APGDFactory()
    with pytest.raises(BadInputError):
        factory.build(Norm.LINF, 0.1, steps=5, use_largereps=True)
    with pytest.raises(BadInputError):
        factory.build(Norm.LINF, 0.1, steps=5, purpose="test")
    with pytest.raises(BadInputError):
        factory.build(Norm.LINF, 0.1, steps=0)
    with pytest.raises(BadInputError):
        factory.build(Norm.LINF, -0.1, steps=5)


def test_exact_radii_and_numpy_scalars_are_accepted() -> None:
    attack = APGDFactory().build(Norm.LINF, Fraction(8, 255), steps=np.int64(5), seed=np.int64(2), topk=np.float32(0.1))
    assert (attack.eps, attack.steps, attack.seed) == (8 / 255, 5, 2)
    assert type(attack.eps) is float and type(attack.steps) is int


def test_purpose_defaults() -> None:
    train = APGDFactory().build(Norm.L1, 1.0, steps=10)
    settings = (train.loss, train.restarts, train.random_start, train.topk, train.use_largereps)
    assert settings == ("ce", 1, False, 0.05, False)
    evaluation = APGDFactory().build(Norm.L1, 1.0, steps=10, purpose="eval")
    assert (evaluation.random_start, evaluation.topk, evaluation.prefer_misclassified) == (True, 0.2, True)


def test_dlr_needs_three_classes() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    x, y = torch.rand(3, 1, 2, 2), torch.tensor([0, 1, 0])
    for loss in ("dlr", "dlr-targeted"):
        with pytest.raises(BadInputError):
            APGDFactory().build(Norm.LINF, 0.1, steps=3, loss=loss)(model, x, y)
    result = APGDFactory().build(Norm.LINF, 0.1, steps=3)(model, x, y)
    assert bool(check_in_ball_and_box(result.x_adv, x, Norm.LINF, 0.1).all())


def test_hook_registers_the_factory() -> None:
    registered: list = []
    register_attacks(registered.append)
    assert len(registered) == 1 and registered[0].name == "apgd"


# ------------------------------------------------------------------------------------------------ cost


class Counting(nn.Module):
    """Counts the forward calls and the backward passes that reach the input."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.forwards = 0
        self.backwards = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += 1
        if x.requires_grad:
            x.register_hook(self._seen)
        return self.inner(x)

    def _seen(self, grad: torch.Tensor) -> None:
        self.backwards += 1


@pytest.mark.parametrize("norm", NORMS)
def test_n_steps_cost_n_plus_one_forward_and_n_backward(norm: Norm, trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    model = Counting(trained)
    attack = build(norm, "train", steps=7)
    result = attack(model, x, y)
    assert (model.forwards, model.backwards) == (8, 7)
    assert (result.forward_passes, result.backward_passes) == (8, 7)


def test_restarts_and_targets_attack_only_unbroken_points(trained: nn.Module, batch: tuple) -> None:
    x, y = batch
    model = Counting(trained)
    wrong_labels = (trained(x).argmax(1) + 1) % 10  # every point is misclassified from the start
    attack = build(Norm.LINF, "eval", steps=5, restarts=4)
    result = attack(model, x, wrong_labels)
    assert bool(result.success.all())
    assert (model.forwards, result.forward_passes, result.backward_passes) == (6, 6, 5)
    targeted = build(Norm.LINF, "eval", steps=5, loss="dlr-targeted")
    model.forwards = 0
    result = targeted(model, x, wrong_labels)
    assert (model.forwards, result.forward_passes, result.backward_passes) == (1, 1, 0)


# ------------------------------------------------------------------------------------ vs AutoAttack


@pytest.mark.parametrize("norm", NORMS)
def test_as_strong_as_autoattack_apgd_ce(norm: Norm, trained: nn.Module, digits: tuple) -> None:
    """On 200 digits, 20 steps, one run: ours breaks at least as many points as pyautoattack, minus 1%."""
    autopgd = pytest.importorskip("pyautoattack.autopgd_base")
    _, _, x, y = digits
    steps, eps = 20, EPS[norm]
    ours = APGDFactory().build(norm, eps, steps=steps, purpose="eval", random_start=False)(trained, x, y)
    assert bool(check_in_ball_and_box(ours.x_adv, x, norm, eps).all())
    reference = autopgd.APGDAttack(trained, norm=norm.autoattack_name, eps=eps, n_iter=steps, n_restarts=1, loss="ce", device="cpu", seed=0)
    theirs = reference.perturb(x.clone(), y.clone())
    with torch.no_grad():
        broken_ours = int((trained(ours.x_adv).argmax(1) != y).sum())
        broken_theirs = int((trained(theirs).argmax(1) != y).sum())
        clean_wrong = int((trained(x).argmax(1) != y).sum())
    # The radii are chosen so that the comparison means something: neither almost none nor almost all.
    assert 0.2 * len(x) < broken_theirs < 0.8 * len(x)
    assert broken_ours > clean_wrong
    assert broken_ours >= broken_theirs - len(x) // 100


# ------------------------------------------------------------------------------------ host synchronisation


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize(
    "purpose,options",
    [
        ("train", {}),
        ("eval", {"restarts": 2}),
        ("eval", {"loss": "dlr-targeted", "n_target_classes": 2}),
        ("eval", {"use_largereps": True}),
    ],
)
def test_no_host_synchronisation_per_step(norm: Norm, purpose: str, options: dict, trained: nn.Module, batch: tuple) -> None:
    """The step loop never reads a tensor on the host: the count of host reads does not grow with the steps.

    The only reads are per run (whether any point is left to attack before a restart or target run)."""
    if options.get("use_largereps") and norm is not Norm.L1:
        pytest.skip("use_largereps is l1 only")
    x, y = batch
    totals = []
    for steps in (4, 16):
        with count_host_syncs() as syncs:
            build(norm, purpose, steps=steps, **options)(trained, x, y)
        totals.append(dict(syncs))
    assert totals[0] == totals[1]
    runs = options.get("restarts", 1) * options.get("n_target_classes", 1)
    if runs == 1 and options.get("loss", "ce") != "dlr-targeted":
        assert totals[0] == {}  # a training attack: not one read
    else:
        assert 1 <= sum(totals[0].values()) <= 3 * runs  # which points are left, before each later run
