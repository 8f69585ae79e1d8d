"""Files: atomic writes and safe checkpoint loading.

Every file robustft writes goes to a temporary file in the same folder first and is then renamed into
place, so a crash never leaves half a file. Every checkpoint is read with ``torch.load(...,
weights_only=True)``: a pickle that would run code is refused instead of executed.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from robustft.errors import UserError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line (a line is written whole or, after a crash, recognisably cut)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")


def save_torch(obj: Any, path: str | Path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_torch(path: str | Path, what: str = "checkpoint") -> Any:
    """Load a torch file safely (``weights_only=True``); every failure is one sentence."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The {what} {str(path)!r} does not exist.")
    with path.open("rb") as handle:
        head = handle.read(64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise UserError(
            f"The {what} {str(path)!r} is an HTML page, not weights (a failed download?): delete it and download it again."
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        culprit = f" (it calls {found.group(1)})" if found else ""
        raise UserError(
            f"The {what} {str(path)!r} was refused: it holds objects other than tensors and plain data, "
            f"which loading would execute{culprit}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"The {what} {str(path)!r} is damaged or not a PyTorch file ({str(exc).splitlines()[0][:160]}).") from None
