"""SIFA's per-volume preprocessing: which slices become training records, and the intensity
normalisation (clip the top 2% of the histogram, then z-score)."""
import numpy as np

# Records hold the slices with foreground labels plus this many slices either side, so the
# segmenter also sees a few slices just past the structure's ends with no labels in the middle.
RECORD_SLICE_MARGIN = 1


def clip_and_standardise(volume, clip_percent=2.0):
    """Clips intensities above the (100 - clip_percent) percentile, then z-scores the volume."""
    volume = np.asarray(volume, dtype=np.float64)
    if not np.all(np.isfinite(volume)):
        raise ValueError("volume holds NaN or infinite voxels")
    ceiling = np.percentile(volume, 100.0 - clip_percent)
    clipped = np.minimum(volume, ceiling)
    std = clipped.std()
    if std == 0:
        raise ValueError("volume is constant after clipping; it cannot be z-scored")
    return ((clipped - clipped.mean()) / std).astype(np.float32)


def record_crop(label):
    """(slices of the volume to hand the writer, record slice indices within them).

    Records are the slices from the first to the last one with foreground labels, widened by
    RECORD_SLICE_MARGIN; the crop keeps one more slice either side as their outer neighbours.
    The writer computes stats.json over the whole volume handed in, so cropping makes it the
    range of exactly the data in the records.
    """
    labelled = np.flatnonzero(label.any(axis=(0, 1)))
    if not labelled.size:
        raise ValueError("a subject has no labelled slice; the volume is too thin")
    first = max(int(labelled[0]) - RECORD_SLICE_MARGIN, 0)
    last = min(int(labelled[-1]) + RECORD_SLICE_MARGIN, label.shape[2] - 1)
    start, stop = max(first - 1, 0), min(last + 2, label.shape[2])
    return slice(start, stop), list(range(first - start, last - start + 1))
