"""A run's preprocessing recipe applied to a new scan: read it, orient it, resample it in-plane,
crop it and normalise it as the run's data were prepared (data_prep/conversion.py), and the
geometry that maps the prepared array back onto the scan's own grid.

A prepared data set's dataset.json records its recipe under "preprocessing" (kept in the run's
data fingerprint); data that recorded none (the phantom, SIFA's released records, an imported
checkpoint) get DEFAULT_RECIPE, the named converters' own. A new scan has no labels, so every crop
but "centre" is centred on its body (sifa_synthmix.data.preprocessing.framing), as data_prep.folder crops
every scan by default: a test scan is then framed here exactly as it was for evaluation.
"""
import dataclasses
from typing import Optional

import numpy as np

from sifa_synthmix.data import preprocessing, scans, volumes
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.data.scans import RawDataError

# The named converters' recipe: axial slices, native in-plane spacing, a crop around the labelled
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
    normalisation: str = "zscore"  # one of sifa_synthmix.data.preprocessing.NORMALISATIONS


def recipe_for(recorded, image_size, slice_axis="recorded", spacing="recorded"):
    """The Recipe of a run: its recorded one (None: DEFAULT_RECIPE) at the model's image size,
    with --predict_slice_axis and --predict_spacing ("recorded", "native" or mm) applied."""
    values = {**DEFAULT_RECIPE, **(recorded or {})}
    if values["normalisation"] not in preprocessing.NORMALISATIONS:
        raise DataError(f"the run's preprocessing recipe normalises with {values['normalisation']!r}; "
                        f"prediction knows {preprocessing.NORMALISATIONS}")
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
                  float(values["clip_percent"]), values["normalisation"])


def read_scan(path):
    """(float array x, y, z, voxel -> RAS+ affine) of a scan file or DICOM series folder
    (`sifa_synthmix.data.scans.read_scan`), checked finite; float64 scans keep their bits, others become
    float32 as the converters read them. RawDataError names the scan."""
    array, affine = scans.read_scan(path)
    array = np.asarray(array)
    array = array if array.dtype == np.float64 else array.astype(np.float32)
    bad = array.size - int(np.count_nonzero(np.isfinite(array)))
    if bad:
        raise RawDataError(f"{path}: {bad} NaN or infinite voxel(s)")
    return array, np.asarray(affine, dtype=float)


def scan_framing(image, recipe, source):
    """The framing of an oriented, resampled scan (`preprocessing.framing`): centred on its body
    (the array's centre for "centre", and for a scan with no body under SIFA's z-score); a
    RawDataError names the scan."""
    mode = "centre" if recipe.crop == "centre" else "body"
    try:
        try:
            return preprocessing.framing(image, recipe.image_size, mode, recipe.normalisation, recipe.clip_percent)
        except ValueError:
            if mode == "centre" or recipe.normalisation != "zscore":
                raise
            return preprocessing.framing(image, recipe.image_size, "centre", recipe.normalisation, recipe.clip_percent)
    except ValueError as error:
        raise RawDataError(f"{source}: {error}") from None


def prepare_scan(image, affine, recipe, source):
    """(prepared float32 image image_size x image_size x slices, its voxel -> world affine)."""
    volume = volumes.Volume(image, np.zeros(image.shape, np.uint8), affine, str(source), str(source))
    volume = volumes.oriented(volume, tuple(recipe.orientation))
    if recipe.spacing_mm:
        volume = volumes.resampled_in_plane(volume, recipe.spacing_mm)
    framing = scan_framing(volume.image, recipe, source)
    try:
        prepared = framing.image(volume.image)
    except ValueError as error:
        raise RawDataError(f"{source}: {error}") from None
    return prepared, volumes.cropped_affine(volume.affine, framing.start)
