"""Files: atomic writes, checksums and safe checkpoint loading.

Every file robustft writes goes to a temporary file in the same folder first and is then renamed into
place, so a crash never leaves half a file. Every torch file robustft writes gets a SHA-256 sidecar
(``model.pt.sha256``, in ``sha256sum`` format, so ``sha256sum -c`` checks it too) that
:func:`load_torch` verifies before unpickling anything. Every checkpoint is read with ``torch.load(...,
weights_only=True)``: a pickle that would run code is refused instead of executed.
"""

from __future__ import annotations

import errno
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


class DiskFullError(UserError):
    """A write failed for lack of space (or quota); what was on disk before it is intact."""


#: errno values that mean "no room": the device is full, or the user's quota is spent.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT}


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError  # pragma: no cover


def disk_full(path: Path, needed: int) -> DiskFullError:
    """The one sentence for a write that found no room: the folder and the space the write needed."""
    return DiskFullError(
        f"No space left in {str(path.parent)!r} to write {path.name} ({_size(needed)}): free at least that much there "
        "and run the command again (an interrupted fine-tuning run continues with --resume)."
    )


def _create_mode() -> int:
    """0666 less the process's umask: the mode ``open(path, "w")`` would give a new file."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_CREATE_MODE = _create_mode()

#: Prefix and suffix of the temporary files of :func:`atomic_write_bytes` (:func:`remove_stale_temporaries`).
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{TMP_PREFIX}{path.name}.", suffix=TMP_SUFFIX)
    except OSError as exc:
        if exc.errno in _NO_ROOM:
            raise disk_full(path, len(data)) from None
        raise
    try:
        os.fchmod(fd, _CREATE_MODE)  # mkstemp makes 0600 files; a written file gets the user's usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in _NO_ROOM:
            raise disk_full(path, len(data)) from None
        raise


def remove_stale_temporaries(folder: str | Path, names: tuple[str, ...] = ()) -> list[Path]:
    """Delete the temporary files a killed :func:`atomic_write_bytes` left in ``folder`` (not recursive):
    ``.<name>.<random>.tmp``, for the file names in ``names`` or for any name when ``names`` is empty.
    Only files of that exact pattern are touched; call it only where one process writes (a locked run)."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        name = entry.name
        if not (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX) and entry.is_file()):
            continue
        target = name[len(TMP_PREFIX) : -len(TMP_SUFFIX)].rpartition(".")[0]
        if target and (not names or target in names):
            entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def append_jsonl(path: str | Path, record: Mapping[str, Any]) -> None:
    """Append one JSON line in a single write (a crash leaves at most a cut last line, which
    :func:`read_jsonl` skips)."""
    line = json.dumps(record, sort_keys=True, allow_nan=True) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
    except OSError as exc:
        if exc.errno in _NO_ROOM:
            raise disk_full(Path(path), len(line.encode("utf-8"))) from None
        raise


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


def pickle_culprit(exc: BaseException) -> str:
    """`` (it calls posix.system)`` for torch's refusal of a pickle naming that callable, else ``""``."""
    # torch words it "Unsupported global: GLOBAL posix.system" (2.6) or "unsupported GLOBAL posix.system" (2.14)
    found = re.search(r"(?i)unsupported\s+(?:global:\s*)?GLOBAL\s+([\w.]+)", str(exc))
    return f" (it calls {found.group(1)})" if found else ""


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
        raise UserError(f"The {what} {str(path)!r} is an HTML page, not weights (a failed download?): delete it and download it again.")
    try:
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        culprit = pickle_culprit(exc)
        raise UnsafeFileError(
            f"The {what} {str(path)!r} was refused: it holds objects other than tensors and plain data, "
            f"which loading would execute{culprit}."
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"The {what} {str(path)!r} is damaged or not a PyTorch file ({str(exc).splitlines()[0][:160]}).") from None
