"""`tf.data` reader of official-format records: middle slice, one-hot labels, images in [-1, 1].

Every failure a user can cause (a missing or empty list, a path that does not exist, a truncated
file, a record with missing keys or the wrong byte size) becomes one `DataError` naming the file.
Checks on record contents run inside the pipeline and carry the file path with them; `as_data_error`
turns such a TensorFlow error into a `DataError` with just that message.
"""
import glob
import json
import math
import os
import pathlib
import re
import struct

import numpy as np
import tensorflow as tf
from google.protobuf import message

from sifa_synthmix.data import records
from sifa_synthmix.errors import ToolkitError

ERROR_MARKER = "[sifa-data]"
_GLOB_CHARS = set("*?[")


class DataError(ToolkitError):
    """Bad input data; the message names the file and the problem."""


def _read_datalist(list_path):
    lines = [line.strip() for line in list_path.read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    if not entries:
        raise DataError(f"{list_path}: the datalist is empty")
    paths = []
    for number, entry in enumerate(entries, start=1):
        path = pathlib.Path(entry)
        if not path.is_absolute():
            path = list_path.parent / path
        if not path.is_file():
            raise DataError(f"{list_path}: entry {number} ({entry}) does not exist ({path})")
        paths.append(os.path.normpath(path))
    return paths


def _glob_below_existing_folder(pattern):
    """Files matching `pattern`, its longest leading folder that exists taken as a name: in
    `runs/data [1]/mr/*.tfrecords` the `[1]` is part of a folder's name, not a pattern."""
    folder, rest = pattern, ""
    while folder and not os.path.isdir(folder):
        folder, tail = os.path.split(folder)
        rest = os.path.join(tail, rest) if rest else tail
        if not tail:
            break
    literal = os.path.join(glob.escape(folder), rest) if folder and os.path.isdir(folder) else pattern
    return sorted(glob.glob(literal))


def resolve_record_paths(spec):
    """Record paths from a datalist file, a glob, a .tfrecords file, or a list/comma-list of these.

    Datalist entries are relative to the list's folder unless absolute.
    """
    specs = spec.split(",") if isinstance(spec, str) else list(spec)
    specs = [str(s).strip() for s in specs if str(s).strip()]
    if not specs:
        raise DataError("no record source given (expected a datalist, a glob or .tfrecords files)")
    paths = []
    for item in specs:
        if _GLOB_CHARS & set(item) and not os.path.isfile(item):
            matches = _glob_below_existing_folder(item)
            if not matches:
                raise DataError(f"{item}: the pattern matches no file")
            paths.extend(matches)
        elif item.endswith(".tfrecords") or item.endswith(".tfrecord"):
            if not os.path.isfile(item):
                raise DataError(f"{item}: the record file does not exist")
            paths.append(item)
        else:
            list_path = pathlib.Path(item)
            if not list_path.is_file():
                raise DataError(f"{item}: the datalist does not exist")
            paths.extend(_read_datalist(list_path))
    return paths


def check_record_framing(path):
    """Walks the TFRecord framing (length, length CRC, data, data CRC) without reading the data.

    Catches truncated and empty files up front, where the file can still be named. Returns the
    number of records.
    """
    size = os.path.getsize(path)
    if size == 0:
        raise DataError(f"{path}: the record file is empty")
    count, offset = 0, 0
    with open(path, "rb") as handle:
        while offset < size:
            header = handle.read(12)
            if len(header) < 12:
                raise DataError(f"{path}: truncated record header at byte {offset}")
            (length,) = struct.unpack("<Q", header[:8])
            offset += 12 + length + 4
            if offset > size:
                raise DataError(f"{path}: truncated record at byte {offset - 16 - length} "
                                f"(needs {length} bytes of data; the file ends first)")
            handle.seek(offset)
            count += 1
    return count


def load_intensity_range(stats_path, modality):
    """(min, max) for `modality` from a stats.json file."""
    stats_path = pathlib.Path(stats_path)
    if not stats_path.is_file():
        raise DataError(f"{stats_path}: the stats file does not exist")
    try:
        stats = json.loads(stats_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise DataError(f"{stats_path}: not valid JSON ({error})") from None
    if not isinstance(stats, dict):
        raise DataError(f"{stats_path}: not a JSON object of per-modality ranges "
                        f'({{"mr": {{"min": .., "max": ..}}, ...}}; got {type(stats).__name__})')
    if modality not in stats:
        raise DataError(f"{stats_path}: no statistics for modality {modality!r} "
                        f"(it has {sorted(stats)})")
    try:
        low, high = float(stats[modality]["min"]), float(stats[modality]["max"])
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{stats_path}: {modality} needs numeric 'min' and 'max'") from None
    return check_range(low, high, f"{stats_path}: {modality}")


def check_range(low, high, what):
    """(low, high) of an intensity range: finite (an infinite bound maps every image to one
    value), max above min; a DataError starting with `what` otherwise."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(f"{what} min ({low}) and max ({high}) must be finite")
    if not high > low:
        raise DataError(f"{what} max ({high}) must exceed min ({low})")
    return low, high


def to_unit_range(image, intensity_range):
    """Maps [min, max] to [-1, 1] as SIFA does: 2 * (x - min) / (max - min) - 1."""
    low, high = intensity_range
    return 2.0 * (image - low) / (high - low) - 1.0


def _fail(path, message):
    return [ERROR_MARKER, path, message]


def parse_record(serialized, path, image_size, num_classes):
    """Parses one record into its middle image slice (H, W, 1) float32 and label slice (H, W) uint8.

    Label values must be whole numbers from 0 to num_classes: the value num_classes is the
    "no class" value of SIFA's released data (an all-zero one-hot row); anything else, such as
    unmapped raw MMWHS values (205, 420, ...), is an error naming the file.
    """
    spec = {key: tf.io.FixedLenFeature([], tf.string, default_value="")
            for key in (records.IMAGE_KEY, records.LABEL_KEY)}
    spec.update({key: tf.io.FixedLenFeature([], tf.int64, default_value=-1)
                 for key in records.IMAGE_SIZE_KEYS + records.LABEL_SIZE_KEYS})
    features = tf.io.parse_single_example(serialized, spec)
    expected_bytes = image_size * image_size * records.SLICES_PER_RECORD * 4
    slices = []
    for key, size_keys in ((records.IMAGE_KEY, records.IMAGE_SIZE_KEYS),
                           (records.LABEL_KEY, records.LABEL_SIZE_KEYS)):
        raw = features[key]
        shape = tf.stack([features[k] for k in size_keys])
        checks = [
            tf.debugging.Assert(tf.strings.length(raw) > 0,
                                _fail(path, f": record lacks the key {key}")),
            tf.debugging.Assert(tf.reduce_all(shape >= 0),
                                _fail(path, f": record lacks a size key of {key} ({', '.join(size_keys)})")),
            tf.debugging.Assert(tf.equal(tf.strings.length(raw), expected_bytes),
                                _fail(path, f": {key} should hold {expected_bytes} bytes "
                                            f"({image_size}x{image_size}x3 float32); it holds")
                                + [tf.strings.length(raw)]),
        ]
        with tf.control_dependencies(checks):
            values = tf.io.decode_raw(raw, tf.float32)
        volume = tf.reshape(values, [image_size, image_size, records.SLICES_PER_RECORD])
        finite = tf.debugging.Assert(tf.reduce_all(tf.math.is_finite(volume[:, :, 1])),
                                     _fail(path, f": {key} holds NaN or infinite values"))
        with tf.control_dependencies([finite]):
            slices.append(tf.identity(volume[:, :, 1]))
    image, label = slices
    known = tf.reduce_all((label >= 0) & (label <= num_classes) & (tf.round(label) == label))
    check = tf.debugging.Assert(known, _fail(path, f": label values outside 0..{num_classes} "
                                                   "(the classes, plus SIFA's 'no class' value); found")
                                + [tf.unique(tf.reshape(label, [-1]))[0]], summarize=20)
    with tf.control_dependencies([check]):
        return image[:, :, tf.newaxis], tf.cast(label, tf.uint8)


def one_hot_labels(label, num_classes):
    """One-hot with depth num_classes; values >= num_classes (SIFA's 5) give an all-zero row."""
    return tf.one_hot(tf.cast(label, tf.int32), num_classes, dtype=tf.float32)


def shift_slice(image, label, offset, max_shift):
    """`image` (H, W, 1) and `label` (H, W) moved by `offset` (rows, columns) pixels, |offset| <=
    max_shift; what enters is the image's minimum (the air or padding of a prepared slice) and
    background. Removes the position prior a fixed framing gives: a cardiac MR window is centred on
    the heart, a CT one on the whole chest (docs/phantom_results.md)."""
    size = tf.shape(label)
    start = max_shift - offset
    image = tf.pad(image, [[max_shift, max_shift], [max_shift, max_shift], [0, 0]],
                   constant_values=tf.reduce_min(image))
    label = tf.pad(label, [[max_shift, max_shift], [max_shift, max_shift]])
    return (tf.slice(image, tf.concat([start, [0]], 0), tf.concat([size, [1]], 0)),
            tf.slice(label, start, size))


def _randomly_shifted(dataset, max_shift, seed, deterministic):
    """Each slice of `dataset` shifted by a uniform random offset in [-max_shift, max_shift]^2,
    drawn from a seeded stream so that a run repeats."""
    seeds = tf.data.Dataset.random(seed=seed).batch(2)

    def shift(slice_and_label, pair):
        offset = tf.random.stateless_uniform([2], seed=pair, minval=-max_shift, maxval=max_shift + 1,
                                             dtype=tf.int32)
        return shift_slice(*slice_and_label, offset, max_shift)
    return tf.data.Dataset.zip((dataset, seeds)).map(shift, num_parallel_calls=tf.data.AUTOTUNE,
                                                     deterministic=deterministic)


def make_dataset(paths, *, image_size, num_classes, intensity_range, batch_size,
                 shuffle=True, repeat=True, seed=None, deterministic=False,
                 shuffle_buffer=500, drop_remainder=True, max_shift=0):
    """Batches of (image [B,H,W,1] in [-1,1], one-hot label [B,H,W,C]) from record files; with
    `max_shift` > 0 every slice is moved by a random offset of up to that many pixels (`shift_slice`)."""
    paths = [str(p) for p in paths]
    if not paths:
        raise DataError("no record files to read")
    for path in paths:
        check_record_framing(path)
    files = tf.data.Dataset.from_tensor_slices(paths)
    if shuffle:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    interleave_options = {} if deterministic else {"num_parallel_calls": tf.data.AUTOTUNE, "deterministic": False}
    dataset = files.interleave(
        lambda p: tf.data.TFRecordDataset(p).map(lambda r: (r, p)),
        cycle_length=min(len(paths), 8), **interleave_options)
    # Parse before shuffling: the buffer then holds one image slice and uint8 labels per record
    # (a third of a serialized record), which also keeps a checkpointed iterator small.
    dataset = dataset.map(lambda r, p: parse_record(r, p, image_size, num_classes),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if max_shift:
        dataset = _randomly_shifted(dataset, max_shift, seed, deterministic)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(
        lambda image, label: (to_unit_range(image, intensity_range), one_hot_labels(label, num_classes)),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)
    options = tf.data.Options()
    options.deterministic = deterministic
    # No autotuning thread for an endless dataset: deleting its iterator could block for up to 60 s
    # (at a run's end, or whenever Python frees it). TensorFlow wakes that thread's sleep before it
    # marks the iterator cancelled, and a thread woken in between sleeps on (a lost wake-up;
    # docs/benchmarks.md). AUTOTUNE parallelism and prefetching then use TensorFlow's defaults.
    options.autotune.enabled = not repeat
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def read_records(path):
    """The serialized records of one file, checksums verified (TensorFlow's C++ reader: no log
    lines, unlike a failing tf.data iterator)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # tf_record_iterator's deprecation notice
    try:
        yield from tf.compat.v1.io.tf_record_iterator(path)
    except tf.errors.DataLossError as error:
        raise DataError(f"{path}: a record is corrupt ({error.message.splitlines()[0]})") from None
    finally:
        logger.setLevel(level)


def _record_problem(serialized, image_size, num_classes):
    """What `parse_record` would refuse in one record, in its words, or None."""
    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except message.DecodeError:
        return ": record is not a tf.train.Example"
    expected_bytes = image_size * image_size * records.SLICES_PER_RECORD * 4
    middles = []
    for key, size_keys in ((records.IMAGE_KEY, records.IMAGE_SIZE_KEYS),
                           (records.LABEL_KEY, records.LABEL_SIZE_KEYS)):
        if key not in features or not features[key].bytes_list.value:
            return f": record lacks the key {key}"
        if any(k not in features or not features[k].int64_list.value for k in size_keys):
            return f": record lacks a size key of {key} ({', '.join(size_keys)})"
        raw = features[key].bytes_list.value[0]
        if len(raw) != expected_bytes:
            return (f": {key} should hold {expected_bytes} bytes ({image_size}x{image_size}x3 float32); "
                    f"it holds {len(raw)}")
        middle = np.frombuffer(raw, np.float32).reshape(image_size, image_size, records.SLICES_PER_RECORD)[:, :, 1]
        if not np.isfinite(middle).all():
            return f": {key} holds NaN or infinite values"
        middles.append(middle)
    label = middles[1]
    known = (label >= 0) & (label <= num_classes) & (np.round(label) == label)
    if not known.all():
        return (f": label values outside 0..{num_classes} (the classes, plus SIFA's 'no class' value); "
                f"found {np.unique(label[~known])[:20].tolist()}")
    return None


def check_records(path, image_size, num_classes):
    """Reads every record of a file as the training pipeline will and raises a DataError naming
    the file and record on the first one it would refuse, so that bad data stops a run before
    its folder, log or events are written. Returns the number of records (1.3 ms each at
    256 x 256: python -m benchmarks.pipeline)."""
    count = check_record_framing(path)
    for index, serialized in enumerate(read_records(path)):
        problem = _record_problem(serialized, image_size, num_classes)
        if problem:
            raise DataError(f"{path}{problem} (record {index + 1} of {count})")
    return count


def find_corrupt_file(paths):
    """The first record file whose records fail TensorFlow's checksum, or None (reads them all)."""
    for path in paths:
        try:
            for _ in read_records(path):
                pass
        except DataError:
            return path
    return None


def as_data_error(error):
    """The `DataError` hidden in a TensorFlow error raised by the pipeline, or None."""
    message = getattr(error, "message", str(error))
    start = message.find(ERROR_MARKER)
    if start < 0:
        if isinstance(error, tf.errors.DataLossError):
            return DataError(f"a record file is corrupt: {message.splitlines()[0]}")
        return None
    # The assertion prints its data as "[marker] [path] [: reason] [value]..."; the reasons
    # start with ": " and hold no brackets, while a path may.
    line = message[start + len(ERROR_MARKER):].splitlines()[0].lstrip("] ")
    path, _, rest = line[1:].partition("] [: ")
    details = re.findall(r"\[([^\[\]]*)\]", "[: " + rest)
    return DataError(path + " ".join(details))
