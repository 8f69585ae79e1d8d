"""Shared fixtures. Every test runs offline, with its own cache and runs folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_configure(config: pytest.Config) -> None:
    # One cache for the whole session (the digits base model is built once), never the user's.
    base = Path(tempfile.mkdtemp(prefix="robustft-tests-"))
    config._robustft_tmp = base  # type: ignore[attr-defined]
    os.environ["ROBUSTFT_CACHE"] = str(base / "cache")
    os.environ.pop("ROBUSTFT_STRICT_PLUGINS", None)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        # pytest-xdist (-n N): the cores are shared out, so N processes of all-core torch do not oversubscribe
        # them; the environment variable reaches the commands the tests start.
        import torch

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        threads = max(1, cores // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


def pytest_unconfigure(config: pytest.Config) -> None:
    base = getattr(config, "_robustft_tmp", None)
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(autouse=True)
def _isolated_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTFT_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture(scope="session")
def base_model():
    """The embedded default's base model, built (about half a minute) once per session."""
    import torch

    from robustft.models import load_model
    from robustft.pluginmanager import registries

    model, info = load_model("digits-cnn-linf", registries(), torch.device("cpu"))
    return model


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of tiny-model tests: OpenMP workers spinning on a busy 2-core machine
    make them several times slower. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
