"""Values of the settings that have a shape of their own: the items of repeatable command-line options
(``--eps inf=8/255``, ``--option NAME=VALUE``, ``--attack-option 1:topk=0.1``) and the per-norm tables of the
training attack (``attack``, ``attack_steps``, ``attack_options``), for :mod:`robustft.config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from robustft import per_norm
from robustft.errors import BadInputError
from robustft.norms import Norm, parse_eps_items


def eps_items(items: Sequence[str], flag: str) -> dict[Norm, Fraction]:
    return parse_eps_items(items)


def option_items(items: Sequence[str], flag: str) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"Option {item!r} is not of the form NAME=VALUE.")
        parsed[key.strip()] = value.strip()
    return parsed


def attack_items(items: Sequence[str], flag: str) -> dict[str, str]:
    return per_norm.from_items(items, flag, str.strip)


def attack_steps_items(items: Sequence[str], flag: str) -> dict[str, Any]:
    return per_norm.from_items(items, flag, per_norm.literal)


def attack_option_items(items: Sequence[str], flag: str) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for item in items:
        scope, colon, rest = item.partition(":")
        if not colon or "=" in scope:  # NAME=VALUE (a value may hold a colon)
            scope, rest = per_norm.ALL, item
        key, sep, value = rest.partition("=")
        if not sep or not key.strip():
            raise BadInputError(f"Attack option {item!r} is not of the form NAME=VALUE or NORM:NAME=VALUE.")
        table.setdefault(per_norm.norm_key(scope, flag), {})[key.strip()] = per_norm.literal(value)
    return table


def attack_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadInputError(f"An attack is named by a string such as 'apgd', got {value!r}.")
    return value.strip()


def attack_steps(value: Any) -> int:
    if isinstance(value, str):
        value = per_norm.literal(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise BadInputError(f"Attack steps must be a positive integer, got {value!r}.")
    return value


def attack_option_table(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise BadInputError(f"Attack options of a norm must be a table such as {{topk = 0.1}}, got {value!r}.")
    return {str(k): v for k, v in value.items()}


def convert_attack_options(value: Any) -> dict[str, dict[str, Any]]:
    """``{topk = 0.1}`` (every norm), ``{1 = {topk = 0.1}}`` (one norm), or both mixed, as a per-norm table."""
    if not isinstance(value, Mapping):
        raise BadInputError("'attack_options' must be a table such as {topk = 0.1} or {1 = {topk = 0.1}}.")
    every = {str(k): v for k, v in value.items() if not isinstance(v, Mapping)}
    tables = per_norm.normalise({k: v for k, v in value.items() if isinstance(v, Mapping)}, "attack_options", attack_option_table)
    if every:
        tables[per_norm.ALL] = {**tables.get(per_norm.ALL, {}), **every}
    return tables


def merge_attack_options(base: Mapping[str, dict[str, Any]], layer: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged = {k: dict(v) for k, v in base.items()}
    for key, table in layer.items():
        merged[key] = {**merged.get(key, {}), **table}
    return merged
