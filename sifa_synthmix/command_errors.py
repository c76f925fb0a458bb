"""How a command line (main.py, the data converters) ends on an error or a signal, without
importing TensorFlow (main.py's --help and flag errors come before it).

Bad input and what the system refuses (a file that cannot be read or written: a full or read-only
disk, a missing permission, and TensorFlow's errors of the same kind) end the command with one
line "error: ..." on stderr and exit code 2, without a traceback. SIGINT and SIGTERM end it with
one line and 128 + the signal number, after the cleanups have run (a run lock, a staged output
folder).
"""
import contextlib
import functools
import os
import re
import signal
import sys


def fail(message, code=2):
    """One line on stderr and the exit code; no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def refused_by_the_system():
    """The exception classes of a file the system will not read or write: OSError, and
    TensorFlow's counterparts when TensorFlow is loaded (a SavedModel or record written to a full
    disk raises ResourceExhaustedError, not OSError)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "errors"):
        return (OSError,)
    return (OSError, tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError, tf.errors.NotFoundError)


def error_text(error):
    """The message of an error for its `error:` line: "PATH: reason" for an OSError (whose own
    text reads "[Errno 28] No space left on device: 'PATH'"), the first line of a TensorFlow
    error without its op and function names, else its text."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        moved_to = f" -> {error.filename2}" if error.filename2 is not None else ""
        return f"{error.filename}{moved_to}: {error.strerror}"
    if type(error).__module__.startswith("tensorflow"):
        message = (getattr(error, "message", None) or str(error)).splitlines() or [type(error).__name__]
        return re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message[0])
    return str(error)


class Stopped(SystemExit):
    """The exit of a command stopped by a signal: code 128 + the signal number."""


_STOPPED_BY = []  # the signal that stopped the command, once its line is written


def stop_on_signal(signum, frame):
    """A SIGINT or SIGTERM handler: one line and 128 + the signal number; SystemExit still runs
    cleanups (a run lock, a staged output folder)."""
    del frame
    if not _STOPPED_BY:
        print(f"error: stopped by {signal.Signals(signum).name}", file=sys.stderr, flush=True)
        _STOPPED_BY.append(signum)
    raise Stopped(128 + signum)


def _stop_again(unraisable, hook):
    """sys.unraisablehook: a stop raised where Python ignores exceptions (a __del__ the garbage
    collector runs, an at-fork hook) is lost, and the command would run on; the signal is sent
    again, to be handled where it can stop the command. Others go to `hook`."""
    if isinstance(unraisable.exc_value, Stopped):
        os.kill(os.getpid(), unraisable.exc_value.code - 128)
    else:
        hook(unraisable)


@contextlib.contextmanager
def signals_end_the_command():
    """Within the block SIGINT and SIGTERM end the command through `stop_on_signal`; the previous
    handlers come back after it."""
    previous = {signum: signal.signal(signum, stop_on_signal) for signum in (signal.SIGINT, signal.SIGTERM)}
    previous_hook = sys.unraisablehook
    sys.unraisablehook = functools.partial(_stop_again, hook=previous_hook)
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        _STOPPED_BY.clear()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def quiet_worker():
    """Initializer of a worker process: SIGINT is left to the parent (Ctrl-C reaches the whole
    process group; the parent stops the pool) and SIGTERM ends the worker without a word, so a
    stop is one line, the parent's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
