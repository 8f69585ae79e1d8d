"""Run directories: what a fine-tuning run leaves behind, and how to find the latest one.

runs/<timestamp>-<model>-<scheme>/
    config.toml          the resolved configuration (pass it back with --config to repeat the run)
    run.json             base model, zoo, data set, status, timings
    metrics.jsonl        one JSON object per batch ("kind": "batch") and per epoch ("kind": "epoch")
    checkpoints/epoch-001.pt ...   weights, optimizer, schedule position, scheme state, RNG states
    checkpoints/epoch-002-batch-0004.pt   mid-epoch checkpoints (--checkpoint-every N; the last two kept)
    model.pt             the final weights
    *.pt.sha256          the SHA-256 of each torch file, checked before it is loaded
runs/latest              a text file holding the path of the newest run
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robustft.errors import BadInputError, UserError
from robustft.io import atomic_write_text
from robustft.paths import runs_dir
from robustft.schemas import RunInfo

LATEST = "latest"
#: Free space a run needs before it starts, at the least (checkpoints need more for big models:
#: :func:`check_free_space` is called again once the model's size is known).
MIN_FREE_BYTES = 64 * 2**20
CHECKPOINT_RE = re.compile(r"^epoch-(\d+)(?:-batch-(\d+))?\.pt$")


def check_utf8(path: str | Path, option: str = "--out") -> None:
    """A folder name robustft can record: its files (config.toml, run.json, JSON summaries) are UTF-8, and a name
    that is not (bytes the file system accepts, such as ``\\xff``) could be created but never written down."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        shown = str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise BadInputError(
            f"{option} {shown!r} is not valid UTF-8, which robustft's files need to record it; choose a UTF-8 name."
        ) from None


def plan_run_dir(model: str, scheme: str, out: str | None = None) -> Path:
    """The run folder a new run will use (``out``, or a fresh one under the runs folder), not yet created."""
    if out is not None:
        check_utf8(out)
        path = Path(out)
        if path.exists() and not path.is_dir():
            raise UserError(f"--out {str(path)!r} is a file, not a folder; choose another --out.")
        if path.exists() and not only_scaffolding(path):
            raise UserError(f"Output folder {str(path)!r} is not empty; choose another --out or remove it.")
        return path
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}-{scheme}").strip("_")
    path = runs_dir() / f"{stamp}-{slug}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = runs_dir() / f"{stamp}-{slug}-{suffix}"
    return path


#: What robustft puts in a run folder before the run's first file of value (config.toml): a new run may
#: take over a folder holding only these, which a run killed in its first moments leaves behind.
SCAFFOLDING = (".lock", "checkpoints")  # and the per-process ".write-test-<pid>" probes of create_run_dir


def only_scaffolding(path: Path) -> bool:
    """``path`` holds nothing but :data:`SCAFFOLDING` (an empty checkpoints folder) and stale temporary files."""
    for entry in path.iterdir():
        if entry.name == "checkpoints" and entry.is_dir():
            if any(entry.iterdir()):
                return False
        elif (
            entry.name not in SCAFFOLDING
            and not entry.name.startswith(".write-test-")
            and not (entry.name.startswith(".") and entry.name.endswith(".tmp"))
        ):
            return False
    return True


def killed_before_start(run_dir: Path) -> bool:
    """The run in ``run_dir`` was stopped after writing its config.toml and before its first run.json and
    checkpoint: ``--resume`` starts it from the beginning with that configuration."""
    return (
        run_dir.is_dir() and (run_dir / "config.toml").is_file() and not (run_dir / "run.json").exists() and not list_checkpoints(run_dir)
    )


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def check_writable(path: Path) -> None:
    """Pre-flight: ``path`` (or the nearest folder above it that exists) can be written."""
    anchor = _existing_ancestor(path)
    if not anchor.is_dir():
        raise UserError(f"Output folder {str(path)!r} cannot be created: {str(anchor)!r} is a file.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise UserError(f"Output folder {str(path)!r} cannot be written (no write permission on {str(anchor)!r}).")


def check_free_space(path: Path, needed: int = MIN_FREE_BYTES) -> None:
    """Pre-flight: the disk holding ``path`` has at least ``needed`` bytes free."""
    free = shutil.disk_usage(_existing_ancestor(path)).free
    if free < needed:
        raise UserError(
            f"Output folder {str(path)!r} is on a disk with {free / 2**20:.0f} MiB free, "
            f"but the run needs at least {needed / 2**20:.0f} MiB; free some space or choose another --out."
        )


LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the run folder while a run writes it (``fcntl.flock`` on ``<run>/.lock``).

    A second run into the same folder, started at the same time or while the first still trains or resumes,
    is refused in one sentence instead of interleaving its records with the first's. The operating system
    releases the lock when the process ends, however it ends, so a lock is never stale; the file stays.
    """
    import fcntl

    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        who = f" (process {holder})" if holder.isdigit() else ""
        raise UserError(
            f"Run folder {str(run_dir)!r} is in use by another robustft run{who}: wait for it to end, or choose another --out."
        ) from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def create_run_dir(path: Path) -> Path:
    """Create the run folder and its checkpoints folder, proving it is writable."""
    try:
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"  # per process: two runs started together do not collide here
        probe.write_text("ok")
        probe.unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"Output folder {str(path)!r} cannot be written ({exc.strerror}).") from None
    return path


def new_run_dir(model: str, scheme: str, out: str | None = None) -> Path:
    """Plan, check and create a new run folder."""
    path = plan_run_dir(model, scheme, out)
    check_writable(path)
    check_free_space(path)
    return create_run_dir(path)


def checkpoint_name(epoch: int, batch: int = 0) -> str:
    """``epoch-002.pt`` after a whole epoch (1-based), ``epoch-002-batch-0004.pt`` within epoch 2."""
    return f"epoch-{epoch:03d}.pt" if batch == 0 else f"epoch-{epoch:03d}-batch-{batch:04d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[tuple[int, int], Path]]:
    """The run's checkpoints as ``((epochs done, batches done in the next epoch), path)``, oldest first.

    ``epoch-002.pt`` is position (2, 0); ``epoch-003-batch-0004.pt`` is (2, 4): four batches into
    the third epoch.
    """
    found = []
    folder = Path(run_dir) / "checkpoints"
    for path in folder.glob("epoch-*.pt") if folder.is_dir() else ():
        match = CHECKPOINT_RE.match(path.name)
        if match is None:
            continue
        epoch, batch = int(match.group(1)), int(match.group(2) or 0)
        found.append(((epoch, 0) if batch == 0 else (epoch - 1, batch), path))
    return sorted(found)


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
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{str(path)!r} is damaged (not valid JSON).") from None
    return RunInfo.check(data, path)


def mark_latest(run_dir: Path) -> None:
    root = runs_dir()
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / LATEST, str(run_dir.resolve()) + "\n")


def latest_run() -> Path:
    pointer = runs_dir() / LATEST
    if not pointer.is_file():
        raise UserError(f"No run found ({str(pointer)!r} does not exist): run 'robustft finetune' first, or pass --model or --run.")
    path = Path(pointer.read_text(encoding="utf-8").strip())
    if not path.is_dir():
        raise UserError(f"The latest run {str(path)!r} named in {str(pointer)!r} no longer exists; pass --run or --model.")
    return path


def relative(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
