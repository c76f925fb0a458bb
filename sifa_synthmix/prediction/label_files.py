"""Volumes as NIfTI for 3D Slicer and ITK-SNAP (labels int16, images float32), and the label
colour tables both read, in the colours of the TensorBoard and figure overlays."""
import gzip

import nibabel as nib
import numpy as np

from sifa_synthmix.files import atomic_write_bytes, atomic_write_text
from sifa_synthmix.visualize import class_colours

SUFFIX = ".nii.gz"
ITK_SNAP_TABLE = "label_colours_itksnap.txt"
SLICER_TABLE = "label_colours_slicer.ctbl"


def volume_affine(affine=None, spacing=None):
    """Voxel -> world (RAS+, mm) affine of a written volume: the prepared volume's own (kept by
    the converters, so the file overlays the raw scan), else a scaling by its spacing, else the
    identity (voxel units)."""
    if affine is not None:
        return np.asarray(affine, dtype=float)
    return np.diag([*(float(s) for s in spacing), 1.0]) if spacing is not None else np.eye(4)


def _nifti_bytes(array, affine, spacing):
    image = nib.Nifti1Image(array, volume_affine(affine, spacing))
    image.header.set_xyzt_units("mm" if affine is not None or spacing is not None else "unknown")
    # Level 6, not 9: as small within 30% for label maps, and a noisy one (an untrained or misapplied
    # model) takes seconds instead of most of a minute at 256 x 256 x 128.
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


def label_volume_bytes(labels, affine=None, spacing=None):
    """The .nii.gz file of an H x W x D label volume (int16), with `volume_affine(affine, spacing)`."""
    return _nifti_bytes(np.asarray(labels, np.int16), affine, spacing)


def write_label_volume(path, labels, affine=None, spacing=None):
    """Writes `label_volume_bytes` atomically."""
    atomic_write_bytes(path, label_volume_bytes(labels, affine, spacing))


def write_image_volume(path, image, affine=None, spacing=None):
    """Writes an H x W x D image volume (float32) atomically, as `write_label_volume`."""
    atomic_write_bytes(path, _nifti_bytes(np.asarray(image, np.float32), affine, spacing))


def read_label_volume(path):
    """The integer label volume stored at `path`."""
    return np.asarray(nib.load(str(path)).dataobj).astype(np.int64)


def write_colour_tables(folder, class_names):
    """FOLDER/label_colours_itksnap.txt (ITK-SNAP: Segmentation > Import Label Descriptions) and
    FOLDER/label_colours_slicer.ctbl (3D Slicer colour table); background is clear."""
    colours = (255 * class_colours(len(class_names))).round().astype(int)
    itk_snap = ["# ITK-SnAP Label Description File",
                "# IDX  -R-  -G-  -B-  -A-  VIS MSH  LABEL"]
    slicer = ["# Color table file " + SLICER_TABLE, f"# {len(class_names)} values"]
    for index, (name, (red, green, blue)) in enumerate(zip(class_names, colours)):
        visible = int(index > 0)
        itk_snap.append(f"{index:5d} {red:4d} {green:4d} {blue:4d} {visible:4d} {visible:3d} {visible:3d}"
                        f"    \"{name}\"")
        slicer.append(f"{index} {name.replace(' ', '_')} {red} {green} {blue} {255 * visible}")
    atomic_write_text(folder / ITK_SNAP_TABLE, "\n".join(itk_snap) + "\n")
    atomic_write_text(folder / SLICER_TABLE, "\n".join(slicer) + "\n")
