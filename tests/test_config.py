"""Property-based tests (hypothesis) of the radius/norm parsers and the TOML configuration reader."""

from __future__ import annotations

import math
import tempfile
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robustft.config import FinetuneConfig, build_config, dumps_toml
from robustft.errors import UserError
from robustft.norms import Norm, format_radius, parse_eps_items, parse_norms, parse_radius

SPELLINGS = {
    Norm.L1: ["1", "l1", "L1", " 1.0"],
    Norm.L2: ["2", "l2", "L2", "2.0"],
    Norm.LINF: ["inf", "linf", "Linf", "l-inf", "infinity", "INF"],
}
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# ---------------------------------------------------------------------------------------- parsers


@FAST
@given(
    st.lists(st.sampled_from([(n, s) for n, spellings in SPELLINGS.items() for s in spellings]), min_size=1, max_size=6),
    st.sampled_from([",", ", ", " ", " , "]),
)
def test_norm_lists_parse_to_the_sorted_set_whatever_the_spelling(chosen, separator):
    parsed = parse_norms(separator.join(s.strip() for _, s in chosen))
    assert set(parsed) == {n for n, _ in chosen}
    assert list(parsed) == [n for n in (Norm.LINF, Norm.L2, Norm.L1) if n in parsed]  # display order, no duplicates


@FAST
@given(st.decimals(min_value="0.000001", max_value="100000", allow_nan=False, allow_infinity=False, places=6))
def test_decimal_radii_are_parsed_exactly(value):
    if value <= 0:
        return
    text = format(value, "f")
    assert parse_radius(text) == Fraction(text)


@FAST
@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_fraction_radii_round_trip_through_their_display(numerator, denominator):
    value = parse_radius(f"{numerator}/{denominator}")
    assert value == Fraction(numerator, denominator)
    assert parse_radius(format_radius(value)) == value


@FAST
@given(st.dictionaries(st.sampled_from(list(Norm)), st.fractions(min_value=Fraction(1, 10**6), max_value=1000), min_size=1))
def test_eps_items_round_trip(radii):
    items = [f"{norm.value}={value.numerator}/{value.denominator}" for norm, value in radii.items()]
    assert parse_eps_items(items) == radii


@FAST
@given(st.text(max_size=20))
def test_eps_items_reject_with_a_user_error_or_parse(text):
    try:
        parsed = parse_eps_items([text])
    except UserError as exc:
        assert exc.exit_code == 2 and len(exc.message.splitlines()) == 1
    else:
        assert all(v > 0 for v in parsed.values())


# ------------------------------------------------------------------------------- the TOML reader

VALID_FIELDS = {
    "model": st.sampled_from(["digits-cnn-linf", "builtin:digits-cnn-linf"]),
    "scheme": st.sampled_from(["e-at", "e-at-uniform", "lp-at"]),
    "epochs": st.integers(1, 50),
    "batch_size": st.integers(1, 4096),
    "lr": st.floats(1e-6, 10, allow_nan=False),
    "lr_step": st.floats(0.01, 10, allow_nan=False),
    "lr_schedule": st.sampled_from(["step", "piecewise", "cyclic"]),
    "momentum": st.floats(0, 0.999),
    "weight_decay": st.floats(0, 0.1),
    "attack_steps": st.one_of(st.integers(1, 100), st.dictionaries(st.sampled_from(["1", "2", "inf"]), st.integers(1, 100), min_size=1)),
    "outer_loss": st.sampled_from(["ce", "trades"]),
    "seed": st.integers(0, 2**31),
    "n_train": st.integers(1, 10**6),
    "workers": st.integers(0, 16),
    "checkpoint_every": st.integers(0, 1000),
    "max_nan_batches": st.integers(0, 100),
    "download": st.booleans(),
    "norms": st.lists(st.sampled_from(["1", "2", "inf"]), min_size=1, max_size=3, unique=True),
    "eps": st.dictionaries(
        st.sampled_from(["1", "2", "inf"]),
        st.fractions(min_value=Fraction(1, 1000), max_value=100).map(lambda f: f"{f.numerator}/{f.denominator}"),
        min_size=1,
    ),
}


def write(text: str) -> Path:
    handle = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False, encoding="utf-8")
    with handle:
        handle.write(text)
    return Path(handle.name)


@FAST
@given(st.fixed_dictionaries({}, optional=VALID_FIELDS))
def test_valid_config_files_are_read_exactly(values):
    path = write(dumps_toml(values))
    try:
        config = build_config(path)
    finally:
        path.unlink()
    for key, value in values.items():
        got = getattr(config, key)
        if key == "norms":
            assert set(got) == {Norm.parse(v) for v in value}
        elif key == "eps":
            assert got == {Norm.parse(k): Fraction(v) for k, v in value.items()}
        elif key == "attack_steps":  # one value for every norm, or norms over the default for every norm
            assert got == ({"*": value} if isinstance(value, int) else {"*": 10, **value})
        elif isinstance(value, float):
            assert math.isclose(got, value, rel_tol=0, abs_tol=0)
        else:
            assert got == value


@FAST
@given(st.fixed_dictionaries({}, optional=VALID_FIELDS))
def test_saved_configuration_repeats_itself(values):
    """What a run saves as config.toml reads back to the same configuration."""
    first = write(dumps_toml(values))
    try:
        config = build_config(first)
        second = write(dumps_toml(config.to_toml_dict()))
        try:
            assert build_config(second) == config
        finally:
            second.unlink()
    finally:
        first.unlink()


toml_scalars = st.one_of(st.booleans(), st.integers(-(10**6), 10**6), st.floats(allow_nan=False), st.text(max_size=12))
toml_values = st.one_of(toml_scalars, st.lists(toml_scalars, max_size=3))
toml_keys = st.one_of(
    st.sampled_from(sorted(f.replace("_", "-") if i % 2 else f for i, f in enumerate(FinetuneConfig.__dataclass_fields__))),
    st.text("abcdefghijklmnopqrstuvwxyz_-", min_size=1, max_size=10),
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(toml_keys, toml_values, max_size=6),
    st.dictionaries(
        st.sampled_from(["eps", "options", "finetune"]),
        st.dictionaries(st.text("12inf", min_size=1, max_size=3), toml_scalars, max_size=3),
        max_size=2,
    ),
)
def test_any_toml_document_gives_a_config_or_one_sentence(scalars, tables):
    try:
        text = dumps_toml({**scalars, **tables})
    except TypeError:
        return  # a value the TOML writer cannot express
    path = write(text)
    try:
        config = build_config(path)
    except UserError as exc:
        assert exc.exit_code in (1, 2) and len(exc.message.splitlines()) == 1
    else:
        assert isinstance(config, FinetuneConfig) and config.epochs > 0 and config.batch_size > 0
    finally:
        path.unlink()


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes_are_refused_with_one_sentence(data):
    path = Path(tempfile.mkstemp(suffix=".toml")[1])
    path.write_bytes(data)
    try:
        build_config(path)
    except UserError as exc:
        assert len(exc.message.splitlines()) == 1
    finally:
        path.unlink()


def test_operational_options_are_checked_like_the_others():
    with pytest.raises(UserError, match="'checkpoint_every' must not be negative"):
        build_config(checkpoint_every=-1)
    with pytest.raises(UserError, match="'max_nan_batches' must be an integer"):
        build_config(max_nan_batches=1.5)
    assert build_config(checkpoint_every=5, max_nan_batches=2).checkpoint_every == 5


def test_a_clean_runs_config_file_with_no_norms_is_read_back(tmp_path):
    """A clean (natural-training) run records ``norms = []`` in its config.toml; --config must accept it."""
    config = build_config(scheme="clean", norms=())
    path = tmp_path / "config.toml"
    path.write_text(dumps_toml(config.to_toml_dict()))
    assert "norms = []" in path.read_text()
    again = build_config(path)
    assert again.scheme == "clean" and again.norms == ()
