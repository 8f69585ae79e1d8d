"""Per-norm training attacks: families, steps and options for every norm or norm by norm (CLI, TOML, Python)."""

from __future__ import annotations

import json
import tomllib
from fractions import Fraction

import pytest
import torch
from helpers import cli_in_process

import robustft
from robustft.config import build_config
from robustft.errors import BadInputError
from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft.training import training_attacks
from robustft_plugins.attacks.apgd import APGD
from robustft_plugins.attacks.fgsm_rs import FGSMRandomStart

pytestmark = pytest.mark.usefixtures("one_thread")
NORMS = (Norm.LINF, Norm.L2, Norm.L1)
EPS = {Norm.LINF: Fraction(1, 10), Norm.L2: Fraction(2, 5), Norm.L1: Fraction(2)}


def resolved(**settings):
    attacks = training_attacks(build_config(**settings), NORMS, EPS, registries())
    return {n: (a.factory.name, a.steps, dict(a.options)) for n, a in attacks.items()}


def test_one_value_for_every_norm_and_values_per_norm():
    assert resolved() == {n: ("apgd", 10, {}) for n in NORMS}
    assert resolved(attack_steps=7) == {n: ("apgd", 7, {}) for n in NORMS}
    # the ImageNet recipe (E-AT App. A, RAMP Sec. 5.1): 5 steps in l-inf and l2, 15 in l1
    imagenet = resolved(attack_steps={"inf": 5, "2": 5, "1": 15})
    assert {n: s for n, (_, s, _) in imagenet.items()} == {Norm.LINF: 5, Norm.L2: 5, Norm.L1: 15}
    # named norms over the value for every norm
    assert resolved(attack_steps={"*": 5, "1": 15})[Norm.L1][1] == 15 and resolved(attack_steps={"*": 5, "1": 15})[Norm.L2][1] == 5


def test_families_and_options_per_norm():
    mixed = resolved(attack={"inf": "fgsm-rs", "2": "apgd", "1": "apgd"}, attack_options={"1": {"topk": 0.1}, "inf": {"alpha": 1.0}})
    assert mixed[Norm.LINF] == ("fgsm-rs", 10, {"alpha": 1.0})
    assert mixed[Norm.L1] == ("apgd", 10, {"topk": 0.1}) and mixed[Norm.L2] == ("apgd", 10, {})
    attacks = training_attacks(build_config(attack={"inf": "fgsm-rs"}, attack_options={"1": {"topk": 0.1}}), NORMS, EPS, registries())
    built = {n: a.build(n, float(EPS[n])) for n, a in attacks.items()}
    assert isinstance(built[Norm.LINF], FGSMRandomStart) and isinstance(built[Norm.L1], APGD)
    assert built[Norm.L1].topk == pytest.approx(0.1)


@pytest.mark.parametrize(
    "settings,message",
    [
        ({"attack": "fgsm-rs"}, "Attack 'fgsm-rs' does not support norm 2 (only inf): give that norm another attack with --attack 2=NAME."),
        ({"attack_options": {"1": {"tpk": 0.1}}}, "Unknown option of attack 'apgd' 'tpk': did you mean 'topk'"),
        (
            {"attack": {"inf": "fgsm-rs"}, "attack_options": {"inf": {"alpah": 1.0}}},
            "Unknown option of attack 'fgsm-rs' 'alpah': did you mean 'alpha'",
        ),
        ({"attack_steps": {"inf": 0}}, "Attack steps must be a positive integer, got 0."),
        ({"attack_steps": {"3": 5}}, "'3' is not a norm"),
    ],
)
def test_bad_settings_are_one_sentence(settings, message):
    with pytest.raises(BadInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolved(**settings)


def test_toml_then_command_line(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text('attack_steps = {inf = 5, 1 = 15}\nattack = {inf = "fgsm-rs"}\n[attack_options.1]\ntopk = 0.1\n')
    config = build_config(file, attack_steps={"2": 7})
    assert config.attack_steps == {"*": 10, "inf": 5, "1": 15, "2": 7}
    assert config.attack == {"*": "apgd", "inf": "fgsm-rs"}
    assert config.attack_options == {"1": {"topk": 0.1}}
    assert build_config(file, attack_steps=3).attack_steps == {"*": 3}  # one value for every norm replaces the table


def test_cli_per_norm_run_records_what_each_norm_got(tmp_path, capsys, monkeypatch, base_model):
    out = tmp_path / "run"
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--epochs",
        "1",
        "--n-train",
        "64",
        "--batch-size",
        "16",
        "--attack",
        "inf=fgsm-rs",
        "--attack-steps",
        "1=3",
        "--attack-option",
        "1:topk=0.1",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    config = tomllib.loads((out / "config.toml").read_text())
    assert config["attack"] == {"inf": "fgsm-rs", "1": "apgd"}
    assert config["attack_steps"] == {"inf": 10, "1": 3}
    assert config["attack_options"] == {"1": {"topk": 0.1}}
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    batches = [r for r in records if r["kind"] == "batch"]
    (epoch,) = [r for r in records if r["kind"] == "epoch"]
    # FGSM-RS costs 2 forward passes per image, 3-step APGD 4: the passes show which attack served which batch
    expected = sum(16 * (2 if b["norm"] == "inf" else 4) for b in batches)
    assert epoch["passes"]["attack_forward"] == expected
    assert {b["norm"] for b in batches} == {"inf", "1"}


def test_resumed_config_round_trips(tmp_path, base_model):
    run = robustft.finetune(epochs=1, n_train=32, batch_size=16, attack_steps={"inf": 2, "1": 3}, out=str(tmp_path / "a"))
    again = build_config(run.run_dir / "config.toml")
    norms = (Norm.LINF, Norm.L1)
    attacks = training_attacks(again, norms, EPS, registries())
    assert {n: (a.factory.name, a.steps) for n, a in attacks.items()} == {Norm.LINF: ("apgd", 2), Norm.L1: ("apgd", 3)}


def test_fgsm_rs_stays_in_the_ball_and_box():
    from robustft.lp import check_in_ball_and_box

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x, y = torch.rand(32, 1, 4, 4), torch.randint(0, 3, (32,))
    result = FGSMRandomStart(0.1)(model, x, y)
    assert check_in_ball_and_box(result.x_adv, x, Norm.LINF, 0.1).all()
    assert torch.equal(result.success, model(result.x_adv).argmax(1) != y)
