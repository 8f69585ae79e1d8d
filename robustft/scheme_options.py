"""Typed scheme options: each option declared once (type, default, range or choices, help), checked once.

A scheme declares its options as a nested dataclass and reads them, typed, from ``self.options``::

    class RAMP(Scheme):
        class Options(SchemeOptions):
            lam: float = option(1.5, range="[0, inf)", help="weight of the pairing loss", cli_name="lambda")
            gp: bool = option(False, help="gradient projection once per epoch")

        options: Options

        def loss(self, model, x, y, ctx):
            ... self.options.lam ...

The field's annotation is the type (``bool``, ``int``, ``float`` or ``str``; any type with ``parse=``), its
``option(...)`` the default and the rest. Users name an option by its ``cli_name`` (by default the field name
with ``-`` for ``_``: ``auto_batches`` is ``--option auto-batches=8``). Values arrive as text from the command
line and TOML files or as Python values; :meth:`SchemeOptions.build` converts and checks them once, when the
scheme is built, and every mistake is one sentence naming the scheme, the option and what it allows. Subclasses
of :class:`SchemeOptions` become frozen, keyword-only dataclasses without a decorator.
"""

from __future__ import annotations

import contextvars
import dataclasses
import math
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from robustft.errors import BadInputError, UnknownNameError

#: Where option() keeps its settings in a dataclass field's metadata.
_META = "robustft.option"
#: Who the options belong to ("scheme 'ramp'") while :meth:`SchemeOptions.build` runs; messages name it.
_OWNER: contextvars.ContextVar[str | None] = contextvars.ContextVar("robustft_option_owner", default=None)

_TRUE, _FALSE = {"on", "true", "yes", "1"}, {"off", "false", "no", "0"}
_INVALID = object()  # what a value that fails its option converts to


def _parse_bool(text: str) -> bool:
    key = text.strip().lower()
    if key in _TRUE:
        return True
    if key in _FALSE:
        return False
    raise ValueError(text)


_PARSERS: dict[type, Callable[[str], Any]] = {bool: _parse_bool, int: lambda t: int(t.strip()), float: lambda t: float(t.strip()), str: str}
_TYPE_WORDS = {bool: "on or off", int: "an integer", float: "a number", str: "a text"}


def _is_value(value: Any, kind: type) -> bool:
    """Whether a Python (non-text) value already has the option's type; bools are not numbers here."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _number(text: str) -> float | int | None:
    text = text.strip().lower()
    if text in {"inf", "+inf", "-inf"}:
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def _show(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Interval:
    """Allowed numbers, written as in mathematics: ``[0, 1]``, ``(0, 1]``, ``[1, inf)``. ``None`` is unbounded."""

    low: float | None
    high: float | None
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def of(cls, spec: str | Sequence[float | None]) -> Interval:
        """``"(0, 1]"`` (brackets closed, parentheses open, ``inf`` unbounded) or ``(low, high)`` (closed; None unbounded)."""
        if isinstance(spec, str):
            match = re.fullmatch(r"\s*([\[(])\s*([^,\s]+)\s*,\s*([^,\s]+)\s*([\])])\s*", spec)
            if not match:
                raise TypeError(f"range {spec!r} is not an interval such as '[0, 1]', '(0, 1]' or '[1, inf)'")
            opening, low, high, closing = match.groups()
            try:
                low_value, high_value = _number(low), _number(high)
            except ValueError:
                raise TypeError(f"range {spec!r} has a bound that is not a number") from None
            if (low_value is None and opening == "[") or (high_value is None and closing == "]"):
                raise TypeError(f"range {spec!r} includes an infinite bound; write inf with a parenthesis")
            return cls(low_value, high_value, opening == "(" or low_value is None, closing == ")" or high_value is None)
        low_value, high_value = spec
        return cls(low_value, high_value, low_value is None, high_value is None)

    def __contains__(self, value: object) -> bool:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            return False
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        if self.high is not None and (value > self.high or (self.high_open and value == self.high)):
            return False
        return True

    def __str__(self) -> str:
        low = "-inf" if self.low is None else _show(self.low)
        high = "inf" if self.high is None else _show(self.high)
        return f"{'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


@dataclasses.dataclass(frozen=True)
class _Settings:
    """What :func:`option` was given besides the default (kept in the field's metadata)."""

    help: str
    range: Interval | None
    choices: tuple[Any, ...]
    cli_name: str | None
    parse: Callable[[str], Any] | None


def option(
    default: Any,
    *,
    help: str,
    range: str | Sequence[float | None] | None = None,  # noqa: A002 - the word users read
    choices: Sequence[Any] = (),
    cli_name: str | None = None,
    parse: Callable[[str], Any] | None = None,
) -> Any:
    """One scheme option, as a field of a :class:`SchemeOptions` subclass.

    ``default``: its value when the user gives none (of the field's type). ``help``: one line for
    ``robustft list schemes --options``, a noun phrase. ``range``: allowed numbers, ``"(0, 1]"`` or ``(0, 1)``
    (closed). ``choices``: allowed values. ``cli_name``: the name users type, when the field's cannot be it
    (``lambda`` is a Python keyword). ``parse``: turns the user's text into the value, raising ``ValueError`` on a
    malformed one; by default the field's type parses it (``bool`` takes on/off, true/false, yes/no, 1/0).
    """
    if not help:
        raise TypeError("option() needs help=, the line `robustft list schemes --options` shows")
    settings = _Settings(help, Interval.of(range) if range is not None else None, tuple(choices), cli_name, parse)
    return dataclasses.field(default=default, metadata={_META: settings})


@dataclasses.dataclass(frozen=True)
class SchemeOption:
    """One option of a scheme as its :class:`SchemeOptions` declares it (read it from ``Options.specs()``)."""

    name: str  # what users type: --option NAME=VALUE, [options] NAME = VALUE
    attribute: str  # the dataclass field: self.options.<attribute>
    type: type
    default: Any
    help: str
    range: Interval | None = None
    choices: tuple[Any, ...] = ()
    parse: Callable[[str], Any] | None = None

    def requirement(self) -> str:
        """What a valid value is, in words: 'a number in [0, 1]', 'one of kl, mse, cosine', or the help."""
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.parse is not None:
            return self.help
        words = _TYPE_WORDS.get(self.type, self.type.__name__)
        if self.range is not None:
            return f"{words} in {self.range}"
        return "a finite number" if self.type is float else words

    def convert(self, value: Any, owner: str) -> Any:
        """``value`` (text, or a Python value of the option's type) checked and converted; else one sentence."""
        converted = self._converted(value)
        if converted is _INVALID:
            raise BadInputError(f"Option {self.name} of {owner} must be {self.requirement()}, got {value!r}.")
        return converted

    def _converted(self, value: Any) -> Any:
        try:
            if isinstance(value, str):
                converted = self.parse(value) if self.parse is not None else _PARSERS[self.type](value)
            elif _is_value(value, self.type):
                converted = float(value) if self.type is float else value
            else:
                return _INVALID
        except (TypeError, ValueError):
            return _INVALID
        if self.type is float and not (isinstance(converted, float) and math.isfinite(converted)):
            return _INVALID
        if (self.choices and converted not in self.choices) or (self.range is not None and converted not in self.range):
            return _INVALID
        return converted

    def describe(self) -> dict[str, Any]:
        """For ``robustft list schemes --options --json``."""
        return {
            "name": self.name,
            "attribute": self.attribute,
            "type": self.type.__name__,
            "default": self.default,
            "range": str(self.range) if self.range is not None else None,
            "choices": list(self.choices),
            "help": self.help,
        }


@dataclasses.dataclass(frozen=True)
class SchemeOptions:
    """Base of a scheme's options: subclass it with one :func:`option` field per option (no decorator needed).

    Instances are frozen and always valid: constructing one, ``RAMP.Options(lam=5.0)``, checks every value as
    :meth:`build` does.
    """

    __options__: ClassVar[tuple[SchemeOption, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        cls.__options__ = _specs(cls)

    def __post_init__(self) -> None:
        owner = _OWNER.get() or type(self).__qualname__
        for spec in self.__options__:
            object.__setattr__(self, spec.attribute, spec.convert(getattr(self, spec.attribute), owner))

    @classmethod
    def specs(cls) -> tuple[SchemeOption, ...]:
        """Every option, in declaration order."""
        return cls.__options__

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The names users type."""
        return tuple(spec.name for spec in cls.__options__)

    @classmethod
    def build(cls, values: Mapping[str, Any], scheme: str) -> SchemeOptions:
        """The options of ``scheme`` (named in every message) from ``{name: text or value}`` (users' names; the
        rest take their defaults), checked."""
        by_name = {spec.name: spec for spec in cls.__options__}
        for key in sorted(values):
            if key not in by_name:
                if not by_name:
                    raise BadInputError(f"Scheme {scheme!r} takes no options, got {key}={values[key]!r}.")
                raise UnknownNameError(f"option of scheme {scheme!r}", key, by_name)
        token = _OWNER.set(f"scheme {scheme!r}")
        try:
            return cls(**{by_name[key].attribute: value for key, value in values.items()})
        finally:
            _OWNER.reset(token)

    def as_dict(self) -> dict[str, Any]:
        """``{name users type: value}``."""
        return {spec.name: getattr(self, spec.attribute) for spec in self.__options__}


def _specs(cls: type[SchemeOptions]) -> tuple[SchemeOption, ...]:
    """The option of every field, its declaration checked (a mistake here is the plugin author's: TypeError)."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation naming something the module does not define
        hints = {}
    specs = []
    for field in dataclasses.fields(cls):
        where = f"{cls.__qualname__}.{field.name}"
        settings = field.metadata.get(_META)
        if not isinstance(settings, _Settings):
            raise TypeError(f"{where} must be declared with option(default, help=...)")
        kind = hints.get(field.name, field.type)
        if not isinstance(kind, type) or (kind not in _PARSERS and settings.parse is None):
            raise TypeError(f"{where} has type {kind!r}: use bool, int, float or str, or give parse=")
        if settings.range is not None and kind not in (int, float):
            raise TypeError(f"{where} has a range but is not a number")
        spec = SchemeOption(
            name=settings.cli_name or field.name.replace("_", "-"),
            attribute=field.name,
            type=kind,
            default=field.default,
            help=settings.help,
            range=settings.range,
            choices=settings.choices,
            parse=settings.parse,
        )
        try:
            spec.convert(spec.default, cls.__qualname__)
        except BadInputError as exc:
            raise TypeError(f"the default of {where} is not allowed: {exc}") from None
        specs.append(spec)
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise TypeError(f"{cls.__qualname__} declares an option name twice: {', '.join(names)}")
    return tuple(specs)


__all__ = ["Interval", "SchemeOption", "SchemeOptions", "option"]
