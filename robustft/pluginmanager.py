"""Finding plugins and filling the registries.

Plugins are found through the ``robustft`` entry-point group, the built-in ones included (they are
listed in robustft's own ``pyproject.toml``). Nothing is loaded at import time: :func:`get_host` builds
the plugin host on first use. Loading follows tox's order: hook specifications, then robustft's own
entry points, then the others in name order, then a check for hook implementations that match no
specification (misspelt hooks).

An entry point is known by its distribution and its name, so a third party's entry point may share a
built-in's name (``msd``): it loads as ``DIST:NAME``. Faults stay contained, and each warning names the
plugin, its distribution and version, and how to switch it off:

* a plugin that fails (import error, exception inside any hook, a malformed registration, an unknown
  hook) is removed whole, every registration of it in every registry included;
* a name or alias that is already taken (by a built-in, or a plugin loaded earlier) is refused on its
  own: the earlier owner keeps it, and the plugin keeps its other names.

With ``ROBUSTFT_STRICT_PLUGINS=1`` (or ``strict=True``) the first such fault raises :class:`PluginError`
instead. ``ROBUSTFT_DISABLE_PLUGINS=NAME,...`` switches plugins off without uninstalling them (by
entry-point name, distribution name or ``DIST:NAME``): they are never imported, and pluggy blocks their
names. :meth:`PluginHost.culprit` finds the plugin an unexpected exception passed through, so the command
line can name it instead of printing a traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from robustft import hookspecs
from robustft.errors import UserError
from robustft.registry import Registries

ENTRY_POINT_GROUP = "robustft"
STRICT_ENV = "ROBUSTFT_STRICT_PLUGINS"
DISABLE_ENV = "ROBUSTFT_DISABLE_PLUGINS"

#: Registry kind -> hook that fills it.
REGISTER_HOOKS = {
    "schemes": "register_schemes",
    "attacks": "register_attacks",
    "suites": "register_suites",
    "zoos": "register_zoos",
    "datasets": "register_datasets",
    "loggers": "register_loggers",
}


class PluginWarning(UserWarning):
    """A plugin, or one of its names, was skipped; the message names it and its distribution."""


class PluginError(UserError):
    """A plugin failed while strict plugin loading is on."""


class PluginCrash(UserError):
    """An unexpected exception raised inside a third-party plugin while it was used."""


def normalize(name: str) -> str:
    """A distribution or entry-point name as packaging compares them (PEP 503): ``Foo_Bar`` is ``foo-bar``."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def strict_from_env() -> bool:
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def disabled_from_env() -> frozenset[str]:
    """The normalised names in ``ROBUSTFT_DISABLE_PLUGINS`` (comma-separated)."""
    return frozenset(normalize(token) for token in os.environ.get(DISABLE_ENV, "").split(",") if token.strip())


def disable_keys(ep_name: str, distribution: str | None) -> set[str]:
    """The names that switch an entry point off: its own, its distribution's, and ``DIST:NAME``."""
    keys = {normalize(ep_name)}
    if distribution:
        keys |= {normalize(distribution), f"{normalize(distribution)}:{normalize(ep_name)}"}
    return keys


def distribution_of(ep: metadata.EntryPoint) -> tuple[str | None, str | None]:
    dist = getattr(ep, "dist", None)
    return (dist.metadata["Name"], dist.version) if dist is not None else (None, None)


def is_builtin(distribution: str | None) -> bool:
    return distribution is not None and normalize(distribution) == hookspecs.PROJECT_NAME


@dataclass
class PluginInfo:
    """An installed plugin as ``robustft plugins`` shows it.

    ``name`` is the plugin's name in the host: the entry-point name, or ``DIST:NAME`` when another
    distribution's entry point loaded under that name first.
    """

    name: str
    module: str
    distribution: str | None
    version: str | None
    entry_point: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    refused: list[str] = field(default_factory=list)
    disabled: bool = False
    off_switch: str | None = None  # the ROBUSTFT_DISABLE_PLUGINS value that switches this one plugin off

    @property
    def label(self) -> str:
        """``'name'``, plus ``(distribution version)`` for an installed plugin: what a user needs to act."""
        if self.distribution is None:
            return repr(self.name)
        return f"{self.name!r} ({self.distribution}{' ' + self.version if self.version else ''})"

    @property
    def status(self) -> str:
        if self.disabled:
            return "disabled"
        if self.error is not None:
            return "failed"
        return "partly refused" if self.refused else "ok"

    def remedy(self) -> str:
        """How to get rid of it: the switch, and the distribution to uninstall (never robustft itself)."""
        if self.off_switch is None:
            return ""
        uninstall = f" or uninstall {self.distribution}" if self.distribution and not is_builtin(self.distribution) else ""
        return f"switch it off with {DISABLE_ENV}={self.off_switch}{uninstall}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "entry_point": self.entry_point,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
            "refused": self.refused,
        }


class PluginHost:
    """A pluggy plugin manager plus the registries its plugins fill."""

    def __init__(self, *, strict: bool | None = None, entry_points: bool = True, disabled: frozenset[str] | None = None) -> None:
        """``disabled``: normalised names to switch off (default: ``ROBUSTFT_DISABLE_PLUGINS``)."""
        self.strict = strict_from_env() if strict is None else strict
        self.disabled = disabled_from_env() if disabled is None else frozenset(normalize(d) for d in disabled)
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.problems: list[str] = []  # every fault and refusal, in order (``robustft plugins`` under strict mode)
        self._registries: Registries | None = None
        if entry_points:
            self._load_entry_points()
        self._check_unknown_hooks()

    # ----------------------------------------------------------------------------------- faults

    def _problem(self, message: str) -> None:
        self.problems.append(message)
        warnings.warn(message, PluginWarning, stacklevel=4)

    def _fail(self, plugin: str, what: str) -> None:
        """``plugin`` is faulty: remove it whole (every hook, every registration) and say so."""
        info = self.plugins.get(plugin)
        label = info.label if info else repr(plugin)
        if info is not None:
            info.error = what
        if self.strict:
            raise PluginError(f"Plugin {label} failed ({what}); unset {STRICT_ENV} to skip broken plugins.")
        self._remove(plugin)
        remedy = info.remedy() if info else ""
        self._problem(f"plugin {label} was skipped: {what}" + (f"; {remedy}." if remedy else "."))

    def _refuse(self, plugin: str, what: str, kept: str) -> None:
        """One name of ``plugin`` is taken: refuse that name only."""
        info = self.plugins.get(plugin)
        label = info.label if info else repr(plugin)
        if info is not None:
            info.refused.append(what)
        if self.strict:
            raise PluginError(f"Plugin {label} failed (it {what}); unset {STRICT_ENV} to keep the earlier owner's name instead.")
        self._problem(f"plugin {label} {what}: {kept}.")

    def _remove(self, plugin: str) -> None:
        if self.pm.has_plugin(plugin):
            self.pm.unregister(name=plugin)
        if self._registries is not None:
            for registry in self._registries.kinds().values():
                registry.remove_plugin(plugin)

    # ----------------------------------------------------------------------------------- loading

    def _load_entry_points(self) -> None:
        # robustft's own plugins first, so a third party can never take a built-in name; then by name.
        def order(ep: metadata.EntryPoint) -> tuple[bool, str, str]:
            distribution = distribution_of(ep)[0]
            return (not is_builtin(distribution), ep.name, normalize(distribution or ""))

        eps: list[metadata.EntryPoint] = []
        seen: set[tuple[str, str]] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=order):
            key = (normalize(distribution_of(ep)[0] or ""), ep.name)
            if key not in seen:  # the same distribution visible twice on sys.path: the first one counts
                seen.add(key)
                eps.append(ep)
        shared = {ep.name for ep in eps if sum(other.name == ep.name for other in eps) > 1}
        matched: set[str] = set()
        for ep in eps:
            distribution, version = distribution_of(ep)
            name = ep.name if ep.name not in self.plugins else f"{distribution}:{ep.name}"
            keys = disable_keys(ep.name, distribution)
            info = PluginInfo(
                name=name,
                module=ep.value,
                distribution=distribution,
                version=version,
                entry_point=ep.name,
                off_switch=f"{distribution}:{ep.name}" if ep.name in shared and distribution else ep.name,
            )
            self.plugins[name] = info
            if keys & self.disabled:
                matched |= keys & self.disabled
                info.disabled = True
                self.pm.set_blocked(name)  # never imported; a later register() under this name is refused too
                continue
            try:
                plugin = ep.load()
                self.pm.register(plugin, name=name)
            except Exception as exc:  # noqa: BLE001 - any failure of a third party's import is reported
                self._fail(name, f"{type(exc).__name__}: {_first_line(exc)}")
                continue
            info.hooks = self._hooks_of(name)
        for token in sorted(self.disabled - matched):
            names = sorted(
                {key for info in self.plugins.values() for key in disable_keys(info.entry_point or info.name, info.distribution)}
            )
            close = difflib.get_close_matches(token, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            if self.strict:
                raise PluginError(f"{DISABLE_ENV} names {token!r}, which is no installed plugin{hint}; correct it or unset {STRICT_ENV}.")
            self._problem(f"{DISABLE_ENV} names {token!r}, which is no installed plugin{hint}.")

    def register(self, plugin: Any, name: str | None = None, *, version: str | None = None, distribution: str | None = None) -> str | None:
        """Register a plugin object or module by hand (for library users and tests); None when its name is disabled."""
        name = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        if self.pm.is_blocked(name):
            return None
        self.pm.register(plugin, name=name)
        self.plugins[name] = PluginInfo(
            name=name,
            module=getattr(plugin, "__name__", repr(plugin)),
            distribution=distribution,
            version=version,
            entry_point=None,
            hooks=self._hooks_of(name),
        )
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
            for impl in list(caller.get_hookimpls()):
                if impl.opts.get("optionalhook") or not self.pm.has_plugin(impl.plugin_name):
                    continue
                close = difflib.get_close_matches(hook_name, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self._fail(impl.plugin_name, f"it implements unknown hook {hook_name!r}{hint}")

    # -------------------------------------------------------------------------------- registries

    @property
    def registries(self) -> Registries:
        if self._registries is None:
            self._registries = self._collect()
        return self._registries

    def _collect(self) -> Registries:
        """Call every register hook, then fill the registries plugin by plugin (built-ins first).

        All hooks run before anything is added, so that a plugin failing in its last hook leaves nothing
        behind from its first ones.
        """
        registries = Registries()
        staged: dict[str, list[tuple[str, Any, str, tuple[str, ...]]]] = {}  # plugin -> (kind, obj, name, aliases)
        for kind, hook_name in REGISTER_HOOKS.items():
            registry = registries.by_kind(kind)
            caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
            # Each implementation is called on its own so that one failing plugin cannot hide the others (a copy of
            # the list: a failing plugin is unregistered on the way).
            for impl in list(caller.get_hookimpls()):
                plugin = impl.plugin_name
                if not self.pm.has_plugin(plugin):  # failed in an earlier hook
                    continue
                pending: list[Any] = []
                try:
                    impl.function(register=pending.append)
                    checked = [(kind, obj, *registry.validate(obj, plugin)) for obj in pending]
                except Exception as exc:  # noqa: BLE001 - a broken plugin must not take the others down
                    staged.pop(plugin, None)
                    self._fail(plugin, f"{hook_name} raised {type(exc).__name__}: {_first_line(exc)}")
                    continue
                staged.setdefault(plugin, []).extend(checked)
        order = {name: index for index, name in enumerate(self.plugins)}
        for plugin in sorted(staged, key=lambda p: order.get(p, len(order))):
            for kind, obj, name, aliases in staged[plugin]:
                self._add(registries.by_kind(kind), obj, plugin, name, aliases)
        return registries

    def _add(self, registry: Any, obj: Any, plugin: str, name: str, aliases: tuple[str, ...]) -> None:
        taken = registry.owner(name)
        if taken is not None:
            self._refuse(
                plugin,
                f"registered {registry.kind} {name!r}, which {self._label(taken.plugin)} already registered",
                f"that {registry.kind} was refused and the plugin's other registrations are kept",
            )
            return
        kept: list[str] = []
        for alias in aliases:
            taken = registry.owner(alias)
            if taken is not None:
                self._refuse(
                    plugin,
                    f"gave {registry.kind} {name!r} the alias {alias!r}, which {self._label(taken.plugin)} already registered",
                    f"that alias was refused and {registry.kind} {name!r} is kept",
                )
            elif alias.lower() not in (k.lower() for k in kept):
                kept.append(alias)
        registry.add(obj, plugin, aliases=tuple(kept))

    def _label(self, plugin: str) -> str:
        info = self.plugins.get(plugin)
        return f"plugin {info.label if info else repr(plugin)}"

    def call_commands(self, app: Any) -> None:
        """Let the plugins add their sub-commands to ``app`` (a typer app); a failing hook adds none."""
        self.registries  # noqa: B018 - building the registries runs every hook; a plugin that fails in another hook is removed before it adds commands
        for impl in list(self.pm.hook.register_commands.get_hookimpls()):
            commands, groups = len(app.registered_commands), len(app.registered_groups)
            try:
                impl.function(app=app)
            except Exception as exc:  # noqa: BLE001
                del app.registered_commands[commands:], app.registered_groups[groups:]
                self._fail(impl.plugin_name, f"register_commands raised {type(exc).__name__}: {_first_line(exc)}")

    def check(self) -> None:
        """Run every hook once (on a scratch command line), so that each fault shows up in :attr:`plugins`."""
        import typer

        self.call_commands(typer.Typer())

    # ------------------------------------------------------------------------------ blame at run time

    def culprit(self, exc: BaseException) -> PluginInfo | None:
        """The third-party plugin whose code ``exc`` was raised in or passed through (the innermost such
        frame, along the exception's chain), or None when no installed plugin's module is on its path."""
        owner = self._module_owners()
        chain: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in chain:
            chain.add(id(current))
            for module in reversed(list(_traceback_modules(current))):
                plugin = owner(module)
                if plugin is not None:
                    return self.plugins[plugin]
            current = current.__cause__ or current.__context__
        return None

    def _module_owners(self) -> Callable[[str], str | None]:
        """A function from a module name to the third-party plugin whose code it is.

        A plugin owns its entry-point module and the modules of the objects it registered, with their
        submodules; and the top-level package of each, unless another distribution (robustft included)
        has modules under it too.
        """
        registered: dict[str, set[str]] = {}
        for registry in self._registries.kinds().values() if self._registries is not None else ():
            for entry in registry:
                obj = entry.obj
                registered.setdefault(entry.plugin, set()).add(obj.__module__ if isinstance(obj, type) else type(obj).__module__)
        modules = {name: {info.module.partition(":")[0].strip()} | registered.get(name, set()) for name, info in self.plugins.items()}
        claims: dict[str, set[str]] = {hookspecs.PROJECT_NAME: {hookspecs.PROJECT_NAME}}  # top-level package -> distributions
        for name, info in self.plugins.items():
            for module in modules[name]:
                claims.setdefault(module.split(".")[0], set()).add(normalize(info.distribution or name))
        exact: dict[str, str] = {}
        for name, info in self.plugins.items():
            if info.distribution is None or is_builtin(info.distribution) or info.disabled:
                continue
            for module in modules[name]:  # robustft's own modules stay robustft's, even where a plugin reuses a class
                if hookspecs.PROJECT_NAME not in claims[module.split(".")[0]]:
                    exact.setdefault(module, name)
        by_root: dict[str, str] = {}
        for module, name in exact.items():
            top = module.split(".")[0]
            if claims[top] == {normalize(self.plugins[name].distribution or name)}:
                by_root.setdefault(top, name)

        def owner_of(module: str) -> str | None:
            parts = module.split(".")
            for end in range(len(parts), 0, -1):  # the module, then its packages
                found = exact.get(".".join(parts[:end]))
                if found is not None:
                    return found
            return by_root.get(parts[0])

        return owner_of

    def crash(self, exc: BaseException) -> None:
        """Raise :class:`PluginCrash` naming the plugin ``exc`` came from; return when it came from none."""
        info = self.culprit(exc)
        if info is None:
            return
        remedy = info.remedy()
        raise PluginCrash(
            f"Plugin {info.label} raised {type(exc).__name__}: {_first_line(exc) or 'no detail'} "
            f"(rerun with --debug for the traceback; report it to the plugin's authors" + (f", or {remedy}" if remedy else "") + ")."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _traceback_modules(exc: BaseException) -> Iterator[str]:
    """The module of each frame of ``exc``'s traceback, outermost first."""
    tb = exc.__traceback__
    while tb is not None:
        yield str(tb.tb_frame.f_globals.get("__name__", ""))
        tb = tb.tb_next


def obj_name(obj: Any) -> str:
    return str(getattr(obj, "name", ""))


_HOST: PluginHost | None = None


def get_host(*, reload: bool = False) -> PluginHost:
    """The process-wide plugin host, built on first use."""
    global _HOST
    if _HOST is None or reload:
        _HOST = PluginHost()
    return _HOST


def current_host() -> PluginHost | None:
    """The process-wide host if it was built (never builds one: for error reporting)."""
    return _HOST


def set_host(host: PluginHost | None) -> None:
    """Replace the process-wide host (tests, embedding applications)."""
    global _HOST
    _HOST = host


def inspection_host() -> PluginHost:
    """A host for ``robustft plugins``: every hook run once and faults recorded, never raised, even under
    ``ROBUSTFT_STRICT_PLUGINS`` (the listing is how a user finds the broken plugin)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)  # the listing shows each fault in its status column
        host = _HOST if _HOST is not None and not _HOST.strict else PluginHost(strict=False)
        host.check()
    return host


def registries() -> Registries:
    return get_host().registries
