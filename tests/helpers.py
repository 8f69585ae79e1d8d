"""Helpers shared by the tests (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
