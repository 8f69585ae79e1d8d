"""The example plugin's own tests, written with robustft's testing helpers (robustft.testing)."""

from __future__ import annotations

import pytest
import torch
from robustft_myscheme import MyScheme

from robustft.plugin import BadInputError, Norm
from robustft.testing import ScriptedContext, check_scheme, tiny_batch, tiny_model


def test_it_keeps_the_scheme_contract():
    ctx = check_scheme(MyScheme)
    assert len(ctx.calls) == 3  # one attack per batch


def test_one_attack_per_batch_in_a_training_norm_and_its_clean_pass_booked():
    ctx = ScriptedContext()
    x, y = tiny_batch(8)
    MyScheme((Norm.LINF, Norm.L1)).loss(tiny_model(), x, y, ctx)
    ((norm, size),) = ctx.calls
    assert norm in (Norm.LINF, Norm.L1) and size == 8
    assert ctx.passes == [(1, 0, 8)]


def test_clean_weight_one_is_clean_training():
    model, (x, y) = tiny_model(), tiny_batch(8)
    loss, logs = MyScheme((Norm.LINF,), **{"clean-weight": "1"}).loss(model, x, y, ScriptedContext())
    assert torch.isclose(loss, torch.nn.functional.cross_entropy(model(x), y)) and logs["norm"] == "inf"


def test_clean_weight_is_typed_and_checked_against_its_range():
    assert MyScheme((Norm.LINF,), **{"clean-weight": "0.25"}).options.clean_weight == 0.25
    with pytest.raises(BadInputError, match=r"Option clean-weight of scheme 'my-scheme' must be a number in \[0, 1\], got '1.5'"):
        MyScheme((Norm.LINF,), **{"clean-weight": "1.5"})
