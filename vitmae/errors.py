"""Errors raised on purpose for what a user gave, and one readable line out of any exception."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (a flag, a path, a file, a checkpoint, a setting), raised on purpose with a
    message that says what is wrong and what to do: the command has to change (command lines exit with status 2).
    Any other exception is a fault of the code or of a library."""


class InvalidInput(UserError, ValueError):
    """A value the user gave is wrong: a setting out of range, a file or checkpoint that is not what it must be."""


class NotFound(UserError, FileNotFoundError):
    """A path, folder, object or checkpoint the user named does not exist."""


def one_line(error: BaseException, limit: int = 1000, default: str | None = None) -> str:
    """The first non-empty line of `str(error)`, cut to `limit` characters; `default` (else the type's name) when
    the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if default is None else default
    return lines[0][:limit]
