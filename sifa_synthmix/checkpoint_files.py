"""Checkpoints a run can rely on: each read in full before use, the newest intact one chosen.

TensorFlow renames a checkpoint's files into place but never flushes them, so a crash or a full
disk can leave a latest checkpoint whose data file is truncated (restoring it dies with
"IndexError: Read less bytes than requested", naming no file). `save` flushes every file before
it returns; `newest_intact` skips a damaged checkpoint, naming its file, for the one before it.
"""
import glob
import os
import pathlib
import re

import tensorflow as tf

from sifa_synthmix.tensorflow_paths import for_people, for_tensorflow

_NUMBERED = re.compile(r"^ckpt-(\d+)\.index$")


class CheckpointError(Exception):
    """A checkpoint is missing or damaged; the message names the file."""


def _data_files(prefix):
    return sorted(glob.glob(glob.escape(prefix) + ".data-*"))


def _reason(error):
    """The first line of a TensorFlow error, without its op and function names."""
    message = (getattr(error, "message", None) or str(error)).splitlines()[0]
    return re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]", "", message)


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
        raise CheckpointError(f"{index}: damaged checkpoint index ({_reason(error)})") from None
    data = _data_files(prefix)
    try:
        for name, dtype in reader.get_variable_to_dtype_map().items():
            tf.raw_ops.RestoreV2(prefix=readable, tensor_names=[name], shape_and_slices=[""], dtypes=[dtype])
    except tf.errors.OpError as error:
        damaged = data[0] if len(data) == 1 else f"{prefix}.data-*"
        raise CheckpointError(f"{damaged}: damaged checkpoint data ({_reason(error)})") from None
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
    damaged, a CheckpointError lists them.
    """
    damaged = []
    for prefix in newest_first(directory):
        try:
            verify(prefix)
        except CheckpointError as error:
            damaged.append(str(error))
            continue
        if damaged:
            log(f"warning: skipped damaged checkpoint(s): {'; '.join(damaged)}; using {prefix}")
        return prefix
    if damaged:
        raise CheckpointError(f"{directory}: no intact checkpoint ({'; '.join(damaged)})")
    return None


def _fsync(path, flags=os.O_RDONLY):
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def save(manager, number):
    """manager.save(checkpoint_number=number), with the new files and their folder flushed to
    disk before it returns, so a later crash cannot truncate a checkpoint already reported saved."""
    prefix = for_people(manager.save(checkpoint_number=number))
    for path in (f"{prefix}.index", *_data_files(prefix), os.path.join(for_people(manager.directory), "checkpoint")):
        _fsync(path)
    _fsync(for_people(manager.directory), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    return prefix
