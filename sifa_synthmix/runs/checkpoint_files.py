"""Checkpoints a run can rely on: each read in full before use, the newest intact one chosen.

TensorFlow renames a checkpoint's files into place but never flushes them, so a crash or a full
disk can leave a latest checkpoint whose data file is truncated (restoring it dies with
"IndexError: Read less bytes than requested", naming no file). `save` flushes every file before
it returns; `newest_intact` skips a damaged checkpoint, naming its file, for the one before it.
"""
import errno
import glob
import os
import pathlib
import re
import shutil

import tensorflow as tf
from google.protobuf import text_format

from sifa_synthmix.command_errors import error_text
from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.tensorflow_paths import for_people, for_tensorflow

_NUMBERED = re.compile(r"^ckpt-(\d+)\.index$")
_UNFINISHED = re.compile(r"^ckpt-\d+_temp$")  # where TensorFlow writes a checkpoint before moving it into place
# How often a reader lists a checkpoint folder again when a checkpoint vanishes while it reads it:
# a trainer deletes one per save, so more than a few in a row means something else deletes them.
_RELISTS = 5


class CheckpointError(ToolkitError):
    """A checkpoint is missing or damaged; the message names the file."""


class DiskFullError(CheckpointError):
    """A checkpoint could not be saved for lack of space; the message names the folder and the space needed."""


def _data_files(prefix):
    return sorted(glob.glob(glob.escape(prefix) + ".data-*"))


def verify(prefix):
    """Reads every tensor of the checkpoint at `prefix` (as a restore does, so checksums are
    checked and input-pipeline states read too); raises CheckpointError naming the file that is
    missing or damaged. Returns the prefix."""
    prefix = str(prefix).removesuffix(".index")
    index = f"{prefix}.index"
    if not os.path.isfile(index):
        raise CheckpointError(f"{index}: the checkpoint does not exist")
    readable = for_tensorflow(prefix)
    try:
        reader = tf.train.load_checkpoint(readable)
    except (tf.errors.OpError, ValueError) as error:
        raise CheckpointError(f"{index}: damaged checkpoint index ({error_text(error)})") from None
    data = _data_files(prefix)
    try:
        for name, dtype in reader.get_variable_to_dtype_map().items():
            tf.raw_ops.RestoreV2(prefix=readable, tensor_names=[name], shape_and_slices=[""], dtypes=[dtype])
    except tf.errors.OpError as error:
        damaged = data[0] if len(data) == 1 else f"{prefix}.data-*"
        raise CheckpointError(f"{damaged}: damaged checkpoint data ({error_text(error)})") from None
    return prefix


def step_of(prefix):
    """The N of a numbered checkpoint prefix (".../ckpt-N"), or None."""
    match = re.search(r"-(\d+)$", str(prefix))
    return int(match.group(1)) if match else None


def newest_first(directory):
    """Prefixes of the numbered checkpoints (ckpt-N) in `directory`, highest N first."""
    numbered = []
    for path in pathlib.Path(directory).glob("ckpt-*.index"):
        match = _NUMBERED.match(path.name)
        if match:
            numbered.append((int(match.group(1)), str(path.with_suffix(""))))
    return [prefix for _, prefix in sorted(numbered, reverse=True)]


def newest_intact(directory, log=print):
    """The newest checkpoint in `directory` that reads in full, or None when it holds none.

    Damaged newer ones are skipped with one line naming their files; when every checkpoint is
    damaged, a CheckpointError lists them. A checkpoint deleted while it is read (a trainer
    keeping --keep_checkpoints saved a newer one) is not damaged: the folder is listed again.
    """
    for _ in range(_RELISTS):
        damaged, vanished = [], False
        for prefix in newest_first(directory):
            try:
                verify(prefix)
            except CheckpointError as error:
                vanished = not os.path.isfile(f"{prefix}.index")
                if vanished:
                    break
                damaged.append(str(error))
                continue
            if damaged:
                log(f"warning: skipped damaged checkpoint(s): {'; '.join(damaged)}; using {prefix}")
            return prefix
        if not vanished:
            break
    else:
        raise CheckpointError(vanishing(directory, _RELISTS))
    if damaged:
        raise CheckpointError(f"{directory}: no intact checkpoint ({'; '.join(damaged)})")
    return None


def vanishing(directory, times):
    """The message of a reader whose checkpoint was deleted under it `times` in a row."""
    return (f"{directory}: the newest checkpoint was deleted while it was read, {times} times in a row (a trainer "
            "that saves faster than a checkpoint can be read, with few --keep_checkpoints?); try again, or give "
            "--checkpoint")


def repair_state(directory, log=print):
    """Rewrites DIRECTORY/checkpoint from the numbered checkpoints there when it is missing or
    unreadable: CheckpointManager learns from that file alone which old checkpoints it may delete
    (beyond --keep_checkpoints), and would keep them all."""
    numbered = newest_first(directory)
    if not numbered:
        return
    try:
        state = tf.train.get_checkpoint_state(for_tensorflow(directory, folder=True))
    except text_format.ParseError:
        state = None
    if state is not None:
        return
    oldest_first = list(reversed(numbered))
    # CheckpointManager deletes only checkpoints newer than last_preserved_timestamp.
    times = [os.path.getmtime(f"{prefix}.index") for prefix in oldest_first]
    names = [os.path.basename(prefix) for prefix in oldest_first]
    lines = [f'model_checkpoint_path: "{names[-1]}"', *(f'all_model_checkpoint_paths: "{n}"' for n in names),
             *(f"all_model_checkpoint_timestamps: {t!r}" for t in times),
             f"last_preserved_timestamp: {min(times) - 1!r}"]
    atomic_write_text(os.path.join(directory, "checkpoint"), "\n".join(lines) + "\n")
    log(f"warning: {os.path.join(directory, 'checkpoint')} was missing or unreadable; rewritten from the "
        f"{len(names)} checkpoint(s) there, so that old ones are deleted as --keep_checkpoints says")


def _fsync(path, flags=os.O_RDONLY):
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _bytes(paths):
    return sum(file.stat().st_size for path in paths for file in (path.rglob("*") if path.is_dir() else [path])
               if file.is_file())


def _megabytes(size):
    return f"{size / 1e6:.1f} MB"


def _files_of(directory, number):
    directory = pathlib.Path(directory)
    return [*directory.glob(f"ckpt-{number}.*"), *directory.glob(f"ckpt-{number}_temp")]


def remove_unfinished(directory, log=print):
    """Deletes the ckpt-N_temp/ folders in `directory`: TensorFlow writes a checkpoint there
    before moving it into place, so a save that was killed or failed leaves a full-size copy
    that nothing else removes."""
    for path in sorted(pathlib.Path(directory).glob("ckpt-*_temp")):
        if _UNFINISHED.match(path.name) and path.is_dir():
            size = _bytes([path])
            shutil.rmtree(path)
            log(f"removed {path} ({_megabytes(size)}), left by a checkpoint save that did not finish")


def _is_disk_full(error):
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    return isinstance(error, tf.errors.ResourceExhaustedError) or "No space left on device" in str(error)


def _disk_full(directory, number, error, written):
    """The DiskFullError of a failed save: the space free in `directory` and what a checkpoint takes."""
    free = shutil.disk_usage(directory).free
    saved = newest_first(directory)
    if saved:
        needed = f"about {_megabytes(_bytes(_files_of(directory, step_of(saved[0]))))} (the size of {saved[0]})"
    else:
        needed = f"more than the {_megabytes(written)} written before the disk filled"
    return DiskFullError(f"{directory}: no space left to save checkpoint ckpt-{number} ({error_text(error)}); "
                         f"{_megabytes(free)} free there, a checkpoint of this run needs {needed}. Free space "
                         "and start the same command again to resume")


def save(manager, number):
    """manager.save(checkpoint_number=number), with the new files and their folder flushed to
    disk before it returns, so a later crash cannot truncate a checkpoint already reported saved.

    A save that fails leaves none of its files; on a full disk it raises DiskFullError."""
    directory = for_people(manager.directory)
    try:
        prefix = for_people(manager.save(checkpoint_number=number))
    except (tf.errors.OpError, OSError) as error:
        unfinished = _files_of(directory, number)
        written = _bytes(unfinished)
        for path in unfinished:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        if _is_disk_full(error):
            raise _disk_full(directory, number, error, written) from None
        raise
    for path in (f"{prefix}.index", *_data_files(prefix), os.path.join(directory, "checkpoint")):
        _fsync(path)
    _fsync(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return prefix
