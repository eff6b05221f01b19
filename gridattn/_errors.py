"""Error messages on one line (command-line output, error summaries), for every layer of the package."""

from __future__ import annotations


def one_line(error: BaseException, *, first: bool = False) -> str:
    """``error``'s message on one line: its non-empty lines joined by ``"; "`` (only the first with
    ``first=True``), or the error type's name when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] if first else "; ".join(lines)
