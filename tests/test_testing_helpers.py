"""robustft.testing: the helpers a plugin author tests with work on every built-in scheme, and the example
plugin's own tests, written with them, pass."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from helpers import REPO

from robustft.pluginmanager import registries
from robustft.testing import ScriptedContext, check_scheme, run_cli, tiny_batch, tiny_dataset, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(e.name for e in registries().schemes))
def test_every_built_in_scheme_passes_check_scheme(name):
    scheme = registries().schemes.get(name)
    ctx = check_scheme(scheme)
    assert all(norm in scheme.default_norms for norm, _ in ctx.calls)


def test_check_scheme_fails_a_scheme_that_breaks_the_contract():
    from robustft.plugin import Norm, Scheme

    class Detached(Scheme):
        name = "detached"
        default_norms = (Norm.LINF,)

        def loss(self, model, x, y, ctx):
            return torch.tensor(1.0), {}

    with pytest.raises(AssertionError, match="does not depend on the model"):
        check_scheme(Detached)


def test_the_tiny_pieces_are_what_they_say():
    data = tiny_dataset(n=10)
    x, y = data.train()[3]
    assert len(data.test()) == 10 and x.shape == (1, 4, 4) and 0 <= int(y) < data.num_classes
    assert tiny_model()(tiny_batch(5)[0]).shape == (5, 3)
    assert torch.equal(tiny_batch(seed=2)[0], tiny_batch(seed=2)[0])
    ctx = ScriptedContext(error_rate={next(iter(data.default_eps)): 0.5})
    result = ctx.attack(next(iter(data.default_eps)), *tiny_batch(4))
    assert int(result.success.sum()) == 2 and len(ctx.calls) == 1


def test_run_cli_runs_in_process():
    result = run_cli("list", "schemes", "--json")
    assert result.exit_code == 0 and '"e-at"' in result.stdout
    assert run_cli("finetune", "--scheme", "e-atx").exit_code == 2


def test_the_example_plugins_own_tests_pass_with_the_helpers():
    example = REPO / "examples" / "robustft-myscheme"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(example), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests")],
        capture_output=True,
        text=True,
        env=env,
        cwd=example,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:]
    assert "4 passed" in done.stdout
