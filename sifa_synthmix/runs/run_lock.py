"""An exclusive lock on a run folder, so that two trainers never write the same run (and, with
its own lock file, two evaluations never write the same eval/).

The lock is a file in the run folder holding the holder's PID and host, created atomically
(O_CREAT | O_EXCL) and removed when the holder ends. A trainer killed hard leaves it behind: a
lock whose process no longer runs on this host is stale and replaced.
"""
import json
import os
import pathlib
import socket

from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.files import process_running
from sifa_synthmix.runs.run_folder import LOCK_FILE


class RunLockError(ToolkitError):
    """Another trainer holds the run folder."""


class RunLock:
    """`with RunLock(folder):` holds the folder's lock for the block (creating the folder).
    `activity` names what the holder does, in the refusal ("being trained by process ...")."""

    def __init__(self, folder, log=print, file_name=LOCK_FILE, activity="trained"):
        self.path = pathlib.Path(folder) / file_name
        self.log = log
        self.activity = activity
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

    def _holder(self):
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            return {"pid": int(holder["pid"]), "host": str(holder["host"])}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # being written by its owner, or not ours to judge

    def _is_stale(self, holder):
        return holder.get("host") == self.owner["host"] and not process_running(holder["pid"])

    def holder_text(self):
        """"being trained by process P on HOST (lock file F)" while a live process holds the lock
        (as far as this host can tell), else None: a reader of the folder says what it sees may
        change under it."""
        holder = self._holder()
        if holder is None or (holder and self._is_stale(holder)):
            return None
        process = f" by process {holder['pid']} on {holder['host']}" if holder else ""
        return f"being {self.activity}{process} (lock file {self.path})"

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is None:  # released meanwhile
                    continue
                if not holder:
                    raise RunLockError(f"{self.path}: another process is taking this lock, or the lock "
                                       "file is unreadable (remove it if no other process runs)") from None
                if not self._is_stale(holder):
                    raise RunLockError(
                        f"{self.path.parent} is being {self.activity} by process {holder['pid']} on {holder['host']} "
                        f"(lock file {self.path}; remove it only if that process is gone)") from None
                self.log(f"removed the stale lock {self.path} of process {holder['pid']}, which no longer runs")
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
                json.dump(self.owner, handle)
            return self
        raise RunLockError(f"{self.path}: could not take the lock (other processes keep taking it)")

    def release(self):
        """Removes the lock file if it is still this process's."""
        if self._holder() == self.owner:
            self.path.unlink(missing_ok=True)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()
