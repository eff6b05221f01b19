"""The error a user's input raises, and error messages on one line, for every layer of the package."""

from __future__ import annotations


class InputError(ValueError):
    """Input a user gave cannot be used: an image, a folder, a checkpoint, a value of an argument.

    The command line prints it as one line and exits with status 2; any other exception there is a bug
    (status 1). :class:`~gridattn.models.CheckpointError`, :class:`~gridattn.inference.ImageTooLargeError`
    and the image readers' errors are input errors.
    """


class CheckpointError(InputError):
    """A checkpoint cannot be read or does not fit its model: the message names the file and lists missing,
    unexpected and mis-shaped keys."""


class LayoutAssumedWarning(UserWarning):
    """A checkpoint's weights fit more than one layout (the official code's and a trainer's that differ only in
    a constant, such as neosr's RGB mean): the warning says which one was assumed and how to choose the other."""


def one_line(error: BaseException, *, first: bool = False) -> str:
    """``error``'s message on one line: its non-empty lines joined by ``"; "`` (only the first with
    ``first=True``), or the error type's name when the message is empty."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0] if first else "; ".join(lines)
