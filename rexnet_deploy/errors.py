"""The failures a user sees, and the small helpers that phrase them.

The rule the code follows: :class:`UserError` (exit 2) means bad usage or bad input and carries one line
that names the file or value and the fix; :class:`CheckFailed` (exit 1) means a check the user asked for
did not hold; :class:`RuntimeUnavailable` means "cannot run here" (a runtime not installed, no GPU, an
engine built for another GPU), which bench shows as ``skipped: reason``. ``RuntimeError``/``ValueError``
and anything else mean a bug in this project and keep their traceback.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """Bad usage or bad input: the CLI prints the message and exits 2."""

    exit_code = 2


class CheckFailed(Exception):
    """A check the user asked for did not hold (parity, accuracy gate): exit 1."""

    exit_code = 1


class RuntimeUnavailable(UserError):
    """The runtime cannot run here: not installed, no device, or an artifact bound to other hardware."""


def first_line(exc: BaseException | str, limit: int = 160) -> str:
    """The first non-empty line of an exception's message (its type name when the message is empty)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__ if isinstance(exc, BaseException) else ""
    return text.splitlines()[0].strip()[:limit]


def require_file(path: str | Path, what: str, fix: str) -> Path:
    """``path`` as a Path if it is an existing file, else one line: ``{what} {path} does not exist: {fix}``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist: {fix}")
    return path
