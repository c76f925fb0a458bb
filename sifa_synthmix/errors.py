"""The one base class of the errors this toolkit reports to its user, and the stop of a run.

Every error that stands for bad input, a refused setting or a run that cannot go on derives from
`ToolkitError` (config.ConfigError, data.reader.DataError, data.scans.RawDataError,
runs.run_folder.RunFolderError, ...): main.py and the data converters catch this one class and
print its message as one `error: ...` line, with its `exit_code` (2 unless the class says
otherwise). Its message names the file or flag and the problem. What the system refuses (an
OSError: a full or read-only disk) is not the toolkit's error but ends a command the same way
(command_errors.py); a run stopped by a signal ends with `TrainingStopped`, which is no error.
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
