"""Name -> object registries with aliases, wildcards and did-you-mean errors (in the manner of timm)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from robustft.errors import UnknownNameError

T = TypeVar("T")


class RegistrationError(ValueError):
    """A plugin registered something malformed or a name that is already taken."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    obj: T
    plugin: str
    description: str
    aliases: tuple[str, ...]


class Registry(Generic[T]):
    """The registered things of one kind (schemes, attacks, ...)."""

    def __init__(self, kind: str, required: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._required = required
        self._entries: dict[str, Entry[T]] = {}
        self._aliases: dict[str, str] = {}

    def add(self, obj: T, plugin: str) -> Entry[T]:
        name = getattr(obj, "name", None)
        if not isinstance(name, str) or not name.strip():
            raise RegistrationError(f"{plugin} registered a {self.kind} without a string 'name' attribute")
        missing = [attr for attr in self._required if not hasattr(obj, attr)]
        if missing:
            raise RegistrationError(f"{plugin} registered {self.kind} {name!r} without {', '.join(missing)}")
        aliases = tuple(getattr(obj, "aliases", ()) or ())
        for key in (name, *aliases):
            owner = self._lookup_key(key)
            if owner is not None:
                raise RegistrationError(
                    f"{plugin} registered {self.kind} {key!r}, which {self._entries[owner].plugin} already registered"
                )
        description = str(getattr(obj, "description", "") or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0])
        entry = Entry(name=name, obj=obj, plugin=plugin, description=description, aliases=aliases)
        self._entries[name.lower()] = entry
        for alias in aliases:
            self._aliases[alias.lower()] = name.lower()
        return entry

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
        self.schemes: Registry[Any] = Registry("scheme", required=("loss",))
        self.attacks: Registry[Any] = Registry("attack", required=("build",))
        self.suites: Registry[Any] = Registry("suite", required=("attacks",))
        self.zoos: Registry[Any] = Registry("zoo", required=("load", "models"))
        self.datasets: Registry[Any] = Registry("dataset", required=("train", "test", "num_classes"))

    def by_kind(self, kind: str) -> Registry[Any]:
        return {
            "schemes": self.schemes,
            "attacks": self.attacks,
            "suites": self.suites,
            "zoos": self.zoos,
            "datasets": self.datasets,
        }[kind]
