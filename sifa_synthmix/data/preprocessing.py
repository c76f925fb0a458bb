"""Per-volume preprocessing: the framing (where the crop lies), which slices become training
records, and the intensity normalisation.

One framing serves every scan, labelled or not, at conversion and at prediction (`framing`):
"body" centres the crop on the centroid of a label-free body mask (`body_mask`) and keeps the
window inside the scan where the scan is wider (`window_start`), so a labelled and an unlabelled
copy of a scan, and a test scan at evaluation and at prediction, are cut alike. The named
converters keep SIFA's heart crops: "labels" centres on the labelled structure, "auto" does so
for labelled scans and falls back to the body for unlabelled ones; "centre" is the array's centre.

Normalisations: "foreground" (data_prep.folder's default) clips to the 0.5 and 99.5 percentiles
of the body's voxels and z-scores with the body's mean and spread, as nnU-Net's CT normalisation
does with foreground statistics, so a scanner's padding and the air around the body do not
weigh in; "zscore" (SIFA's) clips the top 2% of the whole crop's histogram, then z-scores it.
"""
import dataclasses
from typing import Optional

import numpy as np
from scipy import ndimage

from sifa_synthmix.data.volumes import centroid, crop_window, cropped_in_plane

CLIP_PERCENT = 2.0
CROP_CHOICES = ("body", "auto", "labels", "centre")
NORMALISATIONS = ("foreground", "zscore")
# nnU-Net's CTNormalization clips to these percentiles of the foreground voxels.
FOREGROUND_PERCENTILES = (0.5, 99.5)
OTSU_SAMPLE_STEP = 7  # the threshold is computed on every 7th voxel: the same value, 7 times faster
# In-plane Gaussian smoothing (sigma, pixels) before the body threshold, against an MR's noise.
BODY_SMOOTHING_PX = 1.5
# Parts of the thresholded body smaller than this share of the largest are noise (body_mask).
MIN_PART_SHARE = 0.05
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


def _between_first_and_last(line):
    """Per column of `line` (edge pixels x slices): True from its first True pixel to its last."""
    index = np.arange(line.shape[0])[:, None]
    first = np.argmax(line, axis=0)
    last = line.shape[0] - 1 - np.argmax(line[::-1], axis=0)
    return line.any(axis=0) & (index >= first) & (index <= last)


def filled_slices(mask):
    """`mask` with the holes of each slice filled, an array edge counted as body between the first
    and the last body pixel along it: a field of view that cuts the chest (a cardiac MR's, a CT's
    reconstruction circle) leaves the lungs open to the edge, and they are still inside the body."""
    padded = np.pad(mask, ((1, 1), (1, 1), (0, 0)))
    for edge, pad in (((0, slice(None)), (0, slice(1, -1))), ((-1, slice(None)), (-1, slice(1, -1))),
                      ((slice(None), 0), (slice(1, -1), 0)), ((slice(None), -1), (slice(1, -1), -1))):
        padded[pad] = _between_first_and_last(mask[edge])
    filled = ndimage.binary_fill_holes(padded, structure=np.ones((3, 3, 1), dtype=bool))
    return filled[1:-1, 1:-1] | mask


def body_mask(image):
    """A label-free mask of the body in a 3D image: the voxels where the logarithm of the height
    above the air (the lowest value but the volume's minimum: a scanner's padding or the crop's
    fill is left out), smoothed in-plane, lies above its Otsu threshold; their largest connected
    part, with holes filled slice by slice (`filled_slices`). On the logarithm the threshold
    falls between the air (an MR's noise) and the darkest tissue; on the intensity itself it
    falls between an MR body's bright blood and fat and its dark muscle. Empty for a constant
    image. Before the holes are filled, parts smaller than MIN_PART_SHARE of the largest (noise)
    are dropped and the rest kept: a cardiac MR's bright fat ring, cut by its field of view, only
    encloses the dark chest once the array edge closes it, and the heart's blood pool alone may be
    larger than the ring."""
    image = np.asarray(image)
    low = image.min()
    scanned = image > low
    sample = image.ravel()[::OTSU_SAMPLE_STEP]
    sample = sample[sample > low]
    if sample.size == 0 or sample.min() == sample.max():
        return np.zeros(image.shape, dtype=bool)
    air = float(sample.min())
    height = ndimage.gaussian_filter(np.log1p(np.maximum(image, air).astype(np.float32) - air),
                                     (BODY_SMOOTHING_PX, BODY_SMOOTHING_PX, 0))
    mask = scanned & (height > otsu_threshold(height.ravel()[::OTSU_SAMPLE_STEP][scanned.ravel()[::OTSU_SAMPLE_STEP]]))
    return largest_part(filled_slices(largest_part(mask, MIN_PART_SHARE)))


def largest_part(mask, share=1.0):
    """The connected parts of `mask` at least `share` times the size of its largest (1: that one)."""
    parts, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    return np.isin(parts, np.flatnonzero(sizes >= share * sizes.max()))


def crop_centre(mode, image, structure_mask=None, body=None):
    """Voxel coordinates (one per axis) the crop is centred on, by `mode` ("labels": the centroid
    of `structure_mask`; "body": of `body` or `body_mask(image)`; "centre": the array's centre); a
    ValueError when the mask is empty."""
    if mode == "centre":
        return tuple((n - 1) / 2.0 for n in image.shape)
    if mode == "labels":
        mask = structure_mask
    else:
        mask = body_mask(image) if body is None else body
    if not mask.any():
        raise ValueError("no body found to centre the crop on (--crop centre crops the middle of the slices)"
                         if mode == "body" else "the structure to centre the crop on is absent")
    return centroid(mask)


def window_start(shape, centre, size):
    """Start (row, column) of the size x size window around `centre` (row, column), kept inside
    the slice where the slice is wider than the window (more scan, less padding) and centred on
    the slice where it is narrower."""
    wanted = crop_window(centre, size)
    return tuple(min(max(s, 0), n - size) if n >= size else (n - size) // 2 for s, n in zip(wanted, shape))


@dataclasses.dataclass(frozen=True)
class ForegroundScale:
    """nnU-Net-style intensity scaling from a volume's body voxels: clip to [low, high], then
    subtract `mean` and divide by `std` (both of the clipped body voxels)."""
    low: float
    high: float
    mean: float
    std: float

    def apply(self, image):
        return ((np.clip(image, self.low, self.high) - self.mean) / self.std).astype(np.float32)


def foreground_scale(image, body):
    """The `ForegroundScale` of the voxels of `image` inside `body`; a ValueError when the body is
    empty or its clipped intensities are constant."""
    values = np.asarray(image)[body]
    if not values.size:
        raise ValueError("no body found to take intensity statistics from")
    if not np.all(np.isfinite(values)):
        raise ValueError("volume holds NaN or infinite voxels")
    low, high = (float(v) for v in np.percentile(values, FOREGROUND_PERCENTILES))
    clipped = np.clip(values.astype(np.float64), low, high)
    std = float(clipped.std())
    if std == 0:
        raise ValueError("the body's intensities are constant after clipping; they cannot be z-scored")
    return ForegroundScale(low, high, float(clipped.mean()), std)


@dataclasses.dataclass(frozen=True)
class Framing:
    """One volume's crop window and intensity scaling, applied alike to the volume, its labels
    and its augmented copies (which are transformed about `centre` on the volume's grid)."""
    centre: tuple  # voxel coordinates, one per axis
    start: tuple  # (row, column) of the window's first voxel; it may lie outside the array
    size: int
    clip_percent: float
    scale: Optional[ForegroundScale]  # None: SIFA's z-score of each crop
    body: Optional[np.ndarray]  # the volume's body mask, where the framing needed it

    def crop(self, array, fill):
        return cropped_in_plane(array, self.start, self.size, fill)

    def image(self, image):
        """The cropped, normalised float32 image (padding outside the scan with its minimum)."""
        cropped = self.crop(image, image.min())
        return clip_and_standardise(cropped, self.clip_percent) if self.scale is None else self.scale.apply(cropped)


def framing(image, size, crop, normalisation, clip_percent=CLIP_PERCENT, structure_mask=None):
    """The `Framing` of an oriented, resampled volume: its crop centred by `crop` ("body",
    "labels" with `structure_mask`, or "centre"; see `crop_centre`) and kept inside the scan
    (`window_start`), and its intensities scaled by `normalisation` (NORMALISATIONS). A
    ValueError when the body or structure is missing."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"unknown normalisation {normalisation!r}; expected one of {NORMALISATIONS}")
    body = body_mask(image) if crop == "body" or normalisation == "foreground" else None
    centre = crop_centre(crop, image, structure_mask, body)
    scale = foreground_scale(image, body) if normalisation == "foreground" else None
    return Framing(centre, window_start(image.shape[:2], centre[:2], size), size, clip_percent, scale, body)
