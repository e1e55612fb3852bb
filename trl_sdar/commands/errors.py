"""How the commands report a value that cannot work: one line naming the field and the fix, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class RecipeError(ValueError):
    """A recipe or command-line value that cannot work; the message names the field and the fix."""


@contextmanager
def one_line_errors(command: str, *also: type[Exception]) -> Iterator[None]:
    """Turn a user error raised inside `trl-sdar COMMAND` into `SystemExit("trl-sdar COMMAND: error: …")`, one line
    (ValueError, RecipeError among them, FileNotFoundError, and the exception types in `also`)."""
    try:
        yield
    except (ValueError, FileNotFoundError, *also) as error:
        raise SystemExit(f"trl-sdar {command}: error: {' '.join(str(error).split())}") from error
