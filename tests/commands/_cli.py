"""The command line as the tests drive it: the one-line error a bad invocation ends with."""

import pytest

from trl_sdar.cli import main


def error_line(argv: list[str]) -> str:
    """The message `trl-sdar <argv>` exits with; fails the test unless it is a single `trl-sdar …` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    message = str(exit_info.value)
    assert "\n" not in message and message.startswith("trl-sdar"), message  # one line, no traceback
    return message
