"""The plugin system: discovery through entry points, and faults that stay contained."""

from __future__ import annotations

import json
import types

import pytest

from robustft import hookimpl
from robustft.contracts import Scheme
from robustft.pluginmanager import PluginError, PluginHost, PluginWarning

from helpers import make_distribution, run_cli, with_path

BUILTIN_PLUGINS = {"apgd", "eat-protocol", "eat", "single-norm", "builtin-zoo", "digits"}


def test_builtins_are_found_through_entry_points():
    host = PluginHost()
    assert BUILTIN_PLUGINS <= set(host.plugins)
    assert all(host.plugins[name].distribution == "robustft" for name in BUILTIN_PLUGINS)
    assert {"e-at", "e-at-uniform", "lp-at", "clean"} <= set(host.registries.schemes.names())
    assert "apgd" in host.registries.attacks
    assert "digits" in host.registries.datasets


def test_plugins_command_json():
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["eat"]["hooks"] == ["register_schemes"]
    assert plugins["eat"]["version"] and plugins["eat"]["distribution"] == "robustft"


def test_list_schemes_json():
    result = run_cli("list", "schemes", "--json")
    assert result.returncode == 0, result.stderr
    names = {s["name"] for s in json.loads(result.stdout)["schemes"]}
    assert {"e-at", "e-at-uniform", "lp-at", "clean"} <= names


BROKEN_IMPORT = "raise ImportError('this plugin is broken on purpose')\n"


def test_plugin_that_fails_to_import_is_named_and_skipped(tmp_path):
    folder = make_distribution(tmp_path / "site", "robustft-broken", "robustft_broken", BROKEN_IMPORT)
    result = run_cli("list", "schemes", env=with_path(folder))
    assert result.returncode == 0
    assert "e-at" in result.stdout
    warning_lines = [line for line in result.stderr.splitlines() if "robustft-broken" in line]
    assert len(warning_lines) == 1 and "warning" in warning_lines[0]
    assert "Traceback" not in result.stderr


def test_strict_mode_makes_a_broken_plugin_an_error(tmp_path):
    folder = make_distribution(tmp_path / "site", "robustft-broken", "robustft_broken", BROKEN_IMPORT)
    result = run_cli("list", "schemes", env={**with_path(folder), "ROBUSTFT_STRICT_PLUGINS": "1"})
    assert result.returncode != 0
    assert "robustft-broken" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


class GoodScheme(Scheme):
    name = "good-scheme"
    description = "a scheme from a well-behaved plugin"

    def loss(self, model, x, y, ctx):  # pragma: no cover - never trained here
        raise AssertionError


def plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


def test_misspelt_hook_is_caught_with_a_suggestion():
    host = PluginHost(entry_points=False)
    with pytest.warns(PluginWarning, match="register_schemes"):
        host.register(plugin(register_scheme=lambda register: register(GoodScheme)), name="typo")
    assert "good-scheme" not in host.registries.schemes


def test_misspelt_hook_is_an_error_when_strict():
    host = PluginHost(entry_points=False, strict=True)
    with pytest.raises(PluginError):
        host.register(plugin(register_scheme=lambda register: register(GoodScheme)), name="typo")


def raising_hook(register):
    raise RuntimeError("boom")


@pytest.mark.parametrize(
    "bad_hook,match",
    [
        (raising_hook, "boom"),
        (lambda register: register(object()), "without a string 'name'"),
        (lambda register: register(types.SimpleNamespace(name="e-at", loss=None)), "already registered"),
    ],
    ids=["raises", "malformed", "duplicate"],
)
def test_faulty_plugin_is_skipped_and_others_keep_working(bad_hook, match):
    host = PluginHost()  # the built-ins, plus:
    host.register(plugin(register_schemes=lambda register: register(GoodScheme)), name="good")
    host.register(plugin(register_schemes=bad_hook), name="bad")
    with pytest.warns(PluginWarning, match=match):
        schemes = host.registries.schemes
    assert "good-scheme" in schemes and "e-at" in schemes
    assert schemes.entry("e-at").plugin == "eat"  # a duplicate never replaces the original


def test_unknown_scheme_suggests_the_closest():
    from robustft.errors import UnknownNameError

    host = PluginHost()
    with pytest.raises(UnknownNameError, match="did you mean 'e-at'"):
        host.registries.schemes.get("eat2")
