"""Image files that PIL cannot read: found by their headers before a run starts, named when one fails later.

A bad file in an image folder used to surface as an ``OSError`` or ``UnidentifiedImageError`` traceback in
the middle of an epoch. :func:`bad_images` opens every file's header (PIL reads the format and size, not
the pixels: about 0.1 ms a file) when the data set is built, so a run refuses at once and names the files,
or, with ``--skip-bad-images``, leaves them out and says how many. Files whose header announces more pixels
than PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) count as bad rather than being decoded.
A file whose header is sound but whose data is cut short is found only when it is decoded; :func:`load_rgb`
then names it in one sentence (the run's last checkpoint is kept; remove the file and resume).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

from robustft.plugin import UserError

#: Files named in the refusal before "and N more".
SHOWN = 5


@contextlib.contextmanager
def _opened(path: str) -> Iterator[Any]:
    """PIL's image at ``path`` with its decompression-bomb warning raised as an error (the header is read, not the
    pixels)."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            yield image


def _bomb_errors() -> tuple[type[BaseException], ...]:
    from PIL import Image

    return Image.DecompressionBombWarning, Image.DecompressionBombError


def _reason(path: str) -> str | None:
    """Why PIL cannot take the image at ``path`` from its header alone, or None when it can."""
    from PIL import Image

    try:
        with _opened(path) as image:
            image.size  # noqa: B018 - the header is read by open(); size proves it parsed
    except _bomb_errors():
        return f"more pixels than the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS}"
    except (OSError, SyntaxError, ValueError) as exc:  # UnidentifiedImageError is an OSError
        return str(exc) or type(exc).__name__
    return None


def bad_images(paths: Sequence[str]) -> list[tuple[str, str]]:
    """(path, reason) for every file in ``paths`` whose header PIL cannot read."""
    found = []
    for path in paths:
        reason = _reason(path)
        if reason is not None:
            found.append((path, reason))
    return found


def refuse_or_skip(samples: list[tuple[str, int]], folder: str, *, skip: bool, warn: Any = None) -> list[tuple[str, int]]:
    """``samples`` without its bad images when ``skip`` (with a warning counting them); otherwise the same
    list, or a :class:`UserError` naming the bad files when there are any."""
    bad = bad_images([path for path, _ in samples])
    if not bad:
        return samples
    if not skip:
        named = "; ".join(f"{path} ({reason})" for path, reason in bad[:SHOWN])
        more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        raise UserError(
            f"{len(bad)} file(s) in {folder!r} are not readable images: {named}{more}; remove them, or pass "
            "--skip-bad-images to leave them out."
        )
    bad_paths = {path for path, _ in bad}
    if warn is not None:
        warn(f"Left out {len(bad)} unreadable image file(s) of {folder!r} (--skip-bad-images), e.g. {bad[0][0]}.")
    return [sample for sample in samples if sample[0] not in bad_paths]


def load_rgb(path: str) -> Any:
    """The image at ``path`` as an RGB PIL image; a file PIL cannot decode is one sentence naming it."""
    try:
        with _opened(path) as image:
            return image.convert("RGB")
    except _bomb_errors():
        raise UserError(f"The image {path!r} has more pixels than the decompression-bomb limit; remove it.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"The image {path!r} cannot be decoded ({exc or type(exc).__name__}); remove it and resume the run.") from None
