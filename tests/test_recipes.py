"""Data-set recipes: defaults < recipe < model's learning rate < config file < options, and the provenance."""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types

import pytest
from helpers import cli_in_process

import robustft
from robustft.config import build_config, with_recipe
from robustft.contracts import ModelInfo
from robustft.hookspecs import hookimpl
from robustft.norms import Norm
from robustft.pluginmanager import PluginHost
from robustft.training.preflight import learning_rate
from robustft_plugins.datasets.digits import Digits
from robustft_plugins.datasets.imagefolder import LARGE_RECIPE, LARGE_RECIPE_SOURCE
from robustft_plugins.datasets.mnist import Mnist

pytestmark = pytest.mark.usefixtures("one_thread")
IMAGENET = f"recipe imagenet ({LARGE_RECIPE_SOURCE})"


def test_recipe_sits_between_defaults_and_what_the_user_gave(tmp_path):
    file = tmp_path / "run.toml"
    file.write_text("epochs = 5\nattack_steps = {1 = 20}\n")
    config = with_recipe(build_config(file, seed=3), "imagenet", LARGE_RECIPE, LARGE_RECIPE_SOURCE)
    assert (config.epochs, config.batch_size, config.weight_decay, config.lr, config.seed) == (5, 256, 1e-4, 0.01, 3)
    assert config.attack_steps == {"*": 10, "inf": 5, "2": 5, "1": 20}
    assert config.provenance["epochs"] == f"config file {str(file)!r}"
    assert config.provenance["batch_size"] == IMAGENET and config.provenance["seed"] == "option"
    assert config.provenance["attack_steps"] == f"default + {IMAGENET} + config file {str(file)!r}"
    assert config.provenance["momentum"] == "default"


def test_a_value_set_after_the_layers_is_kept():
    """compare replaces the scheme and seed per run; a hand-built config has no layers at all."""
    built = dataclasses.replace(build_config(), epochs=7)
    assert with_recipe(built, "imagenet", LARGE_RECIPE).epochs == 7
    by_hand = robustft.config.FinetuneConfig(batch_size=64)
    tuned = with_recipe(by_hand, "imagenet", LARGE_RECIPE)
    assert (tuned.batch_size, tuned.epochs) == (64, 1)


def test_mnist_recipe_is_e_at_appendix_e():
    config = with_recipe(build_config(), "mnist", Mnist.recipe, Mnist.recipe_source)
    assert (config.epochs, config.lr, config.lr_schedule) == (3, 0.05, "cyclic")
    assert config.attack_steps == {"*": 10, "inf": 5, "1": 50} and config.attack_options == {"1": {"topk": 0.1}}


def test_learning_rate_order():
    model = ModelInfo(name="big", dataset="imagenet", threat=Norm.LINF, finetune_lr=0.002)
    plain = ModelInfo(name="plain", dataset="imagenet", threat=Norm.LINF)
    recipe = with_recipe(build_config(), "imagenet", LARGE_RECIPE)
    assert learning_rate(recipe, model) == (0.002, "model big")  # the model's rate beats the recipe's
    assert learning_rate(recipe, plain) == (0.01, "recipe imagenet")
    assert learning_rate(build_config(lr=0.1), model) == (0.1, "option")  # the user's beats both
    assert learning_rate(build_config(), plain) == (0.05, "default")


class RecipeDigits(Digits):
    name = "digits-recipe"
    aliases = ()
    recipe = {"epochs": 2, "batch_size": 32, "attack_steps": {"inf": 2, "1": 3}}
    recipe_source = "a test"


def _host():
    host = PluginHost()
    host.register(types.SimpleNamespace(register_datasets=hookimpl(lambda register: register(RecipeDigits()))), name="recipe-test")
    return host


def test_a_run_records_its_resolved_settings_and_their_sources(tmp_path, base_model):
    result = robustft.finetune(host=_host(), dataset="digits-recipe", n_train=64, epochs=1, out=str(tmp_path / "run"))
    config = tomllib.loads((result.run_dir / "config.toml").read_text())
    assert (config["epochs"], config["batch_size"], config["attack_steps"]) == (1, 32, {"inf": 2, "1": 3})
    sources = config["provenance"]
    assert sources["epochs"] == "option" and sources["batch_size"] == "recipe digits-recipe (a test)"
    assert sources["attack_steps"] == "default + recipe digits-recipe (a test)"
    assert sources["lr"] == "model digits-cnn-linf" and sources["dataset"] == "option"
    assert sources["norms"] == "scheme e-at" and sources["eps"] == "data set digits-recipe"
    batches = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines() if '"batch"' in line]
    assert len(batches) == 2  # 64 points in batches of the recipe's 32
    again = build_config(result.run_dir / "config.toml")  # the file repeats the run, provenance aside
    assert (again.epochs, again.batch_size) == (1, 32) and again.provenance["batch_size"].startswith("config file")


def test_recipes_command(capsys, monkeypatch):
    shown = cli_in_process(capsys, monkeypatch, "recipes", "--json")
    assert shown.returncode == 0
    rows = {(r["dataset"], r["setting"]): r["value"] for r in json.loads(shown.stdout)["recipes"]}
    assert rows[("imagenet", "attack_steps")] == {"inf": 5, "2": 5, "1": 15} and rows[("imagenet", "epochs")] == 1
    assert rows[("mnist", "attack_options")] == {"1": {"topk": 0.1}} and rows[("cifar10", "epochs")] == 3
    table = cli_in_process(capsys, monkeypatch, "recipes")
    assert "E-AT App. E, MNIST" in table.stdout
