"""Predicted label volumes as NIfTI (int16), readable by 3D Slicer and ITK-SNAP."""
import gzip

import nibabel as nib
import numpy as np

from sifa_synthmix.data.layout import atomic_write_bytes

SUFFIX = ".nii.gz"


def write_label_volume(path, labels, spacing=None):
    """Writes an H x W x D label volume atomically; the affine scales by `spacing` (mm) when known,
    else it is the identity (voxel units)."""
    affine = np.diag([*(float(s) for s in spacing), 1.0]) if spacing is not None else np.eye(4)
    image = nib.Nifti1Image(np.asarray(labels, np.int16), affine)
    image.header.set_xyzt_units("mm" if spacing is not None else "unknown")
    atomic_write_bytes(path, gzip.compress(image.to_bytes(), mtime=0))


def read_label_volume(path):
    """The integer label volume stored at `path`."""
    return np.asarray(nib.load(str(path)).dataobj).astype(np.int64)
