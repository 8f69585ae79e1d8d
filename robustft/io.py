"""Files: atomic writes, checksums and safe checkpoint loading.

Every file robustft writes goes to a temporary file in the same folder first and is then renamed into
place, so a crash never leaves half a file. Every torch file robustft writes gets a SHA-256 sidecar
(``model.pt.sha256``, in ``sha256sum`` format, so ``sha256sum -c`` checks it too) that
:func:`load_torch` verifies before unpickling anything. Every checkpoint is read with ``torch.load(...,
weights_only=True)``: a pickle that would run code is refused instead of executed.
"""

from __future__ import annotations

import hashlib
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

from robustft.errors import UserError


class UnsafeFileError(UserError):
    """A torch file holds objects that unpickling would execute; it is refused, never loaded."""


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
    """Append one JSON line in a single write (a crash leaves at most a cut last line, which
    :func:`read_jsonl` skips)."""
    line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn or garbled line (a crash mid-append) is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    records: list[dict[str, Any]] = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def rewrite_jsonl(path: str | Path, records: list[Mapping[str, Any]]) -> None:
    """Replace a JSON-lines file atomically (resume keeps the records up to its checkpoint)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def checksum_path(path: str | Path) -> Path:
    """Where the SHA-256 sidecar of ``path`` lives (``model.pt`` -> ``model.pt.sha256``)."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_torch(obj: Any, path: str | Path) -> None:
    """Serialise ``obj`` atomically, then its SHA-256 sidecar (written last: a file without its sidecar
    was cut short by a crash)."""
    buffer = io.BytesIO()
    import torch  # here, not at the top: the command line's start reads and writes small files without torch

    torch.save(obj, buffer)
    data = buffer.getvalue()
    path = Path(path)
    checksum_path(path).unlink(missing_ok=True)  # never pair new bytes with an old checksum
    atomic_write_bytes(path, data)
    atomic_write_text(checksum_path(path), f"{hashlib.sha256(data).hexdigest()}  {path.name}\n")


def verify_checksum(path: str | Path, what: str = "checkpoint", *, required: bool = False) -> bool:
    """Check ``path`` against its sidecar; True when verified, False when there is none (and not ``required``).

    A file that does not match is refused with one sentence naming it.
    """
    path = Path(path)
    sidecar = checksum_path(path)
    if not sidecar.is_file():
        if required:
            raise UserError(f"The {what} {str(path)!r} has no checksum file ({sidecar.name}): it was not written completely.")
        return False
    expected = sidecar.read_text(encoding="utf-8", errors="replace").split()[:1]
    if not expected or not re.fullmatch(r"[0-9a-f]{64}", expected[0]):
        raise UserError(f"The checksum file {str(sidecar)!r} of the {what} is damaged.")
    if sha256_file(path) != expected[0]:
        raise UserError(f"The {what} {str(path)!r} is corrupted: its SHA-256 does not match {sidecar.name}.")
    return True


def load_torch(path: str | Path, what: str = "checkpoint", *, require_checksum: bool = False) -> Any:
    """Load a torch file safely (``weights_only=True``); every failure is one sentence.

    A SHA-256 sidecar, when present (always for files robustft wrote), is checked first;
    ``require_checksum`` refuses a file without one.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"The {what} {str(path)!r} does not exist.")
    verify_checksum(path, what, required=require_checksum)
    with path.open("rb") as handle:
        head = handle.read(64).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        raise UserError(
            f"The {what} {str(path)!r} is an HTML page, not weights (a failed download?): delete it and download it again."
        )
    try:
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        culprit = f" (it calls {found.group(1)})" if found else ""
        raise UnsafeFileError(
            f"The {what} {str(path)!r} was refused: it holds objects other than tensors and plain data, "
            f"which loading would execute{culprit}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"The {what} {str(path)!r} is damaged or not a PyTorch file ({str(exc).splitlines()[0][:160]}).") from None
