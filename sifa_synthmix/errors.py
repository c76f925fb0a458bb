"""The one base class of the errors this toolkit reports to its user, and the stop of a run.

Every error that stands for bad input, a refused setting or a run that cannot go on derives from
`ToolkitError`: main.py and the data converters catch this one class and print its message as one
`error: ...` line, with its `exit_code` (2 unless the class says otherwise). Its message names the
file or flag and the problem.
"""


class ToolkitError(Exception):
    """A user-facing error: printed as one `error:` line, the command exits with `exit_code`."""

    exit_code = 2


class TrainingStopped(Exception):
    """SIGINT or SIGTERM stopped the run (a stop, not an error); its last step is checkpointed.
    exit_code: 128 + signal."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.exit_code = 128 + signum
