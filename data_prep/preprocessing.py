"""SIFA's per-volume preprocessing: where the crop is centred, which slices become training
records, and the intensity normalisation (clip the top 2% of the histogram, then z-score).

Crop centres (`crop_centre`): "labels", the centroid of the labelled structure (the named
converters, and labelled scans under "auto"); "body", the centroid of a label-free body mask
(`body_mask`; unlabelled scans under "auto", and every scan a prediction reads); "centre", the
array's centre.
"""
import numpy as np
from scipy import ndimage

from data_prep.volumes import centroid

CLIP_PERCENT = 2.0
CROP_CHOICES = ("auto", "labels", "body", "centre")
OTSU_SAMPLE_STEP = 7  # the threshold is computed on every 7th voxel: the same value, 7 times faster
# Records hold the slices with foreground labels plus this many slices either side, so the
# segmenter also sees a few slices just past the structure's ends with no labels in the middle.
RECORD_SLICE_MARGIN = 1


def clip_and_standardise(volume, clip_percent=CLIP_PERCENT):
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


def record_crop(label, what="labelled"):
    """(slices of the volume to hand the writer, record slice indices within them).

    Records are the slices from the first to the last one with a non-zero voxel of `label` (the
    labels, or an unlabelled scan's body mask), widened by RECORD_SLICE_MARGIN; the crop keeps one more slice either side as their outer neighbours.
    The writer computes stats.json over the whole volume handed in, so cropping makes it the
    range of exactly the data in the records.
    """
    labelled = np.flatnonzero(label.any(axis=(0, 1)))
    if not labelled.size:
        raise ValueError(f"no slice holds a {what} voxel")
    first = max(int(labelled[0]) - RECORD_SLICE_MARGIN, 0)
    last = min(int(labelled[-1]) + RECORD_SLICE_MARGIN, label.shape[2] - 1)
    start, stop = max(first - 1, 0), min(last + 2, label.shape[2])
    return slice(start, stop), list(range(first - start, last - start + 1))


def otsu_threshold(values, bins=256):
    """The threshold between two intensity classes that maximises their between-class variance."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(counts)
    below_sum = np.cumsum(counts * centres)
    above = below[-1] - below
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_below = below_sum / below
        mean_above = (below_sum[-1] - below_sum) / above
        between = below * above * (mean_below - mean_above) ** 2
    return float(centres[int(np.nanargmax(np.where(above > 0, between, np.nan)))])


def body_mask(image):
    """A label-free mask of the body in a 3D image: the voxels above an Otsu threshold (computed
    without the voxels at the volume's minimum, a scanner's padding or the crop's fill), their
    largest connected part, with holes filled slice by slice. Empty for a constant image."""
    image = np.asarray(image)
    low = image.min()
    sample = image.ravel()[::OTSU_SAMPLE_STEP]
    sample = sample[sample > low]
    if sample.size == 0 or sample.min() == sample.max():
        return np.zeros(image.shape, dtype=bool)
    mask = image > otsu_threshold(sample)
    parts, count = ndimage.label(mask)
    if count > 1:
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        mask = parts == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask, structure=np.ones((3, 3, 1), dtype=bool))


def crop_centre(mode, image, structure_mask=None):
    """Voxel coordinates (one per axis) the crop is centred on, by `mode` ("labels": the centroid
    of `structure_mask`; "body": of `body_mask(image)`; "centre": the array's centre); a
    ValueError when the mask is empty."""
    if mode == "centre":
        return tuple((n - 1) / 2.0 for n in image.shape)
    mask = structure_mask if mode == "labels" else body_mask(image)
    if not mask.any():
        raise ValueError("no body found to centre the crop on (--crop centre crops the middle of the slices)"
                         if mode == "body" else "the structure to centre the crop on is absent")
    return centroid(mask)
