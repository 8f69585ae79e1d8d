"""Name -> object registries with aliases, wildcards and did-you-mean errors (in the manner of timm)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from robustft.errors import UnknownNameError, UserError

T = TypeVar("T")


class RegistrationError(ValueError):
    """A plugin registered something malformed or a name that is already taken."""


class PluginFault(UserError):
    """A registered plugin returned something malformed when it was used (always an error: there is
    nothing to fall back to in the middle of a run)."""


def _type_names(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join(f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__ for t in types)


def checked(value: Any, expected: type | tuple[type, ...], *, what: str, plugin: str) -> Any:
    """``value`` if it is an ``expected`` instance, else a :class:`PluginFault` naming the plugin.

    ``what`` names the call, e.g. ``"model zoo 'builtin' load()"``.
    """
    if not isinstance(value, expected):
        raise PluginFault(f"Plugin {plugin!r} is faulty: {what} returned {type(value).__name__}, not {_type_names(expected)}.")
    return value


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    plugin: str
    description: str
    aliases: tuple[str, ...]


class Registry(Generic[T]):
    """The registered things of one kind (schemes, attacks, ...)."""

    def __init__(self, kind: str, required: tuple[str, ...] = (), contract: type | None = None, is_class: bool = False) -> None:
        """``contract``: the base class of :mod:`robustft.contracts` registered objects must derive from
        (``is_class``: the object is that subclass itself, as for schemes, else an instance of it)."""
        self.kind = kind
        self._required = required
        self._contract = contract
        self._is_class = is_class
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def validate(self, obj: Any, plugin: str) -> tuple[str, tuple[str, ...]]:
        """``obj``'s name and aliases, or :class:`RegistrationError` when it is malformed (a fault of the plugin
        as a whole, unlike a name that is already taken: see :meth:`owner`)."""
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name.strip():
            raise RegistrationError(f"{plugin} registered a {self.kind} without a string 'name' attribute")
        missing = [attr for attr in self._required if not hasattr(obj, attr)]
        if missing:
            raise RegistrationError(f"{plugin} registered {self.kind} {name!r} without {', '.join(missing)}")
        aliases = getattr(obj, "aliases", ()) or ()
        if isinstance(aliases, str) or not all(isinstance(a, str) and a.strip() for a in aliases):
            raise RegistrationError(f"{plugin} registered {self.kind} {name!r} whose 'aliases' is not a tuple of names")
        self._check_contract(obj, name, plugin)
        return name, tuple(aliases)

    def add(self, obj: T, plugin: str, *, aliases: tuple[str, ...] | None = None) -> Entry[T]:
        """Register ``obj`` for ``plugin``; ``aliases`` replaces the object's own (the host drops taken ones)."""
        name, own_aliases = self.validate(obj, plugin)
        aliases = own_aliases if aliases is None else aliases
        self.check_free(obj, plugin, aliases)
        description = str(getattr(obj, "description", "") or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0])
        entry = Entry(name=name, obj=obj, plugin=plugin, description=description, aliases=aliases)
        self._entries[name.lower()] = entry
        for alias in aliases:
            self._aliases[alias.lower()] = name.lower()
        return entry

    def owner(self, key: str) -> Entry[T] | None:
        """The entry that holds ``key`` as its name or one of its aliases."""
        found = self._lookup_key(key)
        return None if found is None else self._entries[found]

    def check_free(self, obj: Any, plugin: str, aliases: tuple[str, ...] | None = None) -> None:
        """Raise :class:`RegistrationError` when ``obj``'s name or one of its aliases is already taken."""
        aliases = tuple(getattr(obj, "aliases", ()) or ()) if aliases is None else aliases
        for key in (str(getattr(obj, "name", "")), *aliases):
            taken = self.owner(str(key))
            if taken is not None:
                raise RegistrationError(f"{plugin} registered {self.kind} {key!r}, which {taken.plugin} already registered")

    def remove_plugin(self, plugin: str) -> list[str]:
        """Drop every entry ``plugin`` registered (a plugin that failed later is removed whole); their names."""
        gone = [key for key, entry in self._entries.items() if entry.plugin == plugin]
        for key in gone:
            del self._entries[key]
        self._aliases = {alias: key for alias, key in self._aliases.items() if key not in gone}
        return gone

    def _check_contract(self, obj: Any, name: str, plugin: str) -> None:
        contract = self._contract
        if contract is None:
            return
        if self._is_class:
            if not (isinstance(obj, type) and issubclass(obj, contract)):
                raise RegistrationError(f"{plugin} registered {self.kind} {name!r}, which is not a subclass of {_type_names(contract)}")
            abstract = sorted(getattr(obj, "__abstractmethods__", ()))
            if abstract:
                raise RegistrationError(f"{plugin} registered {self.kind} {name!r} without {', '.join(abstract)}")
        elif not isinstance(obj, contract):
            raise RegistrationError(f"{plugin} registered {self.kind} {name!r}, which is not a {_type_names(contract)} instance")

    def _lookup_key(self, key: str) -> str | None:
        key = key.lower()
        if key in self._entries:
            return key
        return self._aliases.get(key)

    def entry(self, name: str, hint: str = "") -> Entry[T]:
        key = self._lookup_key(name)
        if key is None:
            canonical = {a: e.name for e in self for a in e.aliases}
            raise UnknownNameError(self.kind, name, self.all_names(), hint, canonical)
        return self._entries[key]

    def get(self, name: str, hint: str = "") -> T:
        return self.entry(name, hint).obj

    def __contains__(self, name: str) -> bool:
        return self._lookup_key(name) is not None

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, pattern: str | None = None) -> list[str]:
        names = [e.name for e in self]
        return [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())] if pattern else names

    def all_names(self) -> list[str]:
        return [e.name for e in self] + [a for e in self for a in e.aliases]


class Registries:
    """Every registry, as filled by the installed plugins."""

    def __init__(self) -> None:
        from robustft import contracts as c  # imported here: contracts pulls in torch

        self.schemes: Registry[Any] = Registry("scheme", required=("loss",), contract=c.Scheme, is_class=True)
        self.attacks: Registry[Any] = Registry("attack", required=("build",), contract=c.AttackFactory)
        self.suites: Registry[Any] = Registry("suite", required=("attacks",), contract=c.EvalSuite)
        self.zoos: Registry[Any] = Registry("zoo", required=("load", "models"), contract=c.ModelZoo)
        self.datasets: Registry[Any] = Registry("dataset", required=("train", "test", "num_classes"), contract=c.DatasetPlugin)
        from robustft.loggers import RunLogger

        self.loggers: Registry[Any] = Registry("logger", required=("log",), contract=RunLogger, is_class=True)

    def plugin_of(self, kind: str, obj: Any) -> str:
        """The plugin that registered ``obj`` (for error messages), or its name when it was not registered."""
        registry = self.by_kind(kind)
        name = str(getattr(obj, "name", ""))
        return registry.entry(name).plugin if name in registry else name or type(obj).__name__

    def kinds(self) -> dict[str, Registry[Any]]:
        return {
            "schemes": self.schemes,
            "attacks": self.attacks,
            "suites": self.suites,
            "zoos": self.zoos,
            "datasets": self.datasets,
            "loggers": self.loggers,
        }

    def by_kind(self, kind: str) -> Registry[Any]:
        return self.kinds()[kind]
