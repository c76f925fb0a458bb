"""Your own scans in the prepared-data layout: any folder of NIfTI / NRRD / MHA files or DICOM
series per modality, the target's (or any) scans with or without labels.

Per modality, either a folder (--mr_dir, --ct_dir) in the nnU-Net v2 / Medical Segmentation
Decathlon layout, or explicit lists (--mr_images, --mr_label_files, --mr_unlabelled_images):

    RAW/dataset.json          optional: "labels" (name -> value, or MSD's value -> name) and
                              "channel_names" / "modality" (one channel)
    RAW/imagesTr/CASE_0000.nii.gz   training scans (a DICOM series: a folder CASE/)
    RAW/labelsTr/CASE.nii.gz        their labels; without labelsTr/ every training scan is
                                    unlabelled, with it every one needs its label
    RAW/imagesTrUnlabelled/...      optional: more training scans without labels
    RAW/imagesTs/, RAW/labelsTs/    optional: test scans, with labels when labelsTs/ exists

Labels map to one list of class names shared by both modalities, from each folder's
dataset.json or --mr_labels / --ct_labels NAME=VALUE,... (NAME background maps a value to 0).
Every scan, labelled or not, is framed alike (--crop body): an image_size window around the
centroid of its body (a label-free mask), its body's slices as records, intensities scaled by
the body's percentiles and statistics (--normalisation foreground), so --mode=predict frames a
new scan exactly as the test scans were framed here. --spacing auto resamples to the scans'
median in-plane spacing, coarsened where needed so that the window holds every labelled
structure of the labelled training scans. Unlabelled scans are written with an all-zero label,
listed as unlabelled in dataset.json: SIFA trains on them, and whatever needs target labels says
the target has none instead of scoring zeros.

    python -m data_prep.folder --mr_dir RAW_MR --ct_dir RAW_CT --output_dir DIR [--image_size N]
        [--spacing auto|median|native|MM] [--slice_axis axial|coronal|sagittal]
        [--crop body|auto|labels|centre] [--normalisation foreground|zscore]
        [--mr_labels NAME=VALUE,...] [--ct_labels ...]
        [--mr_test_cases CASE ...] [--mr_val_count N] [--augment N] [--workers N]
"""
import argparse
import dataclasses
import functools
import glob
import json
import pathlib
import re

import nibabel as nib
import numpy as np

from data_prep import conversion, converter_cli, errors
from data_prep.errors import UsageError
from sifa_synthmix.data import layout, preprocessing, scans, volumes
from sifa_synthmix.data.scans import RawDataError

GENERATOR = "data_prep.folder"
# Names that are neither scans nor to be reported: a header's data file, notes, hidden files.
COMPANION_ENDINGS = (".raw", ".zraw", ".json", ".txt", ".md", ".csv")
# --spacing auto leaves this much room (relative) beyond the labelled structure farthest from
# its body's centre, for subjects whose structures reach farther than the training scans'.
FIT_MARGIN = 0.15
IMAGE_SUFFIXES = ("_0000", "_image", "_img")  # stripped from an image's name to give its case
LABEL_SUFFIXES = ("_label", "_labels", "_seg", "_mask", "_gt")  # stripped from a label's name
FOLDERS = {"train": ("imagesTr", "labelsTr"), "unlabelled": ("imagesTrUnlabelled", None),
           "test": ("imagesTs", "labelsTs")}


@dataclasses.dataclass(frozen=True)
class Case:
    """One scan to convert: its case name, split ("train" or "test"), image and label (or None)."""
    name: str
    split: str
    image: pathlib.Path
    label: pathlib.Path = None


def case_name(path, suffixes):
    """A scan's case name: its name without ending and without one of `suffixes` at the end."""
    name = scans.scan_name(path)
    for suffix in suffixes:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[:-len(suffix)]
    return name


def scans_in(paths, where):
    """The scan files and DICOM folders among `paths`; other files are noted on the way."""
    found, ignored = [], []
    for path in paths:
        if path.name.startswith("."):
            continue
        if path.is_dir():
            if not scans.is_dicom_folder(path):
                raise RawDataError(f"{path}: a folder that holds no readable DICOM series (a scan folder must "
                                   "hold one series)")
            found.append(path)
        elif scans.scan_ending(path) is None:
            if not path.name.lower().endswith(COMPANION_ENDINGS):
                ignored.append(path.name)
        else:
            found.append(path)
    if ignored:
        print(f"note: {where}: ignored {len(ignored)} entr{'y' if len(ignored) == 1 else 'ies'} that are not "
              f"scans: {', '.join(sorted(ignored)[:5])}{' ...' if len(ignored) > 5 else ''}")
    return sorted(found)


def by_case(paths, suffixes, kind):
    """{case name: path}; two paths claiming one case is an error naming both."""
    cases = {}
    for path in paths:
        name = case_name(path, suffixes)
        if name in cases:
            raise RawDataError(f"{path}: {kind} of case {name!r}, which {cases[name]} claims too")
        cases[name] = path
    return cases


def paired_cases(images, labels, split, label_where):
    """Cases of {name: image} with their labels from {name: label} (None: all unlabelled); with
    labels, every image needs one and every label an image."""
    if labels is not None:
        for name, path in images.items():
            if name not in labels:
                raise RawDataError(f"{path}: its label (case {name!r}) is missing from {label_where}; scans "
                                   "without labels go in imagesTrUnlabelled/ or --MOD_unlabelled_images")
        for name, path in labels.items():
            if name not in images:
                raise RawDataError(f"{path}: a label of case {name!r}, which has no image")
    return [Case(name, split, path, labels[name] if labels is not None else None)
            for name, path in sorted(images.items())]


def check_channels(images, folder):
    """nnU-Net names images CASE_XXXX by channel; only one channel (_0000) can be converted."""
    other = [p for p in images if re.search(r"_(?!0000)\d{4}$", scans.scan_name(p))]
    if other:
        raise RawDataError(f"{other[0]}: a second image channel; the converter takes one channel per "
                           f"scan (_0000 in {folder})")


def folder_cases(root):
    """The cases of an nnU-Net / MSD style folder."""
    root = pathlib.Path(root)
    if not root.is_dir():
        raise RawDataError(f"{root}: folder not found")
    cases = []
    for split, (image_folder, label_folder) in FOLDERS.items():
        image_dir = root / image_folder
        if not image_dir.is_dir():
            continue
        images = scans_in(image_dir.iterdir(), image_dir)
        check_channels(images, image_dir)
        labels = None
        if label_folder and (root / label_folder).is_dir():
            labels = by_case(scans_in((root / label_folder).iterdir(), root / label_folder), LABEL_SUFFIXES, "label")
        cases += paired_cases(by_case(images, IMAGE_SUFFIXES, "image"), labels,
                              "test" if split == "test" else "train", root / str(label_folder))
    if not cases:
        raise RawDataError(f"{root}: no scans (expected imagesTr/CASE_0000.nii.gz, labelsTr/CASE.nii.gz, "
                           "imagesTs/..., see python -m data_prep.folder --help)")
    return cases


def expanded(patterns, option):
    """Paths of a list of paths, globs and .txt lists of paths (relative to the list)."""
    paths = []
    for pattern in patterns:
        if pattern.endswith(".txt") and pathlib.Path(pattern).is_file():
            listed = pathlib.Path(pattern)
            lines = [line.strip() for line in listed.read_text(encoding="utf-8").splitlines()]
            paths += [listed.parent / line for line in lines if line and not line.startswith("#")]
        elif glob.has_magic(pattern) and not pathlib.Path(pattern).exists():
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise RawDataError(f"{pattern}: {option} matches no file")
            paths += [pathlib.Path(m) for m in matches]
        else:
            paths.append(pathlib.Path(pattern))
    for path in paths:
        if not path.exists():
            raise RawDataError(f"{path}: no such file or DICOM folder ({option})")
    return paths


def listed_pairs(args, modality, images_option, labels_option, split):
    """The cases of one list of images (--MOD_images or --MOD_test_images) and its label files."""
    images = by_case(expanded(getattr(args, images_option) or [], f"--{images_option}"), IMAGE_SUFFIXES, "image")
    label_files = getattr(args, labels_option)
    labels = (by_case(expanded(label_files, f"--{labels_option}"), LABEL_SUFFIXES, "label")
              if label_files else None)
    return paired_cases(images, labels, split, f"--{labels_option}")


def listed_cases(args, modality):
    """The cases of --MOD_images, --MOD_label_files, --MOD_unlabelled_images, --MOD_test_images
    and --MOD_test_label_files."""
    cases = listed_pairs(args, modality, f"{modality}_images", f"{modality}_label_files", "train")
    cases += listed_pairs(args, modality, f"{modality}_test_images", f"{modality}_test_label_files", "test")
    unlabelled = by_case(expanded(getattr(args, f"{modality}_unlabelled_images") or [],
                                  f"--{modality}_unlabelled_images"), IMAGE_SUFFIXES, "image")
    cases += paired_cases(unlabelled, None, "train", None)
    if not cases:
        raise UsageError(f"no {modality.upper()} scans: give --{modality}_dir or --{modality}_images")
    return cases


def read_dataset_json(root):
    """The input folder's dataset.json as a dict ({} when absent)."""
    path = pathlib.Path(root) / "dataset.json"
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise RawDataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(info, dict):
        raise RawDataError(f"{path}: expected a JSON object, got {type(info).__name__}")
    channels = info.get("channel_names", info.get("modality", {"0": ""}))
    if isinstance(channels, dict) and len(channels) > 1:
        raise RawDataError(f"{path}: {len(channels)} image channels {channels}; the converter takes one")
    return info


def note_channel_mismatch(info, modality, path):
    """A note when dataset.json names the channel as the other modality (a swapped --mr_dir / --ct_dir)."""
    channels = info.get("channel_names", info.get("modality", {}))
    name = str(next(iter(channels.values()), "")) if isinstance(channels, dict) else ""
    other = "MR" if modality == "ct" else "CT"
    if name.upper() == other or (modality == "ct" and re.fullmatch(r"(?i)(mri?|t1\w*|t2\w*|flair|dwi)", name)):
        print(f"note: {path} names its channel {name!r}, but it was given as --{modality}_dir")


def mapping_from_option(text, option):
    """{raw value: class name} of NAME=VALUE,NAME=VALUE,..."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            raise UsageError(f"{option}: expected NAME=VALUE items, got {item!r}") from None
        if not name.strip() or not number.is_integer():
            raise UsageError(f"{option}: expected NAME=VALUE with a whole-number VALUE, got {item!r}")
        if int(number) in mapping:
            raise UsageError(f"{option}: value {int(number)} is given twice")
        mapping[int(number)] = name.strip()
    if not mapping:
        raise UsageError(f"{option}: no NAME=VALUE items")
    return mapping


def mapping_from_dataset_json(info, path):
    """{raw value: class name} of dataset.json's "labels": nnU-Net v2's name -> value or MSD's
    value -> name."""
    labels = info.get("labels")
    if not isinstance(labels, dict) or not labels:
        return None
    mapping = {}
    for key, value in labels.items():
        name, number = (value, key) if re.fullmatch(r"\d+", str(key)) else (key, value)
        if isinstance(number, bool) or not re.fullmatch(r"\d+", str(number)):
            raise RawDataError(f"{path}: label {key!r}: {value!r} is not a whole-number value (region-based "
                               "labels are not supported)")
        mapping[int(number)] = str(name)
    return mapping


def is_background(name):
    return name.lower() == "background"


def class_list(mappings):
    """The shared class names: background, then the first labelled modality's names by value;
    every labelled modality must name the same classes."""
    names = {m: sorted({n for n in mapping.values() if not is_background(n)}) for m, mapping in mappings.items()}
    first = next(iter(mappings))
    ordered = []
    for value in sorted(mappings[first]):
        name = mappings[first][value]
        if not is_background(name) and name not in ordered:
            ordered.append(name)
    for modality, found in names.items():
        if found != sorted(ordered):
            raise UsageError(f"{first.upper()} labels name the classes {sorted(ordered)} but {modality.upper()} "
                             f"labels name {found}: both must name the same classes (map the others to "
                             f"background with --{modality}_labels ...,background=VALUE)")
    return ["background"] + ordered


def label_mapping(mapping, class_names):
    """volumes.LabelMapping of {raw value: class name}; value 0 is background unless named."""
    classes = {0: 0}
    classes.update({value: class_names.index("background" if is_background(n) else n) for value, n in mapping.items()})
    return volumes.LabelMapping(classes=classes, centre_values=tuple(v for v, c in sorted(classes.items()) if c))


def in_plane_spacing(path, axcodes):
    """The spacings of a scan along the two in-plane axes of `axcodes`, from its header."""
    _, affine = scans.read_geometry(path)
    world_axis = {"L": 0, "R": 0, "P": 1, "A": 1, "S": 2, "I": 2}
    axes = nib.orientations.io_orientation(affine)[:, 0]
    spacing = np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)
    return [float(spacing[list(axes).index(world_axis[code])]) for code in axcodes[:2]]


def median_spacing(cases, axcodes):
    """The median in-plane spacing over every scan, rounded to 1e-3 mm."""
    values = [s for case in cases for s in in_plane_spacing(case.image, axcodes)]
    return round(float(np.median(values)), 3)


def structure_reach_mm(case, structure_values, axcodes):
    """How far (mm, along a row or a column) the farthest voxel of a labelled scan that holds one
    of `structure_values` lies from its body's centroid, the centre of the body framing; the
    voxel's own half-width included."""
    volume = volumes.oriented(volumes.load_pair(case.image, case.label), axcodes)
    labelled = np.isin(volume.label, structure_values).any(axis=2)
    if not labelled.any():
        return 0.0
    try:
        centre = preprocessing.crop_centre("body", volume.image)
    except ValueError as error:
        raise RawDataError(f"{case.image}: {error}") from None
    return max((np.abs(np.flatnonzero(labelled.any(axis=1 - axis)) - centre[axis]).max() + 0.5)
               * volume.spacing[axis] for axis in (0, 1))


@dataclasses.dataclass(frozen=True)
class FittingSpacing:
    """--spacing auto's choice and why: the scans' median, and the reach that may coarsen it."""
    spacing_mm: float
    median_mm: float
    reach_mm: float  # of the labelled structure farthest from its body's centre
    farthest: pathlib.Path  # the scan it lies in (None: no labelled training scan)

    def note(self, image_size):
        if self.spacing_mm == self.median_mm:
            return (f"in-plane spacing: {self.spacing_mm} mm (the median of the scans; a {image_size} px window "
                    f"holds every labelled structure; --spacing chooses another)")
        return (f"in-plane spacing: {self.spacing_mm} mm instead of the scans' median {self.median_mm} mm, so that "
                f"the {image_size} px window around each body holds its labelled structures (the farthest lies "
                f"{self.reach_mm:.0f} mm from its body's centre, in {self.farthest}); a larger --image_size keeps "
                "finer pixels, --spacing chooses another")


def fitting_spacing(found, axcodes, image_size):
    """--spacing auto: the median in-plane spacing of all scans, coarsened (to 0.01 mm) where the
    image_size window centred on a labelled training scan's body would not hold its labelled
    structures with FIT_MARGIN to spare."""
    median = median_spacing([c for cases, _ in found.values() for c in cases], axcodes)
    reaches = [(structure_reach_mm(case, [v for v, name in mapping.items() if v and not is_background(name)],
                                   axcodes), case.image)
               for cases, mapping in found.values() if mapping for case in cases
               if case.label is not None and case.split == "train"]
    reach, farthest = max(reaches, key=lambda item: item[0], default=(0.0, None))
    needed = float(np.ceil(2 * reach * (1 + FIT_MARGIN) / image_size * 100) / 100)
    return FittingSpacing(max(median, needed), median, reach, farthest)


def assign_splits(cases, test_cases, val_count, modality):
    """{case name: split}: imagesTs and --MOD_test_cases for test, the last `val_count` labelled
    training cases (by name) for validation, the rest for training."""
    names = {case.name for case in cases}
    unknown = sorted(set(test_cases) - names)
    if unknown:
        raise UsageError(f"--{modality}_test_cases: no {modality.upper()} case named {unknown} "
                         f"(cases: {sorted(names)[:10]}{' ...' if len(names) > 10 else ''})")
    splits = {c.name: "test" if c.split == "test" or c.name in test_cases else "train" for c in cases}
    labelled = sorted(c.name for c in cases if splits[c.name] == "train" and c.label is not None)
    if not 0 <= val_count <= len(labelled):
        raise UsageError(f"--{modality}_val_count {val_count}: {modality.upper()} has {len(labelled)} labelled "
                         "training case(s) to take validation cases from")
    splits.update({name: "val" for name in labelled[len(labelled) - val_count:] if val_count})
    if "train" not in splits.values():
        raise UsageError(f"{modality.upper()}: no training case is left after the test and validation split")
    return splits


def modality_cases(args, modality):
    """(cases, {raw value: class name} or None, where the mapping came from) of one modality."""
    folder = getattr(args, f"{modality}_dir")
    if folder and (getattr(args, f"{modality}_images") or getattr(args, f"{modality}_test_images")):
        raise UsageError(f"give --{modality}_dir or lists of scans (--{modality}_images, --{modality}_test_images), "
                         "not both")
    cases = folder_cases(folder) if folder else listed_cases(args, modality)
    option = getattr(args, f"{modality}_labels")
    if option:
        return cases, mapping_from_option(option, f"--{modality}_labels")
    info_path = pathlib.Path(folder or ".") / "dataset.json"
    info = read_dataset_json(folder) if folder else {}
    note_channel_mismatch(info, modality, info_path)
    mapping = mapping_from_dataset_json(info, info_path) if folder else None
    if mapping is None and any(case.label is not None for case in cases):
        raise UsageError(f"{modality.upper()} scans have labels but no mapping of their values to class names: "
                         f"give --{modality}_labels NAME=VALUE,... or a dataset.json with \"labels\"")
    return cases, mapping


def check_label_values(found, ignore_unknown):
    """Every label file's values against its modality's mapping, on the raw files and before any
    conversion (as nnU-Net's verify_dataset_integrity): a RawDataError names the first file with
    values the mapping does not know, with their raw voxel counts."""
    for cases, mapping in found.values():
        known = volumes.LabelMapping(classes={0: 0, **{v: 1 for v in mapping or {}}}, centre_values=())
        for case in cases:
            if case.label is None or ignore_unknown:
                continue
            label = scans.read_scan(case.label)[0]
            volumes.check_whole_numbers(label, case.label)
            unknown = known.unknown_values(label)
            if unknown:
                listed = ", ".join(f"{v} ({n} voxels)" for v, n in sorted(unknown.items()))
                raise RawDataError(f"{case.label}: unknown label values {listed}; known values are {sorted(known.classes)} "
                                   "(--ignore_unknown_labels maps the others to background)")


def note_missing_test_scans(found):
    """A note at conversion for a modality without test scans: evaluation would have none."""
    for modality, (cases, _) in found.items():
        if not any(c.split == "test" for c in cases):
            print(f"note: no {modality.upper()} test scans: --mode=evaluate will have nothing to score on "
                  f"{modality.upper()} (give imagesTs/, --{modality}_test_images with --{modality}_test_label_files, "
                  f"or --{modality}_test_cases)")


def raw_volumes(args, axcodes):
    """(RawVolumes of both modalities, class names, in-plane spacing or None)."""
    found = {m: modality_cases(args, m) for m in layout.MODALITIES}
    mappings = {m: mapping for m, (cases, mapping) in found.items()
                if mapping is not None and any(c.label is not None for c in cases)}
    if not mappings:
        raise UsageError("neither modality has labelled scans: the source modality needs labels to train on")
    class_names = class_list(mappings)
    check_label_values(found, args.ignore_unknown_labels)
    if not any(getattr(args, f"{m}_test_cases") for m in layout.MODALITIES):
        note_missing_test_scans(found)
    spacing = converter_cli.spacing_option(args.spacing)
    if spacing == "median":
        spacing = median_spacing([c for cases, _ in found.values() for c in cases], axcodes)
        print(f"in-plane spacing: {spacing} mm (the median of the scans; --spacing chooses another)")
    elif spacing == "auto":
        fitting = fitting_spacing(found, axcodes, args.image_size)
        spacing = fitting.spacing_mm
        print(fitting.note(args.image_size))
    result = []
    for modality, (cases, mapping) in found.items():
        splits = assign_splits(cases, getattr(args, f"{modality}_test_cases"), getattr(args, f"{modality}_val_count"),
                               modality)
        labels = label_mapping(mapping or {}, class_names)
        result += [conversion.RawVolume(modality, splits[c.name], c.name,
                                        functools.partial(volumes.load_pair, c.image, c.label), labels,
                                        labelled=c.label is not None) for c in cases]
    return result, class_names, spacing


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data_prep.folder", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    converter_cli.add_output_arguments(parser, default_spacing="auto")
    parser.add_argument("--slice_axis", choices=sorted(volumes.SLICE_AXES), default="axial",
                        help="the axis slices are cut across (default: %(default)s)")
    parser.add_argument("--crop", choices=preprocessing.CROP_CHOICES, default="body",
                        help="what the crop is centred on: body = a label-free body mask, for every scan alike, as "
                             "--mode=predict frames new scans; auto = a labelled scan's labelled structures, an "
                             "unlabelled scan's body (the test scores then flatter what prediction gets); labels; "
                             "centre (default: %(default)s)")
    parser.add_argument("--normalisation", choices=preprocessing.NORMALISATIONS, default="foreground",
                        help="foreground = clip to the body's 0.5/99.5 percentiles and z-score with the body's "
                             "statistics (nnU-Net's CT normalisation); zscore = SIFA's: clip the top 2%% of the "
                             "crop, z-score it (default: %(default)s)")
    for modality in layout.MODALITIES:
        upper = modality.upper()
        parser.add_argument(f"--{modality}_dir", help=f"{upper} folder in the nnU-Net / MSD layout")
        parser.add_argument(f"--{modality}_images", nargs="+",
                            help=f"{upper} scans (files, globs, DICOM folders, .txt lists), instead of --{modality}_dir")
        parser.add_argument(f"--{modality}_label_files", nargs="+",
                            help=f"labels of --{modality}_images, paired by case name")
        parser.add_argument(f"--{modality}_unlabelled_images", nargs="+",
                            help=f"{upper} training scans without labels")
        parser.add_argument(f"--{modality}_labels", help=f"{upper} label values: NAME=VALUE,... (overrides "
                                                         "dataset.json; NAME background maps to 0)")
        parser.add_argument(f"--{modality}_test_images", nargs="+",
                            help=f"{upper} test scans (files, globs, DICOM folders, .txt lists), scored by "
                                 "--mode=evaluate")
        parser.add_argument(f"--{modality}_test_label_files", nargs="+",
                            help=f"labels of --{modality}_test_images, paired by case name")
        parser.add_argument(f"--{modality}_test_cases", nargs="+", default=[],
                            help=f"names of {upper} cases given as training scans (--{modality}_dir's imagesTr/ or "
                                 f"--{modality}_images) to move to the test split (imagesTs/ and "
                                 f"--{modality}_test_images are test anyway)")
        parser.add_argument(f"--{modality}_val_count", type=int, default=0,
                            help=f"{upper} labelled training cases (the last by name) for validation")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    axcodes = volumes.SLICE_AXES[args.slice_axis]
    found, class_names, spacing = raw_volumes(args, axcodes)
    if args.crop == "labels" and not all(raw.labelled for raw in found):
        raise UsageError("--crop labels needs labels, and some scans have none: use --crop auto, body or centre")
    settings = converter_cli.settings_from_args(args, axcodes, crop=args.crop, spacing_mm=spacing,
                                                normalisation=args.normalisation)
    inputs = {f"{m}_input": str(pathlib.Path(getattr(args, f"{m}_dir")).resolve()) if getattr(args, f"{m}_dir")
              else "lists" for m in layout.MODALITIES}
    return converter_cli.run(args, found, settings, class_names, GENERATOR, inputs)


if __name__ == "__main__":
    errors.exit_on_bad_input(main)
