"""The command line's own contract: usage errors, exit codes, start-up without torch, plugin commands in help."""

from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest
from helpers import REPO, cli_in_process, make_distribution, run_cli, with_path

from robustft.cli import app
from robustft.plugin_commands import command_entries

SUBCOMMANDS = sorted(entry["name"] for entry in command_entries(app))


def assert_usage_error(result, command: str) -> str:
    """Exit 2, the command's usage line, one ``Error:`` sentence, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[0].startswith(f"Usage: robustft {command}"), result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert result.stdout == ""
    return errors[0]


def test_every_builtin_command_is_covered():
    assert SUBCOMMANDS == ["compare", "eval", "export", "finetune", "geometry", "list", "plot", "plugins", "recipes", "report"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_misspelt_option_is_a_usage_error(command, capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, command, "--bogus-option", "1")
    assert "No such option: --bogus-option" in assert_usage_error(result, command)


@pytest.mark.parametrize(
    "args",
    [
        ["finetune", "--epochs"],
        ["eval", "--steps"],
        ["compare", "--schemes"],
        ["geometry", "--dim"],
        ["list", "models", "--zoo"],
        ["finetune", "--attack-steps"],
        ["export", "--out"],
        ["plot", "bars", "--json"],
        ["plot", "curves", "--run"],
    ],
)
def test_missing_option_value_is_a_usage_error(args, capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, *args)
    command = " ".join(args[:2]) if args[0] == "plot" else args[0]  # a sub-command's own usage line (plot bars)
    assert f"Option {args[-1]!r} requires an argument." in assert_usage_error(result, command)


def test_misspelt_command_suggests_the_closest(capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "finetne")
    assert result.returncode == 2 and "Did you mean 'finetune'?" in result.stderr


def test_usage_errors_in_a_fresh_process():
    for args, command in ((["finetune", "--bogus", "1"], "finetune"), (["eval", "--nrms", "1"], "eval")):
        assert_usage_error(run_cli(*args), command)


def test_keyboard_interrupt_exits_130_with_a_sentence(capsys, monkeypatch):
    import robustft.evaluation

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(robustft.evaluation, "evaluate", interrupted)
    result = cli_in_process(capsys, monkeypatch, "eval", "--model", "digits-cnn-linf")
    assert result.returncode == 130
    assert result.stderr.strip() == "Interrupted."


def test_listings_keep_square_brackets(capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "list", "zoos")
    assert result.returncode == 0
    assert "robustft[zoos]" in result.stdout.replace("\n", "")


def _modules_after(args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run ``main(args)`` in a fresh interpreter; report the exit code and whether torch or a plugin loaded."""
    code = (
        "import json, sys\n"
        "from robustft.cli import main\n"
        f"rc = main({args!r})\n"
        "loaded = sorted(m for m in sys.modules if m == 'torch' or m.startswith('robustft_plugins'))\n"
        "sys.stderr.write(json.dumps({'rc': rc, 'loaded': loaded}))\n"
    )
    import os

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO)
    return {**json.loads(done.stderr.splitlines()[-1]), "stdout": done.stdout}


def test_version_loads_neither_torch_nor_plugins():
    report = _modules_after(["--version"])
    assert report["rc"] == 0 and report["loaded"] == []
    assert report["stdout"].startswith("robustft ")


HELLO = '''
import robustft

@robustft.hookimpl
def register_commands(app):
    @app.command()
    def hello(name: str = "world") -> None:
        """Say hello from a plugin."""
        print(f"hello {name}")
'''


def test_plugin_commands_are_listed_in_help_without_loading_plugins_once_known(tmp_path):
    env = {
        **with_path(make_distribution(tmp_path / "site", "robustft-hello", "robustft_hello", HELLO)),
        "ROBUSTFT_CACHE": str(tmp_path / "cache"),
    }
    first = _modules_after(["--help"], env)  # no manifest yet: the plugins load and the manifest is written
    assert first["rc"] == 0 and "hello" in first["stdout"] and "robustft_plugins.schemes.eat" in first["loaded"]
    second = _modules_after(["--help"], env)
    assert second["rc"] == 0 and second["loaded"] == []
    assert "Say hello from a plugin." in second["stdout"]
    ran = run_cli("hello", "--name", "you", env=env)  # naming it loads the real command
    assert ran.returncode == 0 and ran.stdout.strip() == "hello you"


def test_a_stale_manifest_is_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "plugin-commands.json").write_text(json.dumps({"fingerprint": "old", "commands": [{"name": "gone", "help": "x"}]}))
    report = _modules_after(["--help"], {"ROBUSTFT_CACHE": str(cache)})
    assert report["rc"] == 0 and "gone" not in report["stdout"]
    assert json.loads((cache / "plugin-commands.json").read_text())["commands"] == []


def test_broken_manifest_is_ignored(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path))
    (tmp_path / "plugin-commands.json").write_text("{not json")
    run = functools.partial(cli_in_process, capsys, monkeypatch)
    result = run("--help")
    assert result.returncode == 0 and "finetune" in result.stdout


def test_listed_commands_do_not_stay_on_the_app(tmp_path, capsys, monkeypatch):
    """A command listed from the manifest is a help entry for that call only; naming it loads the plugins."""
    from robustft.plugin_commands import entry_point_fingerprint

    monkeypatch.setenv("ROBUSTFT_CACHE", str(tmp_path))
    manifest = {"fingerprint": entry_point_fingerprint(), "commands": [{"name": "ghost", "help": "Listed, not installed."}]}
    (tmp_path / "plugin-commands.json").write_text(json.dumps(manifest))
    listed = cli_in_process(capsys, monkeypatch, "--help")
    assert listed.returncode == 0 and "Listed, not installed." in listed.stdout
    assert sorted(entry["name"] for entry in command_entries(app)) == SUBCOMMANDS
    named = cli_in_process(capsys, monkeypatch, "ghost")
    assert named.returncode == 2 and "No such command 'ghost'." in named.stderr
