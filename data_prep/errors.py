"""Bad input to the data converters, and how a converter's command line ends on it.

Bad input (a raw-data problem: sifa_synthmix/data/scans.py's RawDataError; a bad option value, a
non-empty output folder) and a file the system refuses (a full or read-only disk) end the command
with one line "error: ..." on stderr and exit code 2, without a traceback; SIGINT and SIGTERM with
one line and 128 + the signal number, after the staged output folder is removed
(sifa_synthmix/command_errors.py).
"""
from sifa_synthmix.command_errors import error_text, fail, refused_by_the_system, signals_end_the_command
from sifa_synthmix.errors import ToolkitError


class UsageError(ToolkitError, ValueError):
    """An option value a converter cannot use."""


def exit_on_bad_input(main, argv=None):
    """Runs `main(argv)`; bad input, or a file the system refuses, becomes "error: ..." on stderr
    and exit code 2; SIGINT and SIGTERM end it as `stop_on_signal` says."""
    with signals_end_the_command():
        try:
            main(argv)
        except (ToolkitError, *refused_by_the_system()) as error:
            fail(error_text(error))
