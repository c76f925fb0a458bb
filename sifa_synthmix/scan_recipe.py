"""A run's preprocessing recipe applied to a new scan: read it, orient it, resample it in-plane,
crop it and normalise it as the run's data were prepared (data_prep/conversion.py), and the
geometry that maps the prepared array back onto the scan's own grid.

A prepared data set's dataset.json records its recipe under "preprocessing" (kept in the run's
data fingerprint); data that recorded none (the phantom, SIFA's released records, an imported
checkpoint) get DEFAULT_RECIPE, the converters' own. A new scan has no labels, so every crop but
"centre" is centred on its body (data_prep.preprocessing.body_mask), as the converters crop
unlabelled scans.
"""
import dataclasses
from typing import Optional

import numpy as np

from data_prep import preprocessing, scans, volumes
from data_prep.errors import RawDataError
from sifa_synthmix.data.reader import DataError

# The converters' recipe: axial slices, native in-plane spacing, a crop around the labelled
# structure (the body for a scan without labels), the top 2% clipped and a z-score per volume.
DEFAULT_RECIPE = {"orientation": "".join(volumes.AXIAL), "slice_axis": "axial", "spacing_mm": None, "crop": "auto",
                  "clip_percent": preprocessing.CLIP_PERCENT, "normalisation": "zscore"}


@dataclasses.dataclass(frozen=True)
class Recipe:
    orientation: str  # nibabel axis codes of the prepared array
    spacing_mm: Optional[float]  # in-plane spacing to resample to; None: native
    image_size: int
    crop: str
    clip_percent: float


def recipe_for(recorded, image_size, slice_axis="recorded", spacing="recorded"):
    """The Recipe of a run: its recorded one (None: DEFAULT_RECIPE) at the model's image size,
    with --predict_slice_axis and --predict_spacing ("recorded", "native" or mm) applied."""
    values = {**DEFAULT_RECIPE, **(recorded or {})}
    if values["normalisation"] != "zscore":
        raise DataError(f"the run's preprocessing recipe normalises with {values['normalisation']!r}; "
                        "prediction knows only 'zscore'")
    if values["crop"] not in preprocessing.CROP_CHOICES:
        raise DataError(f"the run's preprocessing recipe crops with {values['crop']!r}; expected one of "
                        f"{preprocessing.CROP_CHOICES}")
    orientation = values["orientation"]
    if slice_axis != "recorded":
        orientation = "".join(volumes.SLICE_AXES[slice_axis])
    spacing_mm = values["spacing_mm"]
    if spacing != "recorded":
        spacing_mm = None if spacing == "native" else float(spacing)
    return Recipe(orientation, None if spacing_mm is None else float(spacing_mm), int(image_size), values["crop"],
                  float(values["clip_percent"]))


def read_scan(path):
    """(float array x, y, z, voxel -> RAS+ affine) of a scan file or DICOM series folder
    (`data_prep.scans.read_scan`), checked finite; float64 scans keep their bits, others become
    float32 as the converters read them. RawDataError names the scan."""
    array, affine = scans.read_scan(path)
    array = np.asarray(array)
    array = array if array.dtype == np.float64 else array.astype(np.float32)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise RawDataError(f"{path}: {bad} NaN or infinite voxel(s)")
    return array, np.asarray(affine, dtype=float)


def crop_centre(image, crop):
    """In-plane (row, column) a new scan's crop is centred on: the array centre for "centre",
    else the centroid of the scan's body (the array centre when no body is found)."""
    try:
        return preprocessing.crop_centre("centre" if crop == "centre" else "body", image)[:2]
    except ValueError:  # no body in the scan: it fails its z-score later if it is constant
        return preprocessing.crop_centre("centre", image)[:2]


def crop_start(image, recipe):
    """Start (row, column) of the image_size window around `crop_centre`, kept inside the scan
    where the scan is wider than the window (more scan, less padding) and centred on it where
    it is narrower."""
    size = recipe.image_size
    wanted = volumes.crop_window(crop_centre(image, recipe.crop), size)
    return tuple(min(max(s, 0), n - size) if n >= size else (n - size) // 2 for s, n in zip(wanted, image.shape[:2]))


def prepare_scan(image, affine, recipe, source):
    """(prepared float32 image image_size x image_size x slices, its voxel -> world affine)."""
    volume = volumes.Volume(image, np.zeros(image.shape, np.uint8), affine, str(source), str(source))
    volume = volumes.oriented(volume, tuple(recipe.orientation))
    if recipe.spacing_mm:
        volume = volumes.resampled_in_plane(volume, recipe.spacing_mm)
    start = crop_start(volume.image, recipe)
    cropped = volumes.cropped_in_plane(volume.image, start, recipe.image_size, volume.image.min())
    try:
        prepared = preprocessing.clip_and_standardise(cropped, recipe.clip_percent)
    except ValueError as error:
        raise RawDataError(f"{source}: {error}") from None
    return prepared, volumes.cropped_affine(volume.affine, start)
