"""Finding plugins and filling the registries.

Plugins are found through the ``robustft`` entry-point group, the built-in ones included (they are
listed in robustft's own ``pyproject.toml``). Nothing is loaded at import time: :func:`get_host` builds
the plugin host on first use. Loading follows tox's order: hook specifications, then robustft's own
entry points, then the others in name order, then a check for hook implementations that match no specification (misspelt hooks).

A plugin that fails (import error, exception inside a hook, malformed or duplicate registration, an
unknown hook) is named in one :class:`PluginWarning` and skipped; every other plugin keeps working.
With ``ROBUSTFT_STRICT_PLUGINS=1`` (or ``strict=True``) the first such failure raises
:class:`PluginError` instead.
"""

from __future__ import annotations

import difflib
import os
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from robustft import hookspecs
from robustft.errors import UserError
from robustft.registry import Registries

ENTRY_POINT_GROUP = "robustft"
STRICT_ENV = "ROBUSTFT_STRICT_PLUGINS"

#: Registry kind -> hook that fills it.
REGISTER_HOOKS = {
    "schemes": "register_schemes",
    "attacks": "register_attacks",
    "suites": "register_suites",
    "zoos": "register_zoos",
    "datasets": "register_datasets",
}


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed; the message names it."""


class PluginError(UserError):
    """A plugin failed while strict plugin loading is on."""


@dataclass
class PluginInfo:
    """An installed plugin as ``robustft plugins`` shows it."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginHost:
    """A pluggy plugin manager plus the registries its plugins fill."""

    def __init__(self, *, strict: bool | None = None, entry_points: bool = True) -> None:
        self.strict = strict_from_env() if strict is None else strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self._registries: Registries | None = None
        if entry_points:
            self._load_entry_points()
        self._check_unknown_hooks()

    # ----------------------------------------------------------------------------------- loading

    def _fail(self, plugin: str, what: str) -> None:
        message = f"plugin {plugin!r} was skipped: {what}"
        if self.strict:
            raise PluginError(f"Plugin {plugin!r} failed ({what}); unset {STRICT_ENV} to skip broken plugins.")
        warnings.warn(message, PluginWarning, stacklevel=3)
        if plugin in self.plugins:
            self.plugins[plugin].error = what

    def _load_entry_points(self) -> None:
        # robustft's own plugins first, so a third party can never take a built-in name; then by name.
        def order(ep: metadata.EntryPoint) -> tuple[bool, str]:
            dist = getattr(ep, "dist", None)
            return (dist is None or dist.metadata["Name"] != hookspecs.PROJECT_NAME, ep.name)

        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=order)
        seen: set[str] = set()
        for ep in eps:
            if ep.name in seen:  # the same distribution visible twice on sys.path
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
            )
            self.plugins[ep.name] = info
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=ep.name)
            except Exception as exc:  # noqa: BLE001 - any failure of a third party's import is reported
                self._fail(ep.name, f"{type(exc).__name__}: {exc}")
                continue
            info.hooks = self._hooks_of(ep.name)

    def register(self, plugin: Any, name: str | None = None, *, version: str | None = None) -> str:
        """Register a plugin object or module by hand (for library users and tests)."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)),
                                        distribution=None, version=version, hooks=self._hooks_of(name))
        self._check_unknown_hooks()
        self._registries = None
        return name

    def _hooks_of(self, name: str) -> list[str]:
        plugin = self.pm.get_plugin(name)
        return sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])

    def _check_unknown_hooks(self) -> None:
        """Catch misspelt hook implementations (what pluggy's ``check_pending`` reports), one plugin at a time."""
        known = [name for name in dir(hookspecs) if name.startswith("register_")]
        for hook_name in list(vars(self.pm.hook)):
            caller = getattr(self.pm.hook, hook_name)
            if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if impl.opts.get("optionalhook"):
                    continue
                close = difflib.get_close_matches(hook_name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                plugin_name = impl.plugin_name
                self.pm.unregister(name=plugin_name)
                self._fail(plugin_name, f"it implements unknown hook {hook_name!r}{hint}")

    # -------------------------------------------------------------------------------- registries

    @property
    def registries(self) -> Registries:
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def _collect(self) -> Registries:
        registries = Registries()
        for kind, hook_name in REGISTER_HOOKS.items():
            registry = registries.by_kind(kind)
            caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
            # Each implementation is called on its own so that one failing plugin cannot hide the others.
            for impl in caller.get_hookimpls():  # registration order: built-ins first
                pending: list[Any] = []
                try:
                    impl.function(register=pending.append)
                    staged = Registries().by_kind(kind)
                    for obj in pending:  # validate everything (names and aliases too) before adding anything
                        staged.add(obj, impl.plugin_name)
                        registry.check_free(obj, impl.plugin_name)
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the others down
                    self._fail(impl.plugin_name, f"{hook_name} raised {type(exc).__name__}: {exc}")
                    continue
                for obj in pending:
                    registry.add(obj, impl.plugin_name)
        return registries

    def call_commands(self, app: Any) -> None:
        for impl in self.pm.hook.register_commands.get_hookimpls():
            try:
                impl.function(app=app)
            except Exception as exc:  # noqa: BLE001
                self._fail(impl.plugin_name, f"register_commands raised {type(exc).__name__}: {exc}")


def obj_name(obj: Any) -> str:
    return str(getattr(obj, "name", ""))


_HOST: PluginHost | None = None


def get_host(*, reload: bool = False) -> PluginHost:
    """The process-wide plugin host, built on first use."""
    global _HOST
    if _HOST is None or reload:
        _HOST = PluginHost()
    return _HOST


def set_host(host: PluginHost | None) -> None:
    """Replace the process-wide host (tests, embedding applications)."""
    global _HOST
    _HOST = host


def registries() -> Registries:
    return get_host().registries

