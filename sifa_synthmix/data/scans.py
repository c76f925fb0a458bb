"""Reading one scan of any format the converters and prediction accept, as a voxel array and its
voxel -> world (RAS+, mm) affine: NIfTI through nibabel, other files SimpleITK reads (.nrrd,
.nhdr, .mha, .mhd, ...) through SimpleITK, and a folder holding one DICOM series through
SimpleITK's series reader. Array axes are the affine's voxel axes (x, y, z index order).
"""
import errno
import os
import pathlib

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from sifa_synthmix.errors import ToolkitError

NIFTI_ENDINGS = (".nii", ".nii.gz")
SITK_ENDINGS = (".nrrd", ".nhdr", ".mha", ".mhd")
SCAN_ENDINGS = NIFTI_ENDINGS + SITK_ENDINGS


class RawDataError(ToolkitError, ValueError):
    """Bad raw input (a scan, a label file, a raw data set); the message names the file and the problem."""


def scan_ending(path):
    """The scan-file ending of `path` (".nii.gz", ".mha", ...), or None."""
    name = pathlib.Path(path).name.lower()
    return next((e for e in sorted(SCAN_ENDINGS, key=len, reverse=True) if name.endswith(e)), None)


def scan_name(path):
    """A scan's name without its ending (a DICOM folder's name is the folder's)."""
    path = pathlib.Path(path)
    ending = scan_ending(path)
    return path.name[:-len(ending)] if ending and not path.is_dir() else path.name


def is_dicom_folder(path):
    """Whether `path` is a folder that holds a DICOM series (SimpleITK finds one in it; ITK's
    warning for a folder without one is not shown: the answer says it)."""
    path = pathlib.Path(path)
    if not path.is_dir():
        return False
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def sitk_affine(image):
    """Voxel (x, y, z index) -> RAS+ mm affine of a SimpleITK image (which is LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def _three_d(array, path):
    while array.ndim > 3 and array.shape[-1] == 1:  # trailing axes of length 1 are dropped
        array = array[..., 0]
    if array.ndim != 3:
        raise RawDataError(f"{path}: expected a 3D volume, got shape {array.shape}")
    return array


def dicom_series_files(folder):
    """The files of the one DICOM series in `folder`, in slice order."""
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if len(series) != 1:
        raise RawDataError(f"{folder}: expected one DICOM series, found {len(series)}")
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0]))
    others = sorted({p.name for p in pathlib.Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")}
                    - {pathlib.Path(f).name for f in files})
    if others:  # a damaged slice drops out of the series: a thinner volume must not pass silently
        raise RawDataError(f"{folder}: {len(others)} file(s) are not readable slices of its DICOM series "
                           f"(e.g. {others[0]}; damaged, or another series)")
    return files


def _read_sitk(path, files):
    try:
        if len(files) == 1:
            image = sitk.ReadImage(files[0])
        else:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
            image = reader.Execute()
    except RuntimeError as error:
        kind = "DICOM series" if pathlib.Path(path).is_dir() else "file"
        message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise RawDataError(f"{path}: cannot read the {kind} ({message})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise RawDataError(f"{path}: expected one value per voxel, got {image.GetNumberOfComponentsPerPixel()} "
                           "(a colour or multi-channel image)")
    if image.GetDimension() != 3:
        raise RawDataError(f"{path}: expected a 3D volume, got a {image.GetDimension()}D image of size {image.GetSize()}")
    return _three_d(sitk.GetArrayFromImage(image).transpose(2, 1, 0), path), sitk_affine(image)


def _read_nifti(path):
    try:
        nifti = nib.load(str(path))
        array = np.asanyarray(nifti.dataobj)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise RawDataError(f"{path}: cannot read the NIfTI file ({error})") from None
    return _three_d(array, path), np.asarray(nifti.affine, dtype=float)


def _checked_geometry(shape, affine, path):
    """(shape, affine) of a scan, once both can place its voxels: a finite affine whose voxel axes
    have a length (a zero spacing in a header maps a whole axis onto one point) and point in
    three directions, and two voxels or more along every axis (a single row or slice has no
    neighbours to frame, resample or stack)."""
    affine = np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if not np.all(np.isfinite(affine)) or not np.all(spacing > 0) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise RawDataError(f"{path}: its header places the voxels on no 3D grid (voxel spacing "
                           f"{[round(float(s), 6) for s in spacing]} mm, affine {affine.round(4).tolist()}); a zero "
                           "or missing spacing or direction: fix the header")
    if min(shape) < 2:
        hint = ("; a DICOM file is one slice of its series: pass the folder that holds the series"
                if pathlib.Path(path).is_file() and scan_ending(path) is None else "")
        raise RawDataError(f"{path}: shape {tuple(shape)} has a single row, column or slice; a scan needs two voxels "
                           f"or more along every axis{hint}")
    return tuple(shape), affine


def _missing(path):
    """The RawDataError of a path that is neither a file nor a folder."""
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return RawDataError(f"{path}: a symbolic link loop, not a scan")
    return RawDataError(f"{path}: no such file or DICOM folder")


def read_scan(path):
    """(array, affine) of a scan file or DICOM series folder (`_checked_geometry`); a
    RawDataError names the path."""
    path = pathlib.Path(path)
    if path.is_dir():
        array, affine = _read_sitk(path, dicom_series_files(path))
    elif not path.is_file():
        raise _missing(path)
    elif scan_ending(path) in NIFTI_ENDINGS:
        array, affine = _read_nifti(path)
    else:
        array, affine = _read_sitk(path, [str(path)])
    return array, _checked_geometry(array.shape, affine, path)[1]


def read_geometry(path):
    """(array shape, affine) of a scan, from the header alone for files (a DICOM series is read)."""
    path = pathlib.Path(path)
    if path.is_dir() or not path.is_file():
        array, affine = read_scan(path)
        return array.shape, affine
    if scan_ending(path) in NIFTI_ENDINGS:
        try:
            nifti = nib.load(str(path))
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
            raise RawDataError(f"{path}: cannot read the NIfTI file ({error})") from None
        return _checked_geometry(tuple(int(n) for n in nifti.shape[:3]), nifti.affine, path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise RawDataError(f"{path}: cannot read the image header") from None
    if reader.GetDimension() != 3:
        raise RawDataError(f"{path}: expected a 3D volume, got a {reader.GetDimension()}D image")
    return _checked_geometry(tuple(reader.GetSize()), sitk_affine(reader), path)
