"""Plugin discovery: entry points keyed by distribution, refused names, plugins removed whole, switching
plugins off, ``robustft plugins`` under strict mode, and errors raised inside a plugin at run time.

Distributions are fabricated offline: a module plus a ``.dist-info`` folder, what pip leaves in
site-packages, on a folder put first on the import path.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import typer
from helpers import cli_in_process, run_cli, with_path

from robustft import hookimpl
from robustft.contracts import Scheme
from robustft.pluginmanager import PluginError, PluginHost, PluginWarning, current_host, set_host


def distribution(site: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]) -> Path:
    """Install ``dist`` into ``site``: ``modules`` (dotted name -> source; a name with a dot makes a package)
    and a dist-info with ``entry_points`` (entry-point name -> module)."""
    for name, source in modules.items():
        parts = name.split(".")
        path = site.joinpath(*parts[:-1], parts[-1] + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        for depth in range(1, len(parts)):
            site.joinpath(*parts[:depth], "__init__.py").touch()
        path.write_text(source)
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[robustft]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    return site


def scheme_source(*classes: tuple[str, str, tuple[str, ...]], body: str = "        raise AssertionError('never trained')") -> str:
    """A plugin module registering one scheme per ``(class name, scheme name, aliases)``."""
    lines = ["import robustft", "from robustft.contracts import Scheme", ""]
    for cls, name, aliases in classes:
        lines += [
            f"class {cls}(Scheme):",
            f"    name = {name!r}",
            f"    aliases = {aliases!r}",
            "    def loss(self, model, x, y, ctx):",
            body,
            "",
        ]
    lines += ["@robustft.hookimpl", "def register_schemes(register):"]
    lines += [f"    register({cls})" for cls, _, _ in classes]
    return "\n".join(lines) + "\n"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A site-packages folder first on sys.path for this test, and a fresh process-wide host around it."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for name in ("ROBUSTFT_DISABLE_PLUGINS", "ROBUSTFT_STRICT_PLUGINS", "ROBUSTFT_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    set_host(None)
    yield folder
    set_host(None)


def plugin(**hooks) -> types.SimpleNamespace:
    return types.SimpleNamespace(**{name: hookimpl(function) for name, function in hooks.items()})


# ---------------------------------------------------------------------------- entry points


def test_entry_point_named_like_a_builtin_still_loads(site):
    distribution(site, "robustft-acme", "1.2.0", {"acme_msd": scheme_source(("Fast", "fast-msd", ()))}, {"msd": "acme_msd"})
    host = PluginHost(strict=True)  # nothing is wrong: strict mode loads it too
    builtin, acme = host.plugins["msd"], host.plugins["robustft-acme:msd"]
    assert builtin.distribution == "robustft" and acme.distribution == "robustft-acme" and acme.version == "1.2.0"
    assert acme.entry_point == "msd" and acme.status == "ok"
    assert host.registries.schemes.entry("fast-msd").plugin == "robustft-acme:msd"
    assert host.registries.schemes.entry("msd").plugin == "msd"  # the built-in scheme is untouched


def test_registered_name_taken_by_a_builtin_is_refused_alone(site):
    source = scheme_source(("Taken", "e-at", ()), ("AliasTaken", "acme-fresh", ("eat", "fresh")), ("Mine", "acme-mine", ()))
    distribution(site, "robustft-acme", "1.2.0", {"acme_taken": source}, {"acme": "acme_taken"})
    host = PluginHost()
    with pytest.warns(PluginWarning) as caught:
        schemes = host.registries.schemes
    messages = [str(w.message) for w in caught]
    assert messages == [
        "plugin 'acme' (robustft-acme 1.2.0) registered scheme 'e-at', which plugin 'eat' (robustft "
        f"{host.plugins['eat'].version}) already registered: that scheme was refused and the plugin's other registrations are kept.",
        "plugin 'acme' (robustft-acme 1.2.0) gave scheme 'acme-fresh' the alias 'eat', which plugin 'eat' (robustft "
        f"{host.plugins['eat'].version}) already registered: that alias was refused and scheme 'acme-fresh' is kept.",
    ]
    assert schemes.entry("e-at").plugin == "eat" and schemes.entry("eat").name == "e-at"  # the built-in keeps both
    assert schemes.entry("acme-fresh").aliases == ("fresh",) and schemes.entry("acme-mine").plugin == "acme"
    assert host.plugins["acme"].status == "partly refused" and len(host.plugins["acme"].refused) == 2


def test_taken_name_is_an_error_when_strict(site):
    distribution(site, "robustft-acme", "1.2.0", {"acme_taken2": scheme_source(("Taken", "e-at", ()))}, {"acme": "acme_taken2"})
    with pytest.raises(PluginError, match=r"^Plugin 'acme' \(robustft-acme 1.2.0\) failed \(it registered scheme 'e-at'") as raised:
        PluginHost(strict=True).registries  # noqa: B018 - building the registries runs the hooks
    assert len(str(raised.value).splitlines()) == 1


# ----------------------------------------------------------------------------- removed whole


class KeptScheme(Scheme):
    name = "half-scheme"

    def loss(self, model, x, y, ctx):  # pragma: no cover - never trained here
        raise AssertionError


def raise_in_hook(**_: object) -> None:
    raise RuntimeError("second hook broke")


def test_plugin_failing_in_a_later_hook_leaves_nothing_behind():
    host = PluginHost(entry_points=False)
    host.register(plugin(register_schemes=lambda register: register(KeptScheme), register_zoos=raise_in_hook), name="half")
    with pytest.warns(PluginWarning, match=r"plugin 'half' was skipped: register_zoos raised RuntimeError: second hook broke\."):
        registries = host.registries
    assert "half-scheme" not in registries.schemes
    assert host.plugins["half"].status == "failed" and not host.pm.has_plugin("half")


def test_plugin_failing_in_register_commands_is_removed_from_every_registry():
    def commands(app):
        @app.command("half-command")
        def half_command() -> None:  # pragma: no cover - never run
            """Added before the hook fails."""

        raise RuntimeError("commands broke")

    host = PluginHost(entry_points=False)
    host.register(plugin(register_schemes=lambda register: register(KeptScheme), register_commands=commands), name="half")
    assert "half-scheme" in host.registries.schemes  # collected first, as `robustft list` would
    app = typer.Typer()
    with pytest.warns(PluginWarning, match="'half' was skipped: register_commands raised RuntimeError: commands broke"):
        host.call_commands(app)
    assert app.registered_commands == []  # the command it added before failing is gone too
    assert "half-scheme" not in host.registries.schemes and not host.pm.has_plugin("half")


def test_warning_names_the_distribution_and_how_to_switch_it_off(site):
    distribution(site, "robustft-acme", "2.3.4", {"acme_broken": "raise ImportError('no such luck')\n"}, {"acme-broken": "acme_broken"})
    with pytest.warns(PluginWarning) as caught:
        host = PluginHost()
    assert [str(w.message) for w in caught] == [
        "plugin 'acme-broken' (robustft-acme 2.3.4) was skipped: ImportError: no such luck; "
        "switch it off with ROBUSTFT_DISABLE_PLUGINS=acme-broken or uninstall robustft-acme."
    ]
    assert host.plugins["acme-broken"].error == "ImportError: no such luck"


# --------------------------------------------------------------------------------- disabling


BROKEN = "raise ImportError('imported although disabled')\n"


@pytest.mark.parametrize(
    "token", ["acme-broken", "Robustft_Acme", "robustft-acme:acme-broken"], ids=["entry-point", "distribution", "dist:name"]
)
def test_disabled_plugin_is_never_imported(site, monkeypatch, recwarn, token):
    module = f"acme_off_{abs(hash(token))}"
    distribution(site, "robustft-acme", "2.3.4", {module: BROKEN}, {"acme-broken": module})
    monkeypatch.setenv("ROBUSTFT_DISABLE_PLUGINS", f" {token} ,")
    host = PluginHost(strict=True)  # disabled is not broken: strict mode does not mind
    info = host.plugins["acme-broken"]
    assert info.status == "disabled" and info.error is None and info.distribution == "robustft-acme"
    assert host.pm.is_blocked("acme-broken") and host.register(plugin(), name="acme-broken") is None
    assert not [w for w in recwarn if issubclass(w.category, PluginWarning)]
    assert "e-at" in host.registries.schemes


def test_a_builtin_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("ROBUSTFT_DISABLE_PLUGINS", "msd")
    host = PluginHost()
    assert host.plugins["msd"].status == "disabled"
    assert "msd" not in host.registries.schemes and "e-at" in host.registries.schemes


def test_disabling_an_unknown_name_suggests_the_closest(monkeypatch):
    monkeypatch.setenv("ROBUSTFT_DISABLE_PLUGINS", "msdd")
    with pytest.warns(
        PluginWarning, match=r"^ROBUSTFT_DISABLE_PLUGINS names 'msdd', which is no installed plugin \(did you mean 'msd'\?\)\.$"
    ):
        host = PluginHost()
    assert "msd" in host.registries.schemes
    with pytest.raises(PluginError, match="names 'msdd'"):
        PluginHost(strict=True)


def test_manifest_fingerprint_follows_disabling(monkeypatch):
    from robustft.plugin_commands import entry_point_fingerprint

    monkeypatch.delenv("ROBUSTFT_DISABLE_PLUGINS", raising=False)
    plain = entry_point_fingerprint()
    monkeypatch.setenv("ROBUSTFT_DISABLE_PLUGINS", "no-such-plugin")
    assert entry_point_fingerprint() == plain  # switching nothing off changes nothing
    monkeypatch.setenv("ROBUSTFT_DISABLE_PLUGINS", "msd")
    assert entry_point_fingerprint() != plain


# -------------------------------------------------------------------------- robustft plugins


def test_plugins_command_reports_under_strict_mode(tmp_path):
    site = distribution(tmp_path / "site", "robustft-acme", "2.3.4", {"acme_strict": BROKEN}, {"acme-broken": "acme_strict"})
    distribution(site, "robustft-quiet", "0.1.0", {"quiet_off": BROKEN}, {"quiet": "quiet_off"})
    env = {**with_path(site), "ROBUSTFT_STRICT_PLUGINS": "1", "ROBUSTFT_DISABLE_PLUGINS": "robustft-quiet"}
    listed = run_cli("plugins", env=env)
    assert listed.returncode == 1 and "Traceback" not in listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "acme-broken" in line)
    assert "robustft-acme" in row and "2.3.4" in row and "failed: ImportError" in row
    assert "disabled" in next(line for line in listed.stdout.splitlines() if "robustft-quiet" in line)
    assert listed.stderr.strip().splitlines() == [
        "error: ROBUSTFT_STRICT_PLUGINS is set and 1 plugin problem(s) were found; the first: plugin 'acme-broken' "
        "(robustft-acme 2.3.4) was skipped: ImportError: imported although disabled; switch it off with "
        "ROBUSTFT_DISABLE_PLUGINS=acme-broken or uninstall robustft-acme."
    ]
    as_json = run_cli("plugins", "--json", env={**env, "ROBUSTFT_STRICT_PLUGINS": "0"})
    assert as_json.returncode == 0 and as_json.stderr == ""  # not strict: the same report, exit 0, no duplicate warnings
    rows = {p["name"]: p for p in json.loads(as_json.stdout)["plugins"]}
    assert rows["acme-broken"]["status"] == "failed" and rows["acme-broken"]["error"].startswith("ImportError")
    assert rows["quiet"]["status"] == "disabled" and rows["eat"]["status"] == "ok"


# ------------------------------------------------------------------------- errors at run time


CRASHING_ZOO = {
    "acme_zoo.__init__": """
import robustft
from robustft.contracts import ModelInfo, ModelZoo
from acme_zoo.weights import fetch


class CrashZoo(ModelZoo):
    name = "crashzoo"

    def models(self):
        return [ModelInfo(name="thing", dataset="digits")]

    def load(self, info, *, device, dataset=None, **options):
        return fetch(info.name)


@robustft.hookimpl
def register_zoos(register):
    register(CrashZoo())
""",
    "acme_zoo.weights": """
def fetch(name):
    raise RuntimeError(f"weights of {name} are corrupt\\nsecond line")
""",
}


@pytest.fixture
def crashing_zoo(site):
    return distribution(site, "robustft-acme-zoo", "0.4.0", CRASHING_ZOO, {"acme-zoo": "acme_zoo"})


EXPECTED_CRASH = (
    "error: Plugin 'acme-zoo' (robustft-acme-zoo 0.4.0) raised RuntimeError: weights of thing are corrupt "
    "(rerun with --debug for the traceback; report it to the plugin's authors, or switch it off with "
    "ROBUSTFT_DISABLE_PLUGINS=acme-zoo or uninstall robustft-acme-zoo)."
)


def test_exception_inside_a_plugin_names_it_in_one_line(crashing_zoo, capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "eval", "--model", "crashzoo:thing", "--n-ex", "4", "--quiet")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [EXPECTED_CRASH]


@pytest.mark.parametrize("switch", ["option", "env"])
def test_debug_shows_the_traceback(crashing_zoo, capsys, monkeypatch, switch):
    args = ["--debug"] if switch == "option" else []
    env = {"ROBUSTFT_DEBUG": "1"} if switch == "env" else {}
    result = cli_in_process(capsys, monkeypatch, *args, "eval", "--model", "crashzoo:thing", "--n-ex", "4", "--quiet", env=env)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback") and 'acme_zoo/weights.py", line 3, in fetch' in result.stderr
    assert result.stderr.strip().splitlines()[-1] == EXPECTED_CRASH


def test_debug_is_off_again_on_the_next_call(crashing_zoo, capsys, monkeypatch):
    cli_in_process(capsys, monkeypatch, "--debug", "list", "zoos")
    result = cli_in_process(capsys, monkeypatch, "eval", "--model", "crashzoo:thing", "--n-ex", "4", "--quiet")
    assert "Traceback" not in result.stderr


def test_exception_outside_plugins_keeps_its_traceback(crashing_zoo, capsys, monkeypatch):
    import robustft.evaluation

    def broken(**kwargs):
        raise ZeroDivisionError("a bug in robustft itself")

    monkeypatch.setattr(robustft.evaluation, "evaluate", broken)
    with pytest.raises(ZeroDivisionError):
        cli_in_process(capsys, monkeypatch, "eval", "--model", "crashzoo:thing")
    assert current_host() is None or current_host().culprit(ZeroDivisionError()) is None


def test_exception_inside_a_plugin_scheme_at_training_time(site, base_model, capsys, monkeypatch, tmp_path):
    body = "        raise ValueError('loss exploded')"
    distribution(
        site,
        "robustft-acme-scheme",
        "3.0.0",
        {"acme_scheme": scheme_source(("Boom", "boom", ()), body=body)},
        {"acme-scheme": "acme_scheme"},
    )
    result = cli_in_process(
        capsys,
        monkeypatch,
        "finetune",
        "--scheme",
        "boom",
        "--norms",
        "inf",
        "--epochs",
        "1",
        "--n-train",
        "32",
        "--batch-size",
        "32",
        "--out",
        str(tmp_path / "run"),
        "--quiet",
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: Plugin 'acme-scheme' (robustft-acme-scheme 3.0.0) raised ValueError: loss exploded (")
    assert "Traceback" not in result.stderr
