"""Declared shapes of the files robustft reads back, checked before anything uses them.

A damaged or hand-edited ``run.json`` (``[]``, ``{}``, ``"base_model": 7``) or a checkpoint whose checksum is
valid but whose structure is not (``position: [1]``, no ``rng``) used to reach a ``KeyError`` or ``TypeError``
deep inside the command. Each file has a dataclass here whose fields and type hints are its schema;
:meth:`Schema.check` compares a loaded value with it and answers in one sentence naming the file and the
first field that is wrong. Consumers keep using the plain dict afterwards.

``run.json`` carries a format number (1; files without the key are format 1): a file from a newer robustft
(a higher number) is refused, not guessed at. Training checkpoints carry the marker
``"format": "robustft-checkpoint"`` (``CHECKPOINT_FORMAT`` in robustft/training/checkpoints.py), which
``load_last_checkpoint`` there checks before this schema.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Union

from robustft.errors import UserError

RUN_INFO_FORMAT = 1


class SchemaError(UserError):
    """A file robustft wrote earlier does not have the shape robustft writes."""


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is Any:
        return "anything"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin in (list, tuple):
        return "a list"
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return "a table (JSON object)"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}.get(hint, str(hint))


def _fits(value: Any, hint: Any) -> bool:
    """``value`` has the type ``hint`` describes (JSON/pickle shapes: lists for tuples, int for float)."""
    if hint is Any:
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            return False
        if args:
            key, item = args
            return all(_fits(k, key) and _fits(v, item) for k, v in value.items())
        return True
    if origin is list:
        return isinstance(value, (list, tuple)) and all(_fits(v, args[0]) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    return isinstance(value, hint)


class Schema:
    """Base of the file schemas: the dataclass's fields are the keys; fields without a default are required."""

    #: How the file is named in messages ("run information", "checkpoint").
    what: ClassVar[str] = "file"
    #: The newest format this robustft reads (None: the file has no format key).
    format_version: ClassVar[int | None] = None

    @classmethod
    def check(cls, value: Any, path: str | Path) -> dict[str, Any]:
        """``value`` itself when it fits the schema; otherwise a :class:`SchemaError` in one sentence."""
        where = f"The {cls.what} {str(path)!r}"
        if not isinstance(value, Mapping):
            raise SchemaError(f"{where} is damaged: it holds {type(value).__name__}, not a table of fields.")
        version = value.get("format", 1)
        if cls.format_version is not None and (not _fits(version, int) or version > cls.format_version):
            raise SchemaError(
                f"{where} has format {version!r}, which this robustft (format {cls.format_version}) "
                "cannot read: it was written by a newer robustft."
            )
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if f.name not in value:
                if required:
                    raise SchemaError(f"{where} is damaged: it has no {f.name!r}.")
                continue
            if not _fits(value[f.name], hints[f.name]):
                raise SchemaError(f"{where} is damaged: {f.name!r} must be {_describe(hints[f.name])}, not {value[f.name]!r:.60}.")
        cls.extra_checks(value, where)
        return dict(value)

    @classmethod
    def extra_checks(cls, value: Mapping[str, Any], where: str) -> None:
        """Constraints beyond types (override)."""


@dataclasses.dataclass
class RunInfo(Schema):
    """``run.json``: what a fine-tuning run was and where it stands."""

    what: ClassVar[str] = "run information"
    format_version: ClassVar[int | None] = RUN_INFO_FORMAT

    base_model: str
    dataset: str
    scheme: str
    format: int = RUN_INFO_FORMAT
    zoo: str = ""
    model_name: str = ""
    status: str = "running"
    norms: list[str] = dataclasses.field(default_factory=list)
    eps: dict[str, str] = dataclasses.field(default_factory=dict)
    model_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    robustft_version: str = ""
    started: str = ""
    processes: int = 1


@dataclasses.dataclass
class Checkpoint(Schema):
    """A training checkpoint (``checkpoints/epoch-NNN[-batch-MMMM].pt``), as robustft/training/checkpoints.py writes it."""

    what: ClassVar[str] = "checkpoint"
    #: The keys of ``epoch_stats`` (``robustft.training.results.EpochStats``' fields).
    epoch_stats_keys: ClassVar[frozenset[str]] = frozenset({"images", "loss_sum", "seconds", "nan_batches", "passes_before"})
    rng_keys: ClassVar[tuple[str, ...]] = ("torch", "data", "scheme")

    format: str
    position: tuple[int, int]
    model: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    rng: Mapping[str, Any]
    epoch: int = 0
    lr: float = 0.0
    scaler: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    rng_ranks: list[Any] = dataclasses.field(default_factory=list)
    scheme: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    epoch_stats: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    passes: dict[str, int] = dataclasses.field(default_factory=dict)
    nan_batches: int = 0
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def extra_checks(cls, value: Mapping[str, Any], where: str) -> None:
        epoch, batch = value["position"]
        if epoch < 0 or batch < 0:
            raise SchemaError(f"{where} is damaged: its position {list(value['position'])} is negative.")
        missing = [k for k in cls.rng_keys if k not in value["rng"]]
        if missing:
            raise SchemaError(f"{where} is damaged: its random states lack {missing[0]!r}.")
        attacks = value["rng"].get("attacks", {})  # the training attacks' states, by norm (robustft/attack_state.py)
        if not isinstance(attacks, Mapping) or any(k not in ("inf", "2", "1") or not isinstance(v, Mapping) for k, v in attacks.items()):
            raise SchemaError(f"{where} is damaged: its training attacks' states are not a table of states by norm.")
        unknown = sorted(set(value.get("epoch_stats", {})) - cls.epoch_stats_keys)
        if unknown:
            raise SchemaError(f"{where} is damaged: its epoch statistics have the unknown field {unknown[0]!r}.")
