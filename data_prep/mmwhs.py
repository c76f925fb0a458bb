"""MMWHS 2017 (cardiac CT and MR) in the prepared-data layout, as SIFA's released data.

RAW is the challenge's release layout: RAW/ct_train/ct_train_1001_image.nii.gz with its
ct_train_1001_label.nii.gz, and the same under RAW/mr_train/. Volumes are cut into coronal
slices, cropped around the whole heart (the centroid of every labelled heart structure), with
labels 205 MYO -> 1, 420 LA -> 2, 500 LV -> 3, 820 AA -> 4, and RA, RV and pulmonary artery
(550, 600, 850) -> 0. The default split is the released one for test; of the other volumes
the highest-numbered go to validation (CT 2, MR 4) and the rest to training.

    python -m data_prep.mmwhs --raw_dir RAW --output_dir data/mmwhs [--image_size 256]
        [--spacing MM] [--augment N] [--workers N] [--ignore_unknown_labels]
        [--ct_test_ids ID ...] [--mr_test_ids ID ...] [--ct_val_count N] [--mr_val_count N]
"""
import argparse
import pathlib

from data_prep import conversion, converter_cli, errors, raw_files
from sifa_synthmix.data import layout, volumes

GENERATOR = "data_prep.mmwhs"
HEART_LABELS = volumes.LabelMapping(
    classes={0: 0, 205: 1, 420: 2, 500: 3, 550: 0, 600: 0, 820: 4, 850: 0},
    centre_values=(205, 420, 500, 550, 600, 820, 850))
DEFAULT_TEST_IDS = {"ct": (1003, 1008, 1014, 1019), "mr": (1007, 1009, 1018, 1019)}
DEFAULT_VAL_COUNTS = {"ct": 2, "mr": 4}


def find_pairs(raw_dir, modality):
    """{id: (image path, label path)} under RAW/{modality}_train/."""
    folder = pathlib.Path(raw_dir) / f"{modality}_train"

    def path(kind):
        return lambda volume_id: folder / f"{modality}_train_{volume_id}_{kind}.nii.gz"

    found = {kind: raw_files.files_by_id(folder, rf"{modality}_train_(?P<id>\d+)_{kind}\.nii\.gz",
                                         path(kind)(1001).name) for kind in ("image", "label")}
    return raw_files.paired_files(found["image"], found["label"], path("image"), path("label"))


def raw_volumes(raw_dir, test_ids, val_counts):
    return [raw for m in layout.MODALITIES
            for raw in conversion.split_raw_volumes(m, find_pairs(raw_dir, m), volumes.load_pair,
                                                    HEART_LABELS, test_ids[m], val_counts[m],
                                                    pathlib.Path(raw_dir) / f"{m}_train")]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data_prep.mmwhs", description=__doc__.split("\n")[0])
    parser.add_argument("--raw_dir", required=True, help="the MMWHS release folder (ct_train/, mr_train/)")
    converter_cli.add_common_arguments(parser, DEFAULT_TEST_IDS, DEFAULT_VAL_COUNTS)
    args = parser.parse_args(argv)
    found = raw_volumes(args.raw_dir, *converter_cli.split_choices(args))
    settings = converter_cli.settings_from_args(args, volumes.CORONAL)
    return converter_cli.run(args, found, settings, layout.CARDIAC_CLASSES, GENERATOR,
                             {"raw_dir": str(pathlib.Path(args.raw_dir).resolve())})


if __name__ == "__main__":
    errors.exit_on_bad_input(main)
