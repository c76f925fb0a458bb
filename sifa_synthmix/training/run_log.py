"""The console lines of a training run, also kept in RUN/train.log (appended across resumes)."""
import datetime
import pathlib

from sifa_synthmix.runs.run_folder import LOG_FILE


class RunLog:
    """Called with one line, like print: echoes it and appends it, time-stamped, to the run
    folder's train.log. Lines logged before the folder is known (`keep_in`) are written then."""

    def __init__(self, echo=print):
        self.echo = echo
        self.path = None
        self.pending = []

    def __call__(self, line):
        self.echo(line)
        self.record(line)

    def record(self, line):
        """Appends a line to train.log only (what another part of the program prints)."""
        stamped = f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S} {line}"
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as log_file:
                log_file.write(stamped + "\n")
        elif self.pending is not None:
            self.pending.append(stamped)

    def keep_in(self, folder):
        """From now on lines go to FOLDER/train.log, after the ones logged so far."""
        self.path = pathlib.Path(folder) / LOG_FILE
        pending, self.pending = self.pending, []
        with open(self.path, "a", encoding="utf-8") as log_file:
            log_file.writelines(line + "\n" for line in pending)

    def without_file(self):
        """No train.log for this process (a worker that is not the chief)."""
        self.path, self.pending = None, None
