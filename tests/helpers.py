"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import collections
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``robustft`` in a fresh process (so each test sees the CLI as a user does)."""
    full_env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "robustft", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=timeout,
    )


def make_distribution(folder: Path, dist: str, module: str, source: str, entry: str | None = None, version: str = "0.1.0") -> Path:
    """Write an installed distribution (module + dist-info with a ``robustft`` entry point) into ``folder``,
    exactly what pip leaves in site-packages; put ``folder`` on PYTHONPATH to install it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[robustft]\n{entry or dist} = {module}\n")
    return folder


def install_example(name: str, tmp_path_factory) -> Path:  # noqa: ANN001 - pytest's TempPathFactory
    """pip-install ``examples/<name>`` into a fresh folder (offline: no index, no build isolation, no deps) and
    return the folder, to be put on the import path with :func:`with_path`."""
    import shutil
    import sys

    target = tmp_path_factory.mktemp("site")
    source = tmp_path_factory.mktemp("src") / name  # setuptools builds in-tree: keep the repository clean
    shutil.copytree(REPO / "examples" / name, source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert list(target.glob(f"{name.replace('-', '_')}-*.dist-info"))
    return target


def with_path(folder: Path) -> dict[str, str]:
    """Environment that puts ``folder`` first on the import path."""
    return {"PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def cli_in_process(capsys, monkeypatch, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``robustft.cli.main`` in this process (saves a second of start-up per call); same result shape
    as :func:`run_cli`. An uncaught exception propagates, which fails the test as a traceback would."""
    from robustft.cli import main

    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["robustft", *args], code, out, err)


# ------------------------------------------------------------------------------ host synchronisation

#: Operators whose output the host must read (a value, or a size that depends on values): on a GPU each
#: waits for the work queued before it. ``item``, ``bool``, ``int`` and ``float`` all reach
#: ``_local_scalar_dense``.
SYNCING_OPS = frozenset(
    {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::_unique2", "aten::unique_dim", "aten::unique_consecutive"}
)
#: Indexing ops that sync when an index is a boolean mask (its size depends on its values).
MASK_INDEXING_OPS = frozenset({"aten::index.Tensor", "aten::index_put_", "aten::index_put", "aten::_index_put_impl_"})
#: Tensor methods that hand values to Python without an operator (on the CPU they dispatch nothing).
HOST_METHODS = ("tolist", "cpu", "numpy")


@contextlib.contextmanager
def count_host_syncs() -> Iterator[collections.Counter]:
    """Count, by name, every operation inside the block that would make the host wait for a GPU.

    Runs on the CPU: a dispatch mode sees the operators (scalar reads, ``nonzero``, boolean-mask
    indexing), and patched methods see ``.tolist()``, ``.cpu()`` and ``.numpy()``. Reads of tensors that
    live on the CPU anyway (a ``torch.Generator`` draw) count too; tests compare counts, for instance
    between runs of 4 and 16 attack steps. Inside the block the l1 geometry takes the path it takes on an
    accelerator (robustft.lp reads counts on the CPU only, where a read waits for nothing); tests/test_lp.py
    checks that both paths give the same results.
    """
    from torch.utils._python_dispatch import TorchDispatchMode

    import robustft.lp

    counts: collections.Counter = collections.Counter()

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204 - torch's protocol
            name = func.name()
            if name in SYNCING_OPS:
                counts[name] += 1
            elif name in MASK_INDEXING_OPS and _has_mask_index(args):
                counts[f"{name} (boolean mask)"] += 1
            return func(*args, **(kwargs or {}))

    originals = {method: getattr(torch.Tensor, method) for method in HOST_METHODS}

    def counting(method: str, original):  # noqa: ANN001, ANN202
        def counted(self, *args, **kwargs):  # noqa: ANN001, ANN202
            counts[f".{method}()"] += 1
            return original(self, *args, **kwargs)

        return counted

    reads_are_free = robustft.lp._reads_are_free
    try:
        robustft.lp._reads_are_free = lambda t: False
        for method, original in originals.items():
            setattr(torch.Tensor, method, counting(method, original))
        with Counting():
            yield counts
    finally:
        robustft.lp._reads_are_free = reads_are_free
        for method, original in originals.items():
            setattr(torch.Tensor, method, original)


def _has_mask_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ()
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices)
