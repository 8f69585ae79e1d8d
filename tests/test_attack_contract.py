"""The attack contract (plugin API 1.0): the template ``Attack.__call__``, the passes a result reports and the
training context books, the generator the context gives, the state checkpoints keep, and option checking."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from torch import nn

import robustft
from robustft.config import FinetuneConfig
from robustft.contracts import Attack, AttackFactory, AttackResult
from robustft.errors import BadInputError, UnknownNameError
from robustft.hookspecs import hookimpl
from robustft.io import load_torch
from robustft.lp import check_in_ball_and_box, project
from robustft.norms import Norm
from robustft.plugin import counted_passes
from robustft.pluginmanager import PluginHost
from robustft.progress import ProgressReporter
from robustft.registry import PluginFault
from robustft.training import EngineContext, RunInterrupted
from robustft_plugins.attacks.apgd import APGDFactory
from robustft_plugins.attacks.fgsm_rs import FGSMRandomStart, FGSMRandomStartFactory

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = {Norm.LINF: 0.1, Norm.L2: 0.5, Norm.L1: 2.0}


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))


def batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def clean_result(x: torch.Tensor, **passes: int) -> AttackResult:
    return AttackResult(x_adv=x.clone(), loss=torch.zeros(len(x)), success=torch.zeros(len(x), dtype=torch.bool), **passes)


class Recording(Attack):
    """Records the mode and flags it saw; raises when asked to."""

    norm, eps = Norm.LINF, 0.1

    def __init__(self, fail: bool = False) -> None:
        self.fail, self.seen = fail, []

    def perturb(self, model, x, y):
        self.seen.append(([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]))
        if self.fail:
            raise RuntimeError("the attack broke")
        return clean_result(x, forward_passes=0, backward_passes=0)


# ------------------------------------------------------------------------------------------ the template


def test_the_template_attacks_in_eval_mode_without_parameter_gradients_and_restores_both():
    model = small_model().train()
    model[1].eval()  # a module its owner froze: restored as it was, not set to the model's mode
    model[0].weight.requires_grad_(False)
    before = ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])
    attack = Recording()
    attack(model, *batch())
    modes, flags = attack.seen[0]
    assert not any(modes) and not any(flags)
    assert ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()]) == before


def test_the_template_restores_mode_and_flags_when_the_attack_raises():
    model = small_model().train()
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="the attack broke"):
        Recording(fail=True)(model, *batch())
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags and all(flags)


def test_an_attack_may_declare_train_mode():
    class InTrainMode(Recording):
        model_mode = "train"

    model = small_model().eval()
    attack = InTrainMode()
    attack(model, *batch())
    assert all(attack.seen[0][0]) and not model.training


def test_overriding_call_is_refused_with_the_migration():
    with pytest.raises(TypeError, match=r"Old overrides __call__; since plugin API 1.0 an attack implements perturb"):

        class Old(Attack):  # noqa: F841 - the class statement itself is refused
            def __call__(self, model, x, y):
                return clean_result(x)


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda x: x, "returned Tensor from perturb(), not an AttackResult"),
        (lambda x: clean_result(x), "returned forward_passes=None"),
        (lambda x: clean_result(x, forward_passes=1, backward_passes=-1), "returned backward_passes=-1"),
        (lambda x: clean_result(x, forward_passes=True, backward_passes=0), "returned forward_passes=True"),
        (lambda x: AttackResult(x[:2], torch.zeros(len(x)), torch.zeros(len(x), dtype=torch.bool), 1, 1), "x_adv of shape"),
        (lambda x: AttackResult(x, torch.zeros(len(x), 2), torch.zeros(len(x), dtype=torch.bool), 1, 1), "loss of shape"),
        (lambda x: AttackResult(x, torch.zeros(len(x)), torch.zeros(len(x)), 1, 1), "not a boolean tensor"),
    ],
)
def test_a_malformed_result_is_a_plugin_fault_in_one_sentence(make, problem):
    class Faulty(Attack):
        norm, eps = Norm.LINF, 0.1

        def perturb(self, model, x, y):
            return make(x)

    with pytest.raises(PluginFault, match=r"^Attack Faulty \(module [\w.]*test_attack_contract\) is faulty: it ") as raised:
        Faulty()(small_model(), *batch())
    assert problem in str(raised.value) and "\n" not in str(raised.value)


# -------------------------------------------------------------------------------------------- passes


class Counting(nn.Module):
    """Counts forward calls and the backward passes reaching the input (the truth the reports are held to)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.forwards, self.backwards = inner, 0, 0

    def forward(self, x):
        self.forwards += 1
        if x.requires_grad:
            x.register_hook(self._seen)
        return self.inner(x)

    def _seen(self, grad):
        self.backwards += 1


def context(model: nn.Module, factory: AttackFactory, steps: int, seed: int = 0) -> EngineContext:
    return EngineContext(
        model,
        torch.device("cpu"),
        EPS,
        factory,
        steps,
        1,
        1,
        torch.Generator().manual_seed(0),
        5,
        config=FinetuneConfig(lr=0.05, seed=seed),
    )


def test_fgsm_rs_books_its_two_forward_passes_and_one_backward_pass_per_image():
    """One forward and one backward pass find the step; one forward pass gives loss and success at x_adv. The
    engine used to book any attack as ``steps + 1`` and ``steps`` passes: 11 and 10 for this one-step attack."""
    model = Counting(small_model())
    ctx = context(model, FGSMRandomStartFactory(), steps=10)
    x, y = batch(6)
    result = ctx.attack(Norm.LINF, x, y)
    assert (result.forward_passes, result.backward_passes) == (model.forwards, model.backwards) == (2, 1)
    assert (ctx.passes.attack_forward, ctx.passes.attack_backward) == (6 * 2, 6 * 1)
    assert (ctx.passes.update_forward, ctx.passes.update_backward) == (0, 0)


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L1])
def test_apgd_books_its_steps(norm):
    model = Counting(small_model())
    ctx = context(model, APGDFactory(), steps=4)
    ctx.attack(norm, *batch(6))
    assert (model.forwards, model.backwards) == (5, 4)
    assert (ctx.passes.attack_forward, ctx.passes.attack_backward) == (6 * 5, 6 * 4)


def test_counted_passes_measures_what_apgd_reports():
    model = small_model().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x, _ = batch(6)
    y = model(x).argmax(1)  # every point correctly classified: the targeted runs attack them
    attack = APGDFactory().build(Norm.L2, 0.5, steps=5, purpose="eval", restarts=2, loss="dlr-targeted", n_target_classes=2)
    with counted_passes(model) as passes:
        result = attack(model, x, y)
    assert (passes.forward, passes.backward) == (result.forward_passes, result.backward_passes)
    assert passes.backward > 0 and passes.forward > passes.backward


# ------------------------------------------------------------------------------------ generator, state


def test_the_context_gives_each_training_attack_a_generator_seeded_from_the_run():
    x, y = batch(6)
    draws = {}
    for seed in (0, 0, 1):
        ctx = context(small_model(), FGSMRandomStartFactory(), steps=1, seed=seed)
        draws.setdefault(seed, []).append(ctx.attack(Norm.LINF, x, y).x_adv)
    assert torch.equal(draws[0][0], draws[0][1]) and not torch.equal(draws[0][0], draws[1][0])
    ctx = context(small_model(), FGSMRandomStartFactory(), steps=1)
    state = torch.get_rng_state()
    first, second = ctx.attack(Norm.LINF, x, y).x_adv, ctx.attack(Norm.LINF, x, y).x_adv
    assert not torch.equal(first, second)  # a fresh random start per batch
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator (data augmentation) untouched


def test_state_dict_round_trip_replays_the_same_random_start():
    model, (x, y) = small_model().eval(), batch(6)
    attack = FGSMRandomStart(0.1)
    attack.use_generator(torch.Generator().manual_seed(3))
    state = attack.state_dict()
    first = attack(model, x, y).x_adv
    attack.load_state_dict(state)
    assert torch.equal(attack(model, x, y).x_adv, first)
    assert check_in_ball_and_box(first, x, Norm.LINF, 0.1).all()


def test_without_a_given_generator_an_attack_follows_torchs_seed():
    model, (x, y) = small_model().eval(), batch(6)
    results = []
    for _ in range(2):
        torch.manual_seed(7)  # what the evaluator does before each attack
        results.append(FGSMRandomStart(0.1)(model, x, y).x_adv)
    assert torch.equal(*results)


# A plugin attack with randomness and state of its own: a random point of the ball, its sign flipped every call.
class NoisyAttack(Attack):
    def __init__(self, norm: Norm, eps: float) -> None:
        self.norm, self.eps, self.calls = norm, eps, 0

    def perturb(self, model, x, y):
        self.calls += 1
        noise = torch.rand(x.shape, generator=self.generator(x.device), device=x.device) * 2 - 1
        x_adv = (x + project((-1) ** self.calls * self.eps * noise, x, self.norm, self.eps)).clamp(0, 1)
        with torch.no_grad():
            logits = model(x_adv)
        return AttackResult(
            x_adv, nn.functional.cross_entropy(logits, y, reduction="none"), logits.argmax(1) != y, forward_passes=1, backward_passes=0
        )

    def state_dict(self):
        return {**super().state_dict(), "calls": self.calls}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.calls = int(state["calls"])


class SignalAfter(ProgressReporter):
    """Sends this process SIGTERM after ``batches`` trained batches (an in-process Ctrl-C; as tests/test_resume.py)."""

    def __init__(self, batches: int) -> None:
        self.left = batches

    def advance(self, stats) -> None:
        self.left -= 1
        if self.left == 0:
            signal.raise_signal(signal.SIGTERM)


def batch_losses(run) -> list[tuple[int, int, float, str]]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["batch"], r["loss"], r["norm"]) for r in records if r["kind"] == "batch"]


class NoisyFactory(AttackFactory):
    name = "noisy"
    description = "a random point of the ball (tests)"

    def build(self, norm, eps, *, steps, purpose="train", **options):
        self.check_options(options)
        return NoisyAttack(norm, eps)


class NoisyPlugin:
    @staticmethod
    @hookimpl
    def register_attacks(register):
        register(NoisyFactory())


def test_a_plugin_attack_drawing_from_the_contexts_generator_resumes_bit_for_bit(tmp_path, base_model, monkeypatch):
    host = PluginHost()
    host.register(NoisyPlugin, name="noisy-plugin")
    options = dict(host=host, attack="noisy", epochs=2, n_train=128, batch_size=32, checkpoint_every=1, seed=5)
    reference = robustft.finetune(out=str(tmp_path / "reference"), **options)
    epochs = [json.loads(line) for line in (reference.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["passes"]["attack_forward"] for e in epochs if e["kind"] == "epoch"] == [128, 128]  # 1 pass, booked

    def interrupted(name):
        run = tmp_path / name
        with pytest.raises(RunInterrupted):  # 4 batches per epoch: stop after epoch 2's third
            robustft.finetune(out=str(run), progress=SignalAfter(7), **options)
        checkpoint = load_torch(run / "checkpoints" / "epoch-002-batch-0003.pt")
        saved = checkpoint["rng"]["attacks"]  # each built attack's state: its generator's and its call count
        assert saved and all(state["calls"] > 0 and "generator" in state for state in saved.values())
        return run

    run = interrupted("run")
    result = robustft.finetune(resume=run, host=host)
    mine, theirs = load_torch(result.weights)["model"], load_torch(reference.weights)["model"]
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # bitwise
    assert batch_losses(run) == batch_losses(reference.run_dir)

    # The check can fail: a resume that forgets the attacks' state draws other starts and ends elsewhere.
    forgetful = interrupted("forgetful")
    monkeypatch.setattr(NoisyAttack, "load_state_dict", lambda self, state: None)
    result = robustft.finetune(resume=forgetful, host=host)
    mine = load_torch(result.weights)["model"]
    assert not all(torch.equal(mine[k], theirs[k]) for k in mine)


# ------------------------------------------------------------------------------------------- options


def test_factories_refuse_unknown_options_naming_the_closest():
    with pytest.raises(UnknownNameError, match=r"^Unknown option of attack 'apgd' 'random-start': did you mean 'random_start'"):
        APGDFactory().build(Norm.LINF, 0.1, steps=3, **{"random-start": True})
    with pytest.raises(UnknownNameError, match=r"^Unknown option of attack 'fgsm-rs' 'step': valid names: alpha\.$"):
        FGSMRandomStartFactory().build(Norm.LINF, 0.1, steps=1, step=1.0)
    with pytest.raises(BadInputError, match=r"^Attack 'noisy' takes no options, got 'alpha'\.$"):
        NoisyFactory().build(Norm.LINF, 0.1, steps=1, alpha=1.0)


# ------------------------------------------------------------------------------------ robustft.testing


@pytest.mark.parametrize("norm", [Norm.LINF, Norm.L2, Norm.L1])
def test_the_built_in_attacks_pass_check_attack(norm):
    from robustft.testing import check_attack

    eps = {Norm.LINF: 0.1, Norm.L2: 0.5, Norm.L1: 2.0}[norm]
    for purpose in ("train", "eval"):
        result = check_attack(APGDFactory().build(norm, eps, steps=3, purpose=purpose))
        assert result.forward_passes >= 1
    if norm is Norm.LINF:
        assert check_attack(FGSMRandomStart(eps)).forward_passes == 2
    assert check_attack(NoisyAttack(norm, eps)).backward_passes == 0


def test_check_attack_catches_an_attack_that_cannot_resume_or_leaves_its_ball():
    from robustft.testing import check_attack

    class GlobalNoise(NoisyAttack):
        def perturb(self, model, x, y):
            result = super().perturb(model, x, y)
            result.x_adv = (x + project(self.eps * torch.rand(x.shape), x, self.norm, self.eps)).clamp(0, 1)
            return result

    with pytest.raises(AssertionError, match="GlobalNoise gives another result after load_state_dict"):
        check_attack(GlobalNoise(Norm.LINF, 0.1))

    class Overshooting(NoisyAttack):
        def perturb(self, model, x, y):
            result = super().perturb(model, x, y)
            result.x_adv = (x + 2 * self.eps).clamp(0, 1)
            return result

    with pytest.raises(AssertionError, match=r"Overshooting returned points outside its l-inf ball"):
        check_attack(Overshooting(Norm.LINF, 0.1))


def test_the_minimal_attack_of_docs_plugins_md_keeps_the_contract():
    from helpers import REPO

    from robustft.testing import check_attack

    text = (REPO / "docs" / "plugins.md").read_text()
    (block,) = [b.split("```")[0] for b in text.split("```python\n") if "class RandomPoint(Attack)" in b]
    namespace: dict = {}
    exec(compile(block, "docs/plugins.md", "exec"), namespace)  # noqa: S102 - the repository's own documentation
    for norm, eps in EPS.items():
        assert check_attack(namespace["RandomPoint"](norm, eps)).forward_passes == 1
    with pytest.raises(BadInputError, match="Attack 'random-point' takes no options, got 'steps_'"):
        namespace["RandomPointFactory"]().build(Norm.LINF, 0.1, steps=1, steps_=2)
