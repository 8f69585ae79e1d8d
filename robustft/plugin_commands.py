"""Sub-commands contributed by plugins, without loading every plugin at every start.

Loading the plugins imports their modules, and through them torch: about two seconds. The command line
needs plugin commands only when the user names one, or asks for the root help that lists them. So:

* a built-in command (``finetune``, ``eval``, ...) and ``--version`` load no plugin here;
* any other command name loads the plugins and lets their ``register_commands`` hooks add their commands;
* the root help (``robustft``, ``robustft --help``) lists plugin commands from a small manifest in the cache
  folder (name and one line of help each), written the last time the plugins were loaded for it and keyed by
  the installed ``robustft`` entry points (name, target, distribution, version, and whether
  ``ROBUSTFT_DISABLE_PLUGINS`` switches each off). When the manifest is missing or stale, the plugins are
  loaded once and the manifest is rewritten.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from robustft.io import DiskFullError, atomic_write_text
from robustft.paths import cache_dir
from robustft.pluginmanager import ENTRY_POINT_GROUP, disable_keys, disabled_from_env

MANIFEST_NAME = "plugin-commands.json"


def entry_point_fingerprint() -> str:
    """A digest of the installed ``robustft`` entry points: changes when a plugin is added, removed, upgraded,
    or switched off or on with ``ROBUSTFT_DISABLE_PLUGINS``."""
    disabled = disabled_from_env()
    rows = sorted(
        (
            ep.name,
            ep.value,
            ep.dist.metadata["Name"] if ep.dist else "",
            ep.dist.version if ep.dist else "",
            bool(disable_keys(ep.name, ep.dist.metadata["Name"] if ep.dist else None) & disabled),
        )
        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)
    )
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def manifest_path() -> Path:
    return cache_dir() / MANIFEST_NAME


def first_command(argv: list[str]) -> str | None:
    """The sub-command named on the command line (the first word that is not an option), if any."""
    return next((word for word in argv if not word.startswith("-")), None)


def command_entries(app: Any) -> list[dict[str, str]]:
    """Name and first help line of each command and command group registered on a typer app."""
    from typer.main import get_command_name

    entries = []
    for info in [*app.registered_commands, *app.registered_groups]:
        callback = getattr(info, "callback", None)
        name = info.name or (get_command_name(callback.__name__) if callback else None)
        if not name:
            continue
        text = info.help or (callback.__doc__ if callback else None) or ""
        entries.append({"name": name, "help": text.strip().splitlines()[0] if text.strip() else ""})
    return entries


def read_manifest() -> list[dict[str, str]] | None:
    """The cached plugin commands, or None when no manifest matches the installed plugins."""
    try:
        data = json.loads(manifest_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("fingerprint") != entry_point_fingerprint():
        return None
    commands = data.get("commands")
    valid = isinstance(commands, list) and all(
        isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("help"), str) for c in commands
    )
    return commands if valid else None


def write_manifest(commands: list[dict[str, str]]) -> None:
    """Best effort: a read-only cache folder only costs the next start its speed."""
    try:
        atomic_write_text(manifest_path(), json.dumps({"fingerprint": entry_point_fingerprint(), "commands": commands}))
    except (OSError, DiskFullError):  # a full disk too: the manifest only saves time
        pass


def add_plugin_commands(app: Any) -> None:
    """Load the plugins and let them add their commands (for a command the core does not have)."""
    from robustft.pluginmanager import get_host

    get_host().call_commands(app)


def add_listed_plugin_commands(app: Any) -> None:
    """For the root help: list plugin commands from the manifest, loading the plugins only when it is stale."""
    commands = read_manifest()
    if commands is None:
        before = {entry["name"] for entry in command_entries(app)}
        add_plugin_commands(app)
        write_manifest([entry for entry in command_entries(app) if entry["name"] not in before])
        return
    for entry in commands:
        # Shown in the help only: naming the command on the command line loads its plugin instead.
        app.command(entry["name"], help=entry["help"])(_listed_only)


def _listed_only() -> None:
    """A help-listing stand-in; never run, because naming a plugin command loads the real one first."""
