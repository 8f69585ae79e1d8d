"""Typed scheme options (robustft/scheme_options.py): one declaration per option, checked once, listed by the CLI."""

from __future__ import annotations

import json

import pytest
from helpers import REPO, cli_in_process
from test_cli_errors import assert_one_sentence

from robustft.config import build_config
from robustft.errors import BadInputError, UnknownNameError
from robustft.norms import Norm
from robustft.plugin import Scheme, SchemeOptions, option
from robustft.scheme_options import Interval
from robustft_plugins.schemes.eat import EAT, EATUniform
from robustft_plugins.schemes.msd import MSD
from robustft_plugins.schemes.multi_norm import MAX
from robustft_plugins.schemes.ramp import RAMP
from robustft_plugins.schemes.single_norm import LpAT

NORMS = (Norm.LINF, Norm.L2, Norm.L1)


class Toy(Scheme):
    name = "toy"

    class Options(SchemeOptions):
        rate: float = option(0.5, range="(0, 1]", help="a rate")
        count: int = option(3, range=(1, None), help="a count")
        on: bool = option(False, help="a switch")
        mode: str = option("a", choices=("a", "b"), help="a mode")
        lam: float = option(1.0, range="[0, inf)", cli_name="lambda", help="a weight")

    options: Options

    def loss(self, model, x, y, ctx):  # pragma: no cover - never trained
        raise NotImplementedError


# ------------------------------------------------------------------------------- conversion


def test_text_and_python_values_become_typed_values():
    options = Toy((Norm.LINF,), rate="0.25", count="7", on="yes", mode="b", **{"lambda": "2"}).options
    assert (options.rate, options.count, options.on, options.mode, options.lam) == (0.25, 7, True, "b", 2.0)
    assert isinstance(options.lam, float) and isinstance(options.count, int)
    python = Toy((Norm.LINF,), rate=1, count=2, on=True, **{"lambda": 0}).options
    assert (python.rate, python.count, python.on, python.lam) == (1.0, 2, True, 0.0) and isinstance(python.rate, float)
    assert Toy((Norm.LINF,)).options == Toy.Options()  # nothing given: the declared defaults
    assert Toy((Norm.LINF,)).options.as_dict() == {"rate": 0.5, "count": 3, "on": False, "mode": "a", "lambda": 1.0}


@pytest.mark.parametrize("text,value", [("on", True), ("OFF", False), ("true", True), ("no", False), ("1", True), ("0", False)])
def test_switches_take_the_usual_spellings(text, value):
    assert Toy((Norm.LINF,), on=text).options.on is value


@pytest.mark.parametrize(
    "given,message",
    [
        ({"rate": "0"}, "Option rate of scheme 'toy' must be a number in (0, 1], got '0'."),
        ({"rate": "1.0001"}, "Option rate of scheme 'toy' must be a number in (0, 1], got '1.0001'."),
        ({"rate": "fast"}, "Option rate of scheme 'toy' must be a number in (0, 1], got 'fast'."),
        ({"rate": "nan"}, "Option rate of scheme 'toy' must be a number in (0, 1], got 'nan'."),
        ({"rate": True}, "Option rate of scheme 'toy' must be a number in (0, 1], got True."),
        ({"count": "2.5"}, "Option count of scheme 'toy' must be an integer in [1, inf), got '2.5'."),
        ({"count": "0"}, "Option count of scheme 'toy' must be an integer in [1, inf), got '0'."),
        ({"on": "maybe"}, "Option on of scheme 'toy' must be on or off, got 'maybe'."),
        ({"on": 1}, "Option on of scheme 'toy' must be on or off, got 1."),
        ({"mode": "c"}, "Option mode of scheme 'toy' must be one of a, b, got 'c'."),
        ({"lambda": "inf"}, "Option lambda of scheme 'toy' must be a number in [0, inf), got 'inf'."),
        ({"lambda": "-0.1"}, "Option lambda of scheme 'toy' must be a number in [0, inf), got '-0.1'."),
    ],
)
def test_a_wrong_value_is_one_sentence_naming_scheme_option_and_what_it_allows(given, message):
    with pytest.raises(BadInputError) as caught:
        Toy((Norm.LINF,), **given)
    assert str(caught.value) == message


def test_range_bounds_are_open_or_closed_as_declared():
    assert Toy((Norm.LINF,), rate="1").options.rate == 1.0  # ] is closed
    assert Toy((Norm.LINF,), count="1").options.count == 1  # [1, inf) from the tuple (1, None)
    assert RAMP(NORMS, beta="0").options.beta == 0.0 and RAMP(NORMS, beta="1").options.beta == 1.0  # (0, 1) is [0, 1]
    with pytest.raises(BadInputError, match=r"travel-2 of scheme 'msd' must be a number in \(0, inf\)"):
        MSD(NORMS, **{"travel-2": "0"})
    assert MSD(NORMS, **{"l1-topk": "1"}).options.l1_topk == 1.0


def test_an_unknown_option_lists_the_closest_names():
    with pytest.raises(UnknownNameError, match=r"Unknown option of scheme 'toy' 'rat': did you mean 'rate'\?"):
        Toy((Norm.LINF,), rat="0.5")
    # the Python field name is not what users type: the message points at the option's name
    with pytest.raises(UnknownNameError, match="did you mean 'auto-batches'"):
        RAMP(NORMS, auto_batches="2")
    with pytest.raises(BadInputError, match=r"^Scheme 'lp-at' takes no options, got select='outer'\.$"):
        LpAT((Norm.LINF,), select="outer")


def test_options_built_in_python_are_checked_too():
    assert RAMP.Options(lam=5.0).lam == 5.0
    with pytest.raises(BadInputError, match=r"Option lambda of RAMP.Options must be a number in \[0, inf\)"):
        RAMP.Options(lam=-1.0)
    with pytest.raises(AttributeError):
        RAMP.Options().lam = 2.0  # frozen: a scheme's options do not change under it


# ------------------------------------------------------------------------------- declarations


def _declare(body):
    return type("Bad", (SchemeOptions,), body)


@pytest.mark.parametrize(
    "body,message",
    [
        ({"__annotations__": {"x": "float"}, "x": 0.5}, "must be declared with option"),
        ({"__annotations__": {"x": "float"}, "x": option(2.0, range=(0, 1), help="h")}, "default of Bad.x is not allowed"),
        ({"__annotations__": {"x": "list"}, "x": option((), help="h")}, "use bool, int, float or str, or give parse="),
        ({"__annotations__": {"x": "str"}, "x": option("a", range=(0, 1), help="h")}, "has a range but is not a number"),
        (
            {"__annotations__": {"x": "int", "y": "int"}, "x": option(1, help="h"), "y": option(1, cli_name="x", help="h")},
            "declares an option name twice",
        ),
    ],
)
def test_a_malformed_declaration_fails_when_the_plugin_is_imported(body, message):
    with pytest.raises(TypeError, match=message):
        _declare(body)


def test_option_needs_help_and_a_well_formed_range():
    with pytest.raises(TypeError, match="needs help"):
        option(1, help="")
    with pytest.raises(TypeError, match="not an interval"):
        option(1.0, range="0..1", help="h")
    with pytest.raises(TypeError, match="infinite bound"):
        option(1.0, range="[0, inf]", help="h")


def test_the_old_dict_of_scheme_options_is_refused_with_the_way_to_migrate():
    with pytest.raises(TypeError, match=r"nested `class Options\(SchemeOptions\)`"):
        type("Old", (Scheme,), {"name": "old", "options": {"at": object()}, "loss": lambda *a: None})


@pytest.mark.parametrize(
    "spec,text,inside,outside",
    [
        ("[0, 1]", "[0, 1]", [0, 0.5, 1], [-0.1, 1.1]),
        ("(0, 1]", "(0, 1]", [1e-9, 1], [0, 2]),
        ("[1, inf)", "[1, inf)", [1, 1e9], [0.99]),
        ((None, 3), "(-inf, 3]", [-1e9, 3], [3.5]),
    ],
)
def test_intervals(spec, text, inside, outside):
    interval = Interval.of(spec)
    assert str(interval) == text
    assert all(v in interval for v in inside) and not any(v in interval for v in outside)
    assert float("nan") not in interval and True not in interval


# ----------------------------------------------------------------------------- built-in schemes


def test_built_in_schemes_read_their_typed_options():
    assert EAT(EAT.default_norms, sampling="cumulative").options.sampling == "cumulative"
    assert EATUniform.Options.names() == ()
    assert MAX(NORMS, select="attack").options.select == "attack"
    ramp = RAMP(NORMS, pair="L1, linf", **{"lambda": "5", "auto-batches": "2"})
    assert (ramp.options.pair, ramp.key_pair, ramp.options.lam, ramp.options.auto_batches) == ("1,inf", (Norm.L1, Norm.LINF), 5.0, 2)
    msd = MSD(NORMS, **{"travel-inf": "4"})
    assert msd.travel == {Norm.LINF: 4.0, Norm.L2: 10 / 3, Norm.L1: 2.5}
    assert RAMP.Options.names() == ("pair", "pairing", "lambda", "gp", "beta", "auto-batches")


def test_options_from_a_config_file_reach_the_scheme_typed(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('scheme = "ramp"\n[options]\nlambda = 5\ngp = true\nbeta = 0.25\npair = "2,inf"\n', encoding="utf-8")
    config = build_config(path, options={"beta": "0.75"})  # the command line wins key by key
    assert "run.toml" in config.provenance["options"] and config.provenance["options"].endswith("option")
    options = RAMP(NORMS, **config.options).options
    assert (options.lam, options.gp, options.beta, options.pair) == (5.0, True, 0.75, "2,inf")


# ------------------------------------------------------------------------------------------ CLI


def test_list_schemes_options_shows_type_default_range_and_help(capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "list", "schemes", "--options")
    assert result.returncode == 0, result.stderr
    rows = {tuple(cell.strip() for cell in line.split("│")[1:5]) for line in result.stdout.splitlines() if line.startswith("│")}
    assert ("ramp", "lambda", "float", "1.5") in rows and ("msd", "l1-topk", "float", "0.05") in rows
    assert ("max", "select", "str", "outer") in rows and ("ramp", "gp", "bool", "off") in rows
    assert "[0, inf)" in result.stdout and "outer | attack" in result.stdout and "weight of the pairing loss" in result.stdout
    assert "No options:" in result.stdout and "lp-at" in result.stdout


def test_list_schemes_options_json(capsys, monkeypatch):
    result = cli_in_process(capsys, monkeypatch, "list", "schemes", "--options", "--json")
    assert result.returncode == 0, result.stderr
    schemes = {s["name"]: s for s in json.loads(result.stdout)["schemes"]}
    assert schemes["lp-at"]["options"] == [] and schemes["ramp"]["plugin"] == "ramp"
    lam = {o["name"]: o for o in schemes["ramp"]["options"]}["lambda"]
    assert lam == {
        "name": "lambda",
        "attribute": "lam",
        "type": "float",
        "default": 1.5,
        "range": "[0, inf)",
        "choices": [],
        "help": "weight of the pairing loss (1.5 fine-tuning, 5 from scratch)",
    }
    (sampling,) = schemes["e-at"]["options"]
    assert sampling["choices"] == ["paper", "cumulative"] and sampling["default"] == "paper" and sampling["range"] is None
    assert all(listed["help"] for scheme in schemes.values() for listed in scheme["options"])


def test_list_options_of_another_kind_is_one_sentence(capsys, monkeypatch):
    line = assert_one_sentence(cli_in_process(capsys, monkeypatch, "list", "attacks", "--options"))
    assert "robustft list schemes --options" in line


def test_finetune_with_an_out_of_range_option_stops_before_training(capsys, monkeypatch, tmp_path):
    result = cli_in_process(capsys, monkeypatch, "finetune", "--scheme", "ramp", "--option", "beta=2", "--out", str(tmp_path / "run"))
    line = assert_one_sentence(result)
    assert line == "error: Option beta of scheme 'ramp' must be a number in [0, 1], got '2'."
    assert not (tmp_path / "run").exists()


def test_docs_list_every_built_in_schemes_options_with_its_range():
    text = (REPO / "docs" / "schemes.md").read_text(encoding="utf-8")
    for cls in (EAT, MAX, MSD, RAMP):
        for spec in cls.Options.specs():
            row = next((line for line in text.splitlines() if line.startswith(f"| `{cls.name}` | `{spec.name}` |")), None)
            assert row is not None, f"docs/schemes.md lists no option {spec.name} of {cls.name}"
            assert f"| {spec.type.__name__} |" in row and (spec.range is None or f"| {spec.range} |" in row), row
