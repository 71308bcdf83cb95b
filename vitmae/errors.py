"""One readable line out of any exception, for messages, error rows and logs."""

from __future__ import annotations


def one_line(error: BaseException, limit: int = 1000, default: str | None = None) -> str:
    """The first non-empty line of `str(error)`, cut to `limit` characters; `default` (else the type's name) when
    the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if default is None else default
    return lines[0][:limit]
