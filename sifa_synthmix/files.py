"""Files and folders written so that a crash never leaves one that looks complete: atomic writes,
files that appear together or not at all, staged folders that replace their target whole, and
whether the process that left one behind still runs."""
import contextlib
import errno
import glob
import os
import pathlib
import shutil

STAGING_MARK = ".partial-"  # a staged folder's name: NAME.partial-PID


def process_running(pid):
    """Whether process `pid` runs on this host (someone else's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def atomic_write_bytes(path, data):
    """Writes via a temporary file and a rename, so a crash never leaves a half-written file (and
    a failed write, on a full disk say, no temporary file)."""
    path = pathlib.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path, text):
    atomic_write_bytes(path, text.encode("utf-8"))


def write_together(contents):
    """Writes {path: bytes} so that the files appear together or not at all: each to a temporary
    file first (where a full disk fails), then each renamed into place; a failure removes what
    this call wrote. For outputs that mean something only as a set (a label map and its
    probabilities)."""
    temporary = {path: path.with_name(path.name + ".tmp") for path in map(pathlib.Path, contents)}
    placed = []
    try:
        for tmp, data in zip(temporary.values(), contents.values()):
            tmp.write_bytes(data)
        for path, tmp in temporary.items():
            os.replace(tmp, path)
            placed.append(path)
    except BaseException:
        for path in [*temporary.values(), *placed]:
            path.unlink(missing_ok=True)
        raise


def remove_abandoned_staging(output_dir, log=print):
    """Removes the staging folders of `output_dir` whose process no longer runs on this host: a
    command killed by SIGKILL (or a crash) cannot remove its own, and nothing else would."""
    for path in output_dir.parent.glob(f"{glob.escape(output_dir.name)}{STAGING_MARK}*"):
        pid = path.name.rpartition(STAGING_MARK)[2]
        if pid.isdigit() and path.is_dir() and not process_running(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            log(f"removed {path}, left unfinished by process {pid} (killed while it wrote {output_dir})")


def _refusal(output_dir):
    """Why `output_dir` cannot be replaced whole by a staged folder, or None."""
    if output_dir.exists() and not output_dir.is_dir():
        return f"{output_dir}: a file, not a folder; remove it or choose another folder"
    if output_dir.exists() and any(output_dir.iterdir()):
        return f"{output_dir} is not empty; remove it or choose another folder"
    if output_dir == pathlib.Path.cwd() or output_dir in pathlib.Path.cwd().parents:
        return (f"{output_dir}: the current folder (or one holding it), which the output would replace whole; "
                "name a new folder inside it")
    return None


@contextlib.contextmanager
def staged_folder(output_dir, log=print):
    """Yields a sibling staging folder (NAME.partial-PID) that replaces `output_dir` when the
    block succeeds and is removed when it fails, so `output_dir` (which must be absent or empty)
    is either a finished data set or untouched. FileExistsError for an `output_dir` that cannot
    be replaced (a file, a folder with files, the current folder) or that another process
    filled meanwhile; the staging folders of killed processes are removed first."""
    output_dir = pathlib.Path(os.path.abspath(output_dir))
    refusal = _refusal(output_dir)
    if refusal:
        raise FileExistsError(refusal)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(output_dir, log)
    staging = output_dir.with_name(f"{output_dir.name}{STAGING_MARK}{os.getpid()}")
    staging.mkdir()
    try:
        yield staging
        try:
            os.replace(staging, output_dir)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR):
                raise
            raise FileExistsError(f"{output_dir}: filled by another process while this one wrote (two commands "
                                  "with one output folder?); this one's output is discarded") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
