"""Result files written atomically (a crash never leaves one that looks complete): JSON with NaN
stored as null (valid JSON for other tools), CSV, images, and whole folders."""
import contextlib
import csv
import io
import json
import math
import os
import pathlib
import shutil

from sifa_synthmix.files import atomic_write_bytes, atomic_write_text

# Fields that hold a float which may be NaN (stored as null).
FLOAT_FIELDS = frozenset({"dice", "assd", "dice_mean", "dice_std", "assd_mean", "assd_std", "t", "p", "w", "w_p"})


def _nan_as_null(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_as_null(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_as_null(item) for item in value]
    return value


def _null_as_nan(value):
    if isinstance(value, dict):
        return {key: float("nan") if item is None and key in FLOAT_FIELDS else _null_as_nan(item)
                for key, item in value.items()}
    if isinstance(value, list):
        return [_null_as_nan(item) for item in value]
    return value


def write_json(path, record):
    atomic_write_text(path, json.dumps(_nan_as_null(record), indent=2, allow_nan=False) + "\n")


def read_json(path):
    """A record written by `write_json`, with its null floats back as NaN."""
    with open(path, encoding="utf-8") as handle:
        return _null_as_nan(json.load(handle))


def write_csv(path, header, rows):
    """NaN cells are written empty."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(["" if cell is None else cell for cell in _nan_as_null(list(row))] for row in rows)
    atomic_write_text(path, buffer.getvalue())


def write_figure(path, figure):
    """Saves a matplotlib figure as PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


@contextlib.contextmanager
def replaced_folder(folder):
    """Yields FOLDER.partial, to write a new FOLDER in; it replaces FOLDER when the block succeeds
    and is deleted when it fails, so a failed or killed writer leaves the previous FOLDER whole
    (killed between the two renames: FOLDER.previous, put back at the next call)."""
    folder = pathlib.Path(folder)
    staging, previous = (folder.with_name(f"{folder.name}.{suffix}") for suffix in ("partial", "previous"))
    if previous.is_dir() and not folder.exists():
        os.replace(previous, folder)
    for leftover in (staging, previous):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        os.replace(folder, previous)
    os.replace(staging, folder)
    shutil.rmtree(previous, ignore_errors=True)
