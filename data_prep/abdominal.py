"""The abdominal organ benchmark (AOS) in the prepared-data layout: BTCV CT and CHAOS T2-SPIR MR.

BTCV (Multi-Atlas Labeling Beyond the Cranial Vault): B/img/img0001.nii.gz with
B/label/label0001.nii.gz; labels 6 liver -> 1, 2 right kidney -> 2, 3 left kidney -> 3,
1 spleen -> 4, its other organs (4, 5, 7-13) -> 0. CHAOS: C/Train_Sets/MR/<id>/T2SPIR/DICOM_anon/
(one DICOM series, read with SimpleITK) with one ground-truth PNG per DICOM file, of the same
name, in .../T2SPIR/Ground/; values 63 liver, 126 right kidney, 189 left kidney, 252 spleen.
Volumes are cut into axial slices and cropped around the centroid of the four organs. Test
volumes default to those of the literature; of the others the highest-numbered 2 per modality
go to validation and the rest to training.

    python -m data_prep.abdominal --btcv_dir B --chaos_dir C --output_dir data/aos
        [--image_size 256] [--spacing MM] [--augment N] [--workers N] [--ignore_unknown_labels]
        [--ct_test_ids ID ...] [--mr_test_ids ID ...] [--ct_val_count N] [--mr_val_count N]
"""
import argparse
import pathlib

import numpy as np
from PIL import Image

from data_prep import conversion, converter_cli, errors, raw_files
from sifa_synthmix.data import layout, scans, volumes

GENERATOR = "data_prep.abdominal"
BTCV_LABELS = volumes.LabelMapping(
    classes={**dict.fromkeys(range(14), 0), 6: 1, 2: 2, 3: 3, 1: 4}, centre_values=(6, 2, 3, 1))
CHAOS_LABELS = volumes.LabelMapping(
    classes={0: 0, 63: 1, 126: 2, 189: 3, 252: 4}, centre_values=(63, 126, 189, 252))
DEFAULT_TEST_IDS = {"ct": (1, 9, 30, 32, 33, 39), "mr": (1, 13, 32, 38)}
DEFAULT_VAL_COUNTS = {"ct": 2, "mr": 2}
CHAOS_SUBJECTS = pathlib.Path("Train_Sets", "MR")


def btcv_pairs(btcv_dir):
    """{id: (image path, label path)} of B/img/imgXXXX.nii.gz and B/label/labelXXXX.nii.gz."""
    btcv_dir = pathlib.Path(btcv_dir)

    def path(kind):
        return lambda volume_id: btcv_dir / kind / f"{kind}{volume_id:04d}.nii.gz"

    found = {kind: raw_files.files_by_id(btcv_dir / kind, rf"{kind}(?P<id>\d+)\.nii\.gz", path(kind)(1).name)
             for kind in ("img", "label")}
    return raw_files.paired_files(found["img"], found["label"], path("img"), path("label"))


def chaos_subjects(chaos_dir):
    """{id: (DICOM folder, ground-truth folder)} of C/Train_Sets/MR/<id>/T2SPIR/."""
    root = pathlib.Path(chaos_dir) / CHAOS_SUBJECTS
    subjects = raw_files.files_by_id(root, r"(?P<id>\d+)", "1")

    def path(kind):
        return lambda volume_id: subjects[volume_id] / "T2SPIR" / kind

    found = {kind: {i: path(kind)(i) for i in subjects if path(kind)(i).is_dir()}
             for kind in ("DICOM_anon", "Ground")}
    return raw_files.paired_files(found["DICOM_anon"], found["Ground"], path("DICOM_anon"), path("Ground"))


def read_mask(png_path, dicom_path, shape):
    """The ground-truth mask of one DICOM slice, a 2D array of `shape`."""
    if not png_path.is_file():
        raise volumes.RawDataError(f"{dicom_path}: its ground-truth mask {png_path} is missing")
    try:
        with Image.open(png_path) as png:
            mask = np.asarray(png)
    except OSError as error:
        raise volumes.RawDataError(f"{png_path}: cannot read the PNG ({error})") from None
    if mask.shape != tuple(shape):
        raise volumes.RawDataError(f"{png_path}: mask shape {mask.shape} differs from its DICOM slice's "
                                   f"{tuple(shape)} ({dicom_path})")
    return mask


def load_chaos_volume(dicom_dir, ground_dir):
    """The T2-SPIR series in `dicom_dir` with the masks in `ground_dir` (PNG rows and columns
    are the DICOM pixel rows and columns)."""
    files = [pathlib.Path(f) for f in scans.dicom_series_files(dicom_dir)]
    array, affine = scans.read_scan(dicom_dir)  # x (column), y (row), slice
    label = np.stack([read_mask(ground_dir / f"{f.stem}.png", f, (array.shape[1], array.shape[0])) for f in files])
    return volumes.checked_volume(array, label.transpose(2, 1, 0), affine, dicom_dir, ground_dir)


def raw_volumes(btcv_dir, chaos_dir, test_ids, val_counts):
    sources = {"ct": (btcv_pairs(btcv_dir), volumes.load_pair, BTCV_LABELS, btcv_dir),
               "mr": (chaos_subjects(chaos_dir), load_chaos_volume, CHAOS_LABELS, chaos_dir)}
    return [raw for m in layout.MODALITIES
            for raw in conversion.split_raw_volumes(m, *sources[m][:3], test_ids[m], val_counts[m],
                                                    sources[m][3])]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data_prep.abdominal", description=__doc__.split("\n")[0])
    parser.add_argument("--btcv_dir", required=True, help="BTCV training folder (img/, label/)")
    parser.add_argument("--chaos_dir", required=True, help="CHAOS folder holding Train_Sets/")
    converter_cli.add_common_arguments(parser, DEFAULT_TEST_IDS, DEFAULT_VAL_COUNTS)
    args = parser.parse_args(argv)
    found = raw_volumes(args.btcv_dir, args.chaos_dir, *converter_cli.split_choices(args))
    inputs = {"btcv_dir": str(pathlib.Path(args.btcv_dir).resolve()),
              "chaos_dir": str(pathlib.Path(args.chaos_dir).resolve())}
    settings = converter_cli.settings_from_args(args, volumes.AXIAL)
    return converter_cli.run(args, found, settings, layout.ABDOMINAL_CLASSES, GENERATOR, inputs)


if __name__ == "__main__":
    errors.exit_on_bad_input(main)
