"""SIFA's per-volume intensity preprocessing: clip the top 2% of the histogram, then z-score."""
import numpy as np


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
