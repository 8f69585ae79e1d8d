"""The fine-tuning options of `robustft finetune` and `robustft compare`, generated from FinetuneConfig's fields."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from fractions import Fraction

import pytest
import typer
from helpers import REPO, cli_in_process

import robustft
from robustft.cli import app
from robustft.cli_settings import PanelledCommand, default_shown, setting_help
from robustft.config import PANELS, SETTINGS, FinetuneConfig, build_config, dumps_toml, option_flags
from robustft.errors import BadInputError, UserError
from robustft.norms import Norm


def command_params(name: str) -> dict[str, typer.core.click.Option]:
    group = typer.main.get_command(app)
    with group.make_context("robustft", [name], resilient_parsing=True) as ctx:
        return {p.name: p for p in group.get_command(ctx, name).params}


def test_every_setting_is_an_option_of_finetune_with_its_spelling():
    params = command_params("finetune")
    for name in SETTINGS:
        flags = [f for spelling in option_flags(name) for f in spelling.split("/")]
        assert sorted([*params[name].opts, *params[name].secondary_opts]) == sorted(flags), name
        assert params[name].default is None, name  # unset: the config file and the recipe below keep their values
    assert {"config", "resume", "log", "json_output", "quiet"} <= set(params)
    # the spellings users have in scripts
    assert params["options"].opts == ["--option", "-o"] and params["attack_options"].opts == ["--attack-option"]
    assert params["compile"].secondary_opts == ["--no-compile"] and params["skip_bad_images"].opts == ["--skip-bad-images"]


def test_compare_has_every_setting_it_does_not_set_itself(tmp_path):
    params = command_params("compare")
    own = {name for name, s in SETTINGS.items() if not s.in_compare}
    assert own == {"scheme", "norms", "out"}
    assert set(SETTINGS) - own <= set(params)
    assert params["norms"].help.startswith("Evaluation norms") and params["out"].help.startswith("Comparison folder")
    assert params["seed"].help.startswith("First seed")
    from robustft.compare import compare

    with pytest.raises(BadInputError, match="compare sets 'scheme' itself"):  # --out and --norms are its own
        compare("e-at", seeds=1, out=tmp_path / "cmp", scheme="ramp")


def test_help_says_the_dataclass_defaults():
    defaults = FinetuneConfig()
    assert setting_help("batch_size") == f"Batch size (default: {defaults.batch_size})."
    assert setting_help("attack_steps").endswith("(default: 10).") and setting_help("attack").endswith("(default: apgd).")
    assert default_shown("compile") == "off" and default_shown("weight_decay") == "0.0005"
    assert default_shown("options") is None and "(default" not in setting_help("options")
    assert setting_help("workers", "compare") == setting_help("workers")  # one help for both commands
    for name, described in SETTINGS.items():
        assert described.panel in PANELS, name
        assert not described.help.endswith("."), name  # the default goes after it


def test_finetune_help_groups_options_into_panels_without_torch():
    code = (
        "import sys\nfrom robustft.cli import main\nrc = main(['finetune', '--help'])\n"
        "sys.stderr.write(repr((rc, sorted(m for m in sys.modules if m == 'torch' or m.startswith('robustft_plugins')))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={"COLUMNS": "160", "PATH": ""})
    assert done.stderr.strip().splitlines()[-1] == "(0, [])", done.stderr
    panels = [line.strip("╭─╮ ") for line in done.stdout.splitlines() if line.startswith("╭─")]
    assert panels == ["Options", *PANELS]
    assert "[NORM=]STEPS" in done.stdout and "NORM=RADIUS" in done.stdout and "--no-channels-last" in done.stdout
    assert "<bool>" not in done.stdout  # a switch (--json, --quiet, --help) shows no value


def test_panelled_help_shows_square_brackets_as_written(capsys):
    demo = typer.Typer(rich_markup_mode=None)

    @demo.command(cls=PanelledCommand)
    def hello(extra: str = typer.Option("x", help="Needs pip install 'robustft[zoos]' and [bold]no markup[/bold].")) -> None:
        """Say [red]hello[/red]."""

    with pytest.raises(SystemExit):
        demo(["--help"], prog_name="demo")
    out = capsys.readouterr().out.replace("\n", " ")
    assert "robustft[zoos]" in out and "[bold]no markup[/bold]" in out and "Say [red]hello[/red]." in out


def _called_with(monkeypatch, capsys, module: str, function: str, *args: str) -> dict:
    """The keyword arguments ``robustft <args>`` calls the library with (the call itself stops there)."""
    import importlib

    seen: dict = {}

    def stop(*positional, **kwargs):
        seen.update(kwargs, positional=positional)
        raise UserError("stopped here")

    monkeypatch.setattr(importlib.import_module(module), function, stop)
    result = cli_in_process(capsys, monkeypatch, *args)
    assert result.returncode == 1 and "stopped here" in result.stderr, result.stderr
    return seen


def test_finetune_options_reach_the_library_parsed(monkeypatch, capsys):
    seen = _called_with(
        monkeypatch,
        capsys,
        "robustft.training",
        "finetune",
        "finetune",
        "--epochs",
        "2",
        "--norms",
        "1,inf",
        "--eps",
        "inf=8/255",
        "--attack",
        "inf=fgsm-rs",
        "--attack-steps",
        "5",
        "--attack-steps",
        "1=15",
        "--attack-option",
        "1:topk=0.1",
        "-o",
        "sampling=paper",
        "--compile",
        "--no-download",
        "--skip-bad-images",
        "--amp",
        "off",
        "--lr",
        "0.01",
        "--quiet",
    )
    settings = {k: v for k, v in seen.items() if k not in {"config_file", "resume", "progress", "log", "positional"}}
    assert settings == {
        "epochs": 2,
        "norms": "1,inf",
        "eps": {Norm.LINF: Fraction(8, 255)},
        "attack": {"inf": "fgsm-rs"},
        "attack_steps": {"*": 5, "1": 15},
        "attack_options": {"1": {"topk": 0.1}},
        "options": {"sampling": "paper"},
        "compile": True,
        "download": False,
        "skip_bad_images": True,
        "amp": "off",
        "lr": 0.01,
    }
    assert seen["config_file"] is None and seen["resume"] is None and seen["log"] == ()
    # what the command line gives is what build_config reads (here without a config file)
    config = build_config(**settings)
    assert config.attack_steps == {"*": 5, "1": 15} and config.provenance["epochs"] == "option"


def test_compare_passes_its_own_options_and_the_settings(monkeypatch, capsys):
    seen = _called_with(
        monkeypatch,
        capsys,
        "robustft.compare",
        "compare",
        "compare",
        "--schemes",
        "e-at,ramp",
        "--seeds",
        "2",
        "--norms",
        "1,inf",
        "--seed",
        "4",
        "--amp",
        "bf16",
        "--workers",
        "2",
    )
    assert seen["positional"] == ("e-at,ramp",) and seen["seeds"] == 2 and seen["norms"] == "1,inf"
    assert seen["seed"] == 4 and seen["amp"] == "bf16" and seen["workers"] == 2
    assert "scheme" not in seen and "epochs" not in seen  # unset settings stay unset


def test_a_repeated_norm_names_its_option(capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "finetune", "--attack-steps", "inf=5", "--attack-steps", "inf=6")
    assert result.returncode == 2
    assert "--attack-steps is given twice for norm inf" in result.stderr


@pytest.mark.parametrize("name", [n for n, s in SETTINGS.items() if s.choices])
def test_a_choice_outside_the_list_is_refused_by_name(name):
    with pytest.raises(BadInputError, match=f"'{name}' must be one of {', '.join(SETTINGS[name].choices)}"):
        build_config(**{name: "nonsense"})


def test_control_characters_and_quotes_round_trip_through_a_runs_config_toml(tmp_path):
    """tomli-w escapes what TOML needs escaped: a run folder named with a quote, a backslash, a bell and a tab."""
    out = tmp_path / 'run "quoted" \\ \x07bell\ttab'
    result = robustft.finetune(epochs=1, n_train=16, batch_size=16, attack_steps=1, out=str(out))
    text = (result.run_dir / "config.toml").read_text(encoding="utf-8")
    assert "\x07" not in text  # escaped (\u0007), as TOML requires of control characters
    written = tomllib.loads(text)
    assert written["out"] == str(out)
    again = build_config(result.run_dir / "config.toml")
    assert again.out == str(out)
    repeated = tmp_path / "again.toml"  # and the configuration read from it repeats itself
    repeated.write_text(dumps_toml(again.to_toml_dict()), encoding="utf-8")
    assert build_config(repeated) == again


def test_scheme_options_with_control_characters_round_trip(tmp_path):
    config = build_config(options={"note": 'say "hi"\x01\n', "path": "C:\\runs"}, extra_data='x"\x1f')
    path = tmp_path / "config.toml"
    path.write_text(dumps_toml(config.to_toml_dict()), encoding="utf-8")
    assert build_config(path) == config
