"""Settings given once for every norm or norm by norm: ``--attack-steps 10`` or ``--attack-steps inf=5``.

The papers' recipes need per-norm training attacks: on ImageNet, APGD with 5 steps in l-inf and l2 and
15 in l1 (E-AT App. A, RAMP Sec. 5.1); on MNIST, 50 steps in l1 and 5 in l-inf. Such a setting is kept as
a table from norm (``"1"``, ``"2"``, ``"inf"``) to value, where the key :data:`ALL` (``"*"``) holds the
value for every norm not named:

* ``--attack-steps 10``, TOML ``attack_steps = 10``: ``{"*": 10}``;
* ``--attack-steps inf=5 --attack-steps 1=15``, TOML ``attack_steps = {inf = 5, 1 = 15}``: those norms,
  over whatever ``"*"`` already said.

A layer (config file, then command line) that gives a value for every norm replaces the table; one that
names norms changes those norms only. Before training the table is resolved for the training norms
(:func:`resolve_all`), and that is what the run's ``config.toml`` records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from robustft.errors import BadInputError
from robustft.norms import Norm

ALL = "*"
V = TypeVar("V")


def norm_key(key: Any, what: str) -> str:
    if isinstance(key, Norm):
        return key.value
    text = str(key).strip()
    if text == ALL:
        return ALL
    try:
        return Norm.parse(text).value
    except BadInputError:
        raise BadInputError(f"{what}: {text!r} is not a norm; use 1, 2, inf (or * for every norm).") from None


def from_items(items: Iterable[str], what: str, convert: Callable[[str], V]) -> dict[str, V]:
    """Command-line items: ``VALUE`` (every norm) or ``NORM=VALUE`` (one norm), each norm at most once."""
    table: dict[str, V] = {}
    for item in items:
        key, sep, text = item.partition("=")
        norm = norm_key(key, what) if sep else ALL
        if norm in table:
            shown = "every norm" if norm == ALL else f"norm {norm}"
            raise BadInputError(f"{what} is given twice for {shown}: give each norm once.")
        table[norm] = convert(text if sep else item)
    return table


def normalise(value: Any, what: str, convert: Callable[[Any], V]) -> dict[str, V]:
    """A value for every norm, or a mapping from norms (or ``"*"``) to values, as a table."""
    if isinstance(value, Mapping):
        return {norm_key(k, what): convert(v) for k, v in value.items()}
    return {ALL: convert(value)}


def merge(base: Mapping[str, V], layer: Mapping[str, V]) -> dict[str, V]:
    """``layer`` over ``base``: a value for every norm replaces the table, named norms change only those."""
    if ALL in layer:
        return dict(layer)
    return {**base, **layer}


def resolve(table: Mapping[str, V], norm: Norm, what: str) -> V:
    if norm.value in table:
        return table[norm.value]
    if ALL in table:
        return table[ALL]
    raise BadInputError(f"{what} has no value for norm {norm.value}: give one with {norm.value}=VALUE.")


def merged_for(tables: Mapping[str, Mapping[str, Any]], norm: str) -> dict[str, Any]:
    """A per-norm table of tables (attack options) for one norm: the ``"*"`` table, then the norm's own."""
    return {**tables.get(ALL, {}), **tables.get(norm, {})}


def to_toml(table: Mapping[str, Any]) -> Any:
    """One value when it holds for every norm, else the table (``"*"`` included where present)."""
    return table[ALL] if set(table) == {ALL} else dict(table)


def literal(text: str) -> Any:
    """A command-line value as TOML would read it: ``true``/``false``, an integer, a number, else text."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()
