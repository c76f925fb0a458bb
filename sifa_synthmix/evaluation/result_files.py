"""Result files written atomically (a crash never leaves one that looks complete): JSON with NaN
stored as null (valid JSON for other tools), CSV, and images."""
import csv
import io
import json
import math

from sifa_synthmix.data.layout import atomic_write_bytes, atomic_write_text

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
