"""User-facing errors.

Every mistake a user can make (a wrong name, a malformed radius, a missing file) raises a
:class:`UserError`. The CLI turns it into one sentence on stderr and a non-zero exit code, never a
traceback; library callers can catch it like any exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """An error caused by the user's input, reported as one sentence.

    ``exit_code`` follows the shell convention the CLI uses: 2 for a malformed or unknown input
    (like a usage error), 1 for anything else (a missing file, a failed load).
    """

    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadInputError(UserError):
    """A malformed value: a norm, a radius, an option. Exit code 2."""

    exit_code = 2


class UnknownNameError(BadInputError):
    """A name that is not registered; the message names the closest valid ones."""

    def __init__(self, kind: str, name: str, valid: Iterable[str], hint: str = "", canonical: dict[str, str] | None = None) -> None:
        """``valid`` may include aliases; ``canonical`` maps each alias to the name to suggest instead."""
        valid = sorted(set(valid))
        self.kind, self.name, self.valid = kind, name, valid
        canonical = canonical or {}
        close = list(dict.fromkeys(canonical.get(c, c) for c in closest(name, valid, n=5)))[:3]
        valid = sorted({canonical.get(v, v) for v in valid})
        if close:
            suggestion = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        elif valid:
            shown = ", ".join(valid[:12]) + (", ..." if len(valid) > 12 else "")
            suggestion = f"valid {kind}s: {shown}." if " " not in kind else f"valid names: {shown}."
        else:
            suggestion = f"no {kind} is installed."
        message = f"Unknown {kind} {name!r}: {suggestion}"
        if hint:
            message += " " + hint
        super().__init__(message)


def closest(name: str, valid: Iterable[str], n: int = 3) -> list[str]:
    """The valid names closest to ``name`` (case-insensitive), best first."""
    valid = list(valid)
    lowered = {v.lower(): v for v in valid}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    # A prefix or substring match is a strong hint even when difflib's ratio is low.
    for v in valid:
        if v not in (lowered[m] for m in matches) and len(name) >= 2 and name.lower() in v.lower():
            matches.append(v.lower())
    return [lowered[m] for m in matches][:n]
