"""Raw image/label volumes for the converters: loading and checking, orientation, in-plane
resampling and cropping, and label mapping.

A `Volume` holds an image and a label array of one 3D shape, the voxel -> world (RAS+, mm)
affine they share, and the file the volume came from, which every error message names.
"""
import dataclasses

import nibabel as nib
import numpy as np
from scipy import ndimage

from sifa_synthmix.data import scans
from sifa_synthmix.data.scans import RawDataError

AFFINE_TOLERANCE_MM = 1e-3
# Voxel axis directions (nibabel axis codes: the way each index increases), with slices on axis 2
# and the slices in radiological view: top of the image anterior or superior, patient's right on
# the image's left.
AXIAL = ("P", "L", "S")  # rows anterior -> posterior, columns right -> left, slices feet -> head
CORONAL = ("I", "L", "P")  # rows head -> feet, columns right -> left, slices front -> back
SAGITTAL = ("I", "P", "L")  # rows head -> feet, columns front -> back, slices right -> left
SLICE_AXES = {"axial": AXIAL, "coronal": CORONAL, "sagittal": SAGITTAL}


@dataclasses.dataclass(frozen=True)
class Volume:
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    source: str
    label_source: str

    @property
    def spacing(self):
        """Voxel size along each array axis, mm (to 1e-6 mm: headers hold float32)."""
        return tuple(round(float(s), 6) for s in np.linalg.norm(self.affine[:3, :3], axis=0))


def checked_volume(image, label, affine, source, label_source):
    """A `Volume`, after checking that image and label are 3D, of one shape and finite;
    `source` and `label_source` name the files in messages."""
    if image.ndim != 3:
        raise RawDataError(f"{source}: expected a 3D volume, got shape {image.shape}")
    if image.shape != label.shape:
        raise RawDataError(f"{source}: image shape {image.shape} and label shape {label.shape} differ")
    for name, array, path in (("image", image, source), ("label", label, label_source)):
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise RawDataError(f"{path}: the {name} holds {bad} NaN or infinite voxel(s)")
    return Volume(image.astype(np.float32), label, np.asarray(affine, dtype=float), str(source),
                  str(label_source))


def load_pair(image_path, label_path=None):
    """The volume of an image scan and its label scan (`scans.read_scan`), which must share shape
    and affine and hold whole numbers; without `label_path`, an all-zero label (an unlabelled scan)."""
    image, image_affine = scans.read_scan(image_path)
    if label_path is None:
        return checked_volume(image, np.zeros(image.shape, dtype=np.uint8), image_affine, image_path, image_path)
    label, label_affine = scans.read_scan(label_path)
    if image.shape != label.shape:
        raise RawDataError(f"{label_path}: label shape {label.shape} differs from the image's "
                           f"{image.shape} ({image_path})")
    if not np.allclose(image_affine, label_affine, rtol=0, atol=AFFINE_TOLERANCE_MM):
        raise RawDataError(f"{label_path}: label affine {label_affine.round(4).tolist()} differs from "
                           f"the image's {image_affine.round(4).tolist()} ({image_path})")
    check_whole_numbers(label, label_path)
    return checked_volume(image, label, image_affine, image_path, label_path)


def check_whole_numbers(label, label_path):
    """A RawDataError naming `label_path` when the label array holds non-integer values."""
    if not np.issubdtype(label.dtype, np.integer):
        fractional = label.size - int(np.count_nonzero(np.mod(label, 1) == 0))
        if fractional:
            raise RawDataError(f"{label_path}: not a label file: {fractional} voxel(s) hold non-integer values "
                               f"(e.g. {float(label[np.mod(label, 1) != 0].flat[0])})")


def oriented(volume, axcodes):
    """The volume with its axes permuted and flipped to point toward `axcodes` (nearest match)."""
    current = nib.orientations.io_orientation(volume.affine)
    transform = nib.orientations.ornt_transform(current, nib.orientations.axcodes2ornt(axcodes))
    affine = volume.affine @ nib.orientations.inv_ornt_aff(transform, volume.image.shape)
    return dataclasses.replace(volume, image=nib.orientations.apply_orientation(volume.image, transform),
                               label=nib.orientations.apply_orientation(volume.label, transform),
                               affine=affine)


def resampled_in_plane(volume, spacing_mm):
    """The volume resampled on axes 0 and 1 to exactly `spacing_mm` (linear image, nearest
    labels): the new grid starts on the first voxel, steps `spacing_mm` and has ndimage.zoom's
    size, so the recorded spacing is the one asked for (zoom's grid, corner to corner, is not)."""
    steps = [spacing_mm / volume.spacing[axis] for axis in (0, 1)]  # input voxels per output voxel
    shape = tuple(max(1, int(round(n / step))) for n, step in zip(volume.image.shape[:2], steps))
    shape += volume.image.shape[2:]
    image, label = (ndimage.affine_transform(array, np.array([*steps, 1.0]), output_shape=shape, order=order,
                                             mode="nearest") for array, order in ((volume.image, 1), (volume.label, 0)))
    return dataclasses.replace(volume, image=image, label=label,
                               affine=volume.affine @ np.diag([*steps, 1.0, 1.0]))


def obliquity_degrees(affine):
    """The largest angle between a voxel axis of `affine` and the world axis nearest to it: 0 for
    a stack cut along the patient's axes; a reslice along the nearest axis ignores it."""
    directions = np.asarray(affine, dtype=float)[:3, :3]
    directions = directions / np.linalg.norm(directions, axis=0)
    return float(np.degrees(np.arccos(np.clip(np.abs(directions).max(axis=0), 0.0, 1.0))).max())


def cropped_affine(affine, start):
    """The affine of the in-plane window from `start` (row, column) of an array with `affine`."""
    shift = np.eye(4)
    shift[:2, 3] = start
    return np.asarray(affine, dtype=float) @ shift


def source_geometry(volume):
    """Where a volume came from: its file, and its array shape and affine as read."""
    return {"source_file": volume.source, "source_shape": list(volume.image.shape),
            "source_affine": np.asarray(volume.affine, dtype=float).tolist()}


def geometry_record(affine, source=None):
    """A test volume's geometry for dataset.json: the voxel -> world (RAS+, mm) affine of the
    prepared array and its axis codes, plus `source` (`source_geometry`) when there is one."""
    affine = np.asarray(affine, dtype=float)
    return {"affine": affine.tolist(), "orientation": "".join(nib.aff2axcodes(affine)), **(source or {})}


def centroid(mask):
    """Voxel coordinates of the centre of mass of a 3D boolean mask (one per axis)."""
    total = np.count_nonzero(mask)
    sums = [mask.sum(axis=tuple(a for a in range(3) if a != axis)) for axis in range(3)]
    return tuple(float(s @ np.arange(s.size)) / total for s in sums)


def crop_window(centre, size):
    """Start (row, column) of the size x size window centred on `centre` (it may leave the array)."""
    return tuple(int(np.floor(c - size / 2.0 + 0.5)) for c in centre)


def cropped_in_plane(array, start, size, fill):
    """The size x size window of axes 0 and 1 from `start`, padded with `fill` outside the array."""
    out = np.full((size, size) + array.shape[2:], fill, dtype=array.dtype)
    source = tuple(slice(max(s, 0), min(s + size, n)) for s, n in zip(start, array.shape[:2]))
    target = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(source, start))
    if all(sl.stop > sl.start for sl in source):
        out[target] = array[source]
    return out


@dataclasses.dataclass(frozen=True)
class LabelMapping:
    """Raw label value -> class for every known value (0 = background); `centre_values` are the
    raw values of the structure the crop is centred on."""
    classes: dict
    centre_values: tuple

    def centre_mask(self, raw):
        return np.isin(raw, self.centre_values)

    def unknown_values(self, raw):
        """{value: voxel count} of the raw values the mapping does not know."""
        values, counts = np.unique(raw, return_counts=True)
        return {_plain(v): int(c) for v, c in zip(values, counts) if _plain(v) not in self.classes}

    def apply(self, raw, source, ignore_unknown=False):
        """(uint8 class labels, {unknown value: count}); unknown values become background, or
        raise unless `ignore_unknown`."""
        unknown = self.unknown_values(raw)
        if unknown and not ignore_unknown:
            listed = ", ".join(f"{v} ({c} voxels)" for v, c in sorted(unknown.items()))
            raise RawDataError(f"{source}: unknown label values {listed}; known values are "
                               f"{sorted(self.classes)} (--ignore_unknown_labels maps the others "
                               "to background)")
        labels = np.zeros(raw.shape, dtype=np.uint8)
        for value, index in self.classes.items():
            if index:
                labels[raw == value] = index
        return labels, unknown


def _plain(value):
    """A numpy label value as a Python int when it is integral, else as a float."""
    value = float(value)
    return int(value) if value.is_integer() else value
