"""Bad input to the data converters, and how a converter's command line ends on it.

Bad input (a raw-data problem, a bad option value, a non-empty output folder) ends the command
with one line "error: ..." on stderr and exit code 2, without a traceback.
"""
import sys


class RawDataError(ValueError):
    """Bad raw input; the message names the file and the problem."""


class UsageError(ValueError):
    """An option value a converter cannot use."""


def exit_on_bad_input(main, argv=None):
    """Runs `main(argv)`; bad input becomes "error: ..." on stderr and exit code 2."""
    try:
        main(argv)
    except (RawDataError, UsageError, FileExistsError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
