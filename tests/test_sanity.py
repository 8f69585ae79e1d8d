"""eval --sanity: the gradient-masking checks pass on an honest model and catch a masked one."""

from __future__ import annotations

import json
from fractions import Fraction

import torch
from torch import nn

from robustft.norms import Norm
from robustft.pluginmanager import registries
from robustft.sanity import check_model, linear_surrogate

from helpers import cli_in_process


class Masked(nn.Module):
    """The same function as ``model`` with a zero input gradient everywhere: gradient masking at its purest.

    Its robustness to gradient attacks is fake; points found on the unmasked model transfer exactly."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x.detach()) + 0 * x.sum()





def digits():
    return registries().datasets.get("digits")


def test_honest_model_passes_every_check(base_model):
    data = digits()
    checks = check_model(base_model, data, [Norm.LINF], {Norm.LINF: Fraction(1, 10)}, registries=registries(),
                         surrogate=linear_surrogate(data, torch.device("cpu")), n_ex=60, steps=10, name="base")
    assert {c.check for c in checks} == {"more-steps", "more-restarts", "transfer", "linf-radius-1"}
    assert all(c.passed for c in checks), [c.detail for c in checks if not c.passed]


def test_masked_gradients_are_caught(base_model):
    data = digits()
    masked = Masked(base_model)
    # l1 at radius 2: the base model (l-inf robust) is weak there, so the transferred points break it.
    checks = check_model(masked, data, [Norm.L1], {Norm.L1: Fraction(2)}, registries=registries(),
                         surrogate=base_model, n_ex=60, steps=10, name="masked")
    failed = {c.check for c in checks if not c.passed}
    assert "transfer" in failed  # the base model's points break what the white-box attack could not
    transfer = next(c for c in checks if c.check == "transfer")
    assert transfer.values["transfer"] < transfer.values["white_box"]


def test_eval_sanity_json(base_model, capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "eval", "--model", "digits-cnn-linf", "--norms", "inf", "--n-ex", "40", "--steps", "5", "--sanity", "--json", "--quiet")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["results"][0]["n"] == 40
    checks = {(c["check"], c["norm"]): c for c in data["sanity"]}
    assert set(checks) == {("more-steps", "inf"), ("more-restarts", "inf"), ("transfer", "inf"), ("linf-radius-1", "inf")}
    assert all(isinstance(c["passed"], bool) and c["detail"] for c in checks.values())
