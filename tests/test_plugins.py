"""The plugin system: discovery through entry points, and faults that stay contained."""

from __future__ import annotations

import json
import types

import pytest
import typer
from helpers import make_distribution, run_cli, with_path

from robustft import hookimpl
from robustft.contracts import AttackFactory, ModelInfo, ModelZoo, Scheme
from robustft.norms import Norm
from robustft.pluginmanager import PluginError, PluginHost, PluginWarning

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


class NotAScheme:
    """Has a name and a loss, but does not derive from robustft.contracts.Scheme."""

    name = "not-a-scheme"

    def loss(self, model, x, y, ctx):  # pragma: no cover - never called
        raise AssertionError


class SchemeWithoutLoss(Scheme):
    name = "no-loss"


class NotAZoo:
    name = "not-a-zoo"

    def models(self):  # pragma: no cover - never called
        return []

    def load(self, info, **options):  # pragma: no cover - never called
        return None


class AliasesAsString(GoodScheme):
    name = "string-aliases"
    aliases = "oops"


FAULTS = [
    ("register_schemes", raising_hook, "boom"),
    ("register_schemes", lambda register: register(object()), "without a string 'name'"),
    ("register_schemes", lambda register: register(NotAScheme), "not a subclass of robustft.contracts.Scheme"),
    ("register_schemes", lambda register: register(SchemeWithoutLoss), "without loss"),
    ("register_schemes", lambda register: register(GoodScheme((Norm.LINF,))), "not a subclass"),
    ("register_schemes", lambda register: register(AliasesAsString), "'aliases' is not a tuple"),
    ("register_zoos", lambda register: register(NotAZoo()), "not a robustft.contracts.ModelZoo instance"),
]
FAULT_IDS = ["raises", "malformed", "not-a-subclass", "lacks-loss", "instance-not-class", "bad-aliases", "zoo-not-a-zoo"]


@pytest.mark.parametrize("hook_name,bad_hook,match", FAULTS, ids=FAULT_IDS)
def test_faulty_plugin_is_skipped_and_others_keep_working(hook_name, bad_hook, match):
    host = PluginHost()  # the built-ins, plus:
    host.register(plugin(register_schemes=lambda register: register(GoodScheme)), name="good")
    host.register(plugin(**{hook_name: bad_hook}), name="bad")
    with pytest.warns(PluginWarning, match=match) as caught:
        registries = host.registries
    assert all("'bad'" in str(w.message) for w in caught)  # the warning names the plugin
    assert "good-scheme" in registries.schemes and "e-at" in registries.schemes and "builtin" in registries.zoos
    assert registries.schemes.entry("e-at").plugin == "eat"
    assert host.plugins["bad"].error is not None and host.plugins["good"].error is None


@pytest.mark.parametrize("hook_name,bad_hook,match", FAULTS, ids=FAULT_IDS)
def test_faulty_plugin_is_an_error_when_strict(hook_name, bad_hook, match):
    host = PluginHost(strict=True)  # the built-ins load cleanly even when strict
    host.register(plugin(register_schemes=lambda register: register(GoodScheme)), name="good")
    host.register(plugin(**{hook_name: bad_hook}), name="bad")
    with pytest.raises(PluginError, match="Plugin 'bad' failed") as raised:
        host.registries  # noqa: B018 - building the registries runs the hooks
    assert match.split()[0] in str(raised.value) and len(str(raised.value).splitlines()) == 1


def test_hook_that_raises_in_register_commands_is_named_and_skipped():
    host = PluginHost(entry_points=False)
    host.register(plugin(register_commands=lambda app: (_ for _ in ()).throw(RuntimeError("cli boom"))), name="cmds")
    with pytest.warns(PluginWarning, match="'cmds'.*cli boom"):
        host.call_commands(typer.Typer())
    strict = PluginHost(entry_points=False, strict=True)
    strict.register(plugin(register_commands=lambda app: (_ for _ in ()).throw(RuntimeError("cli boom"))), name="cmds")
    with pytest.raises(PluginError, match="'cmds'"):
        strict.call_commands(typer.Typer())


# ----------------------------------------------------------------- malformed results at use time


class StringZoo(ModelZoo):
    """A zoo whose load() returns a string instead of a model."""

    name = "stringzoo"

    def models(self):
        return [ModelInfo(name="nothing", dataset="digits")]

    def load(self, info, *, device, dataset=None, **options):
        return "not a model"


class TupleLossScheme(Scheme):
    name = "bad-loss"
    default_norms = (Norm.LINF,)

    def loss(self, model, x, y, ctx):
        return 1.0  # not a (tensor, logs) pair


class NoAttackFactory(AttackFactory):
    name = "no-attack"

    def build(self, norm, eps, *, steps, purpose="train", **options):
        return "not an attack"


def faulty_host(strict: bool) -> PluginHost:
    host = PluginHost(strict=strict)
    host.register(
        plugin(
            register_zoos=lambda register: register(StringZoo()),
            register_schemes=lambda register: register(TupleLossScheme),
            register_attacks=lambda register: register(NoAttackFactory()),
        ),
        name="faulty",
    )
    return host


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
@pytest.mark.parametrize(
    "options,match",
    [
        ({"model": "stringzoo:nothing"}, r"model zoo 'stringzoo' load\(\) returned str, not torch.nn.modules.module.Module"),
        ({"scheme": "bad-loss"}, r"scheme 'bad-loss' loss\(\) returned float"),
        ({"attack": "no-attack"}, r"attack 'no-attack' build\(\) returned str"),
    ],
    ids=["zoo-load-not-a-module", "scheme-loss-not-a-pair", "attack-build-not-an-attack"],
)
def test_malformed_results_at_use_time_are_one_sentence_naming_the_plugin(tmp_path, base_model, strict, options, match):
    import robustft
    from robustft.registry import PluginFault

    with pytest.raises(PluginFault, match=match) as raised:
        robustft.finetune(host=faulty_host(strict), epochs=1, n_train=32, batch_size=32, out=str(tmp_path / "run"), **options)
    message = str(raised.value)
    assert message.startswith("Plugin 'faulty' is faulty") and len(message.splitlines()) == 1
    if "model" in options:  # found before any compute: no run folder is left behind
        assert not (tmp_path / "run").exists()


def test_unknown_scheme_suggests_the_closest():
    from robustft.errors import UnknownNameError

    host = PluginHost()
    with pytest.raises(UnknownNameError, match="did you mean 'e-at'"):
        host.registries.schemes.get("eat2")
