"""Threat models: lp norms and their radii, parsed exactly.

Norms are written ``1``, ``2`` or ``inf`` (``l1``, ``L2``, ``linf`` are accepted too). Radii are
written as decimals or fractions (``12``, ``0.5``, ``8/255``) and parsed with :class:`fractions.Fraction`,
never with ``eval``.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction

from robustft.errors import BadInputError


class Norm(str, enum.Enum):
    """An lp norm of a threat model. The value is the canonical spelling."""

    L1 = "1"
    L2 = "2"
    LINF = "inf"

    @property
    def p(self) -> float:
        """The exponent p as a float (``math.inf`` for l-inf)."""
        return {"1": 1.0, "2": 2.0, "inf": math.inf}[self.value]

    @property
    def label(self) -> str:
        """Human-readable name, e.g. ``l-inf``."""
        return {"1": "l1", "2": "l2", "inf": "l-inf"}[self.value]

    @property
    def autoattack_name(self) -> str:
        """The spelling AutoAttack uses: ``L1``, ``L2``, ``Linf``."""
        return {"1": "L1", "2": "L2", "inf": "Linf"}[self.value]

    @classmethod
    def parse(cls, text: str | int | float | Norm) -> Norm:
        if isinstance(text, Norm):
            return text
        key = str(text).strip().lower().replace("-", "").replace("_", "")
        if key.startswith("l") and len(key) > 1:
            key = key[1:]
        key = {"1": "1", "1.0": "1", "2": "2", "2.0": "2", "inf": "inf", "infinity": "inf", "∞": "inf"}.get(key, "")
        if not key:
            raise BadInputError(f"Unknown norm {str(text)!r}: norms are 1, 2 and inf.")
        return cls(key)

    def __str__(self) -> str:
        return self.value


#: The order in which norms are shown: like Table 2 of the E-AT paper (l-inf, l2, l1).
DISPLAY_ORDER = (Norm.LINF, Norm.L2, Norm.L1)


def sort_norms(norms: Iterable[Norm]) -> tuple[Norm, ...]:
    chosen = set(norms)
    return tuple(n for n in DISPLAY_ORDER if n in chosen)


def parse_norms(text: str | Iterable[str | Norm]) -> tuple[Norm, ...]:
    """Parse ``"1,2,inf"`` (or an iterable of spellings) into norms, in display order, no duplicates."""
    parts = [p for p in re.split(r"[,\s]+", text.strip())] if isinstance(text, str) else list(text)
    parts = [p for p in parts if str(p).strip()]
    if not parts:
        raise BadInputError("No norm given: write norms as a comma-separated list such as 1,2,inf.")
    return sort_norms(Norm.parse(p) for p in parts)


_NUMBER = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")


def parse_radius(text: str | float | int | Fraction) -> Fraction:
    """Parse a radius such as ``8/255``, ``0.5`` or ``12`` exactly. It must be finite and positive."""
    if isinstance(text, Fraction):
        value = text
    elif isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text):
            raise BadInputError(f"Radius {text!r} is not a finite number.")
        value = Fraction(str(text)) if isinstance(text, float) else Fraction(text)
    else:
        raw = str(text).strip()
        num, sep, den = raw.partition("/")
        if not _NUMBER.match(num) or (sep and not _NUMBER.match(den)):
            raise BadInputError(f"Radius {raw!r} is not a number: write it as a decimal or a fraction such as 0.5 or 8/255.")
        if sep and Fraction(den.strip()) == 0:
            raise BadInputError(f"Radius {raw!r} divides by zero.")
        value = Fraction(num.strip()) / (Fraction(den.strip()) if sep else 1)
    if value <= 0:
        raise BadInputError(f"Radius {format_radius(value)} must be positive.")
    return value


def format_radius(value: Fraction | float) -> str:
    """Write a radius the way a user would: ``8/255``, ``0.5``, ``12``."""
    if isinstance(value, float):
        return f"{value:g}"
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    if Fraction(repr(as_float)) == value and len(repr(as_float)) <= 8:
        return repr(as_float)
    return f"{value.numerator}/{value.denominator}"


def parse_eps_items(items: Iterable[str]) -> dict[Norm, Fraction]:
    """Parse repeated ``--eps NORM=RADIUS`` items (``inf=8/255``) into a mapping."""
    radii: dict[Norm, Fraction] = {}
    for item in items:
        norm_text, sep, radius_text = str(item).partition("=")
        if not sep or not norm_text.strip() or not radius_text.strip():
            raise BadInputError(f"Radius {item!r} is not of the form NORM=RADIUS, for example inf=8/255 or 1=12.")
        norm = Norm.parse(norm_text)
        if norm in radii:
            raise BadInputError(f"The {norm.label} radius is given twice (--eps {norm.value}=...): give each norm once.")
        radii[norm] = parse_radius(radius_text)
    return radii


def normalise_eps(mapping: Mapping[str | Norm, str | float | Fraction]) -> dict[Norm, Fraction]:
    """Parse a ``{norm: radius}`` mapping (from a TOML config, say)."""
    return {Norm.parse(k): parse_radius(v) for k, v in mapping.items()}


def eps_to_strings(eps: Mapping[Norm, Fraction]) -> dict[str, str]:
    return {n.value: format_radius(eps[n]) for n in sort_norms(eps)}
