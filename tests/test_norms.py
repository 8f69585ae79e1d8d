"""Norm and radius parsing: exact, no eval, one-sentence errors."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from robustft.errors import BadInputError
from robustft.norms import Norm, format_radius, parse_eps_items, parse_norms, parse_radius


@pytest.mark.parametrize("text,expected", [("1", Norm.L1), ("l2", Norm.L2), ("Linf", Norm.LINF), ("inf", Norm.LINF), ("L-inf", Norm.LINF)])
def test_norm_spellings(text, expected):
    assert Norm.parse(text) is expected


def test_norm_list_is_sorted_and_deduplicated():
    assert parse_norms("1,2,inf,1") == (Norm.LINF, Norm.L2, Norm.L1)


@pytest.mark.parametrize("bad", ["3", "0", "l3", "foo", "", ","])
def test_bad_norms(bad):
    with pytest.raises(BadInputError):
        parse_norms(bad)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("8/255", Fraction(8, 255)),
        ("0.5", Fraction(1, 2)),
        ("12", Fraction(12)),
        (" 4 / 255 ", Fraction(4, 255)),
        ("1e-2", Fraction(1, 100)),
    ],
)
def test_radii_are_exact(text, expected):
    assert parse_radius(text) == expected


@pytest.mark.parametrize("bad", ["8/0", "-1", "0", "foo", "1/2/3", "__import__('os')", "inf", "nan", "", "2**3"])
def test_bad_radii(bad):
    with pytest.raises(BadInputError) as info:
        parse_radius(bad)
    assert "\n" not in str(info.value)


def test_eps_items():
    assert parse_eps_items(["inf=8/255", "1=12", "L2=0.5"]) == {Norm.LINF: Fraction(8, 255), Norm.L1: Fraction(12), Norm.L2: Fraction(1, 2)}
    for bad in ["foo", "inf=", "=1", "3=1", "inf=8/0", "2=-1"]:
        with pytest.raises(BadInputError):
            parse_eps_items([bad])


@given(st.integers(1, 10**6), st.integers(1, 10**6))
def test_fractions_round_trip(numerator, denominator):
    value = Fraction(numerator, denominator)
    assert parse_radius(format_radius(value)) == value
    assert parse_radius(f"{numerator}/{denominator}") == value


@given(st.text(max_size=20))
def test_parser_never_crashes(text):
    """Any string is either a positive radius or a BadInputError, never another exception."""
    try:
        value = parse_radius(text)
    except BadInputError:
        return
    assert value > 0
