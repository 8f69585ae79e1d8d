"""Run directories: what a fine-tuning run leaves behind, and how to find the latest one.

    runs/<timestamp>-<model>-<scheme>/
        config.toml          the resolved configuration (pass it back with --config to repeat the run)
        run.json             base model, zoo, data set, status, timings
        metrics.jsonl        one JSON object per batch ("kind": "batch") and per epoch ("kind": "epoch")
        checkpoints/epoch-001.pt ...   weights, optimizer, schedule position, scheme state, RNG states
        model.pt             the final weights
    runs/latest              a text file holding the path of the newest run
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from robustft.errors import UserError
from robustft.io import atomic_write_text
from robustft.paths import runs_dir

LATEST = "latest"


def new_run_dir(model: str, scheme: str, out: str | None = None) -> Path:
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise UserError(f"Output folder {str(path)!r} is not empty; choose another --out or remove it.")
    else:
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}-{scheme}").strip("_")
        path = runs_dir() / f"{stamp}-{slug}"
        suffix = 1
        while path.exists():
            suffix += 1
            path = runs_dir() / f"{stamp}-{slug}-{suffix}"
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"Output folder {str(path)!r} cannot be written ({exc.strerror}).") from None
    return path


def write_run_info(run_dir: Path, info: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "run.json", json.dumps(info, indent=2, sort_keys=True) + "\n")


def read_run_info(run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    path = run_dir / "run.json"
    if not run_dir.is_dir():
        raise UserError(f"Run folder {str(run_dir)!r} does not exist.")
    if not path.is_file():
        raise UserError(f"{str(run_dir)!r} is not a robustft run folder (it has no run.json).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(path)!r} is damaged (not valid JSON).") from None


def mark_latest(run_dir: Path) -> None:
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / LATEST, str(run_dir.resolve()) + "\n")


def latest_run() -> Path:
    pointer = runs_dir() / LATEST
    if not pointer.is_file():
        raise UserError(
            f"No run found ({str(pointer)!r} does not exist): run 'robustft finetune' first, or pass --model or --run."
        )
    path = Path(pointer.read_text(encoding="utf-8").strip())
    if not path.is_dir():
        raise UserError(f"The latest run {str(path)!r} named in {str(pointer)!r} no longer exists; pass --run or --model.")
    return path


def relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
