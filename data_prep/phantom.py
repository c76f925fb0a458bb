"""A synthetic cardiac MR/CT data set in the prepared-data layout, for demos and tests.

Each subject is a thorax drawn in 3D (phantom_anatomy.py) on a voxel grid (H x W x D, slice axis 2, axial-like
slices: rows run anterior -> posterior, columns patient right -> left): body with a
subcutaneous fat layer, lungs, vertebral column, descending aorta, mediastinal soft tissue
and a heart (RA, RV, pulmonary artery, LA, ascending aorta, LV myocardium and cavity, each in
a thin coat of epicardial fat). The labels
are MMWHS's five classes; RA, RV, pulmonary artery and descending aorta carry blood but no
label, so intensity alone cannot segment. MR and CT subjects are drawn independently
(unpaired), then rendered with modality-specific tissue contrast, blur and noise, so that the
order of myocardium, fat and bone intensities differs between the modalities.

Anatomy is drawn in "body units" (1 unit = BODY_UNIT_MM; the body is about 1.7 units wide).
Like the MMWHS crops, the image is a window centred near the heart (VIEW_CENTRE,
VIEW_HALF_WIDTH), so the chest wall, lungs and spine are partly cut off; slices are
SLICE_THICKNESS pixel widths thick, so the default depth D = image_size // 2 spans the same
length as the slice width, enough for the heart from apex to aortic arch.

    python -m data_prep.phantom --output_dir data/phantom [--image_size 64] [--seed 0]
    python -m data_prep.phantom --as_raw raw/phantom [--seed 0]   (raw scans for data_prep.folder instead)

--as_raw writes scanner-like scans (data_prep/scanner_phantom.py: off-centre anatomy, a grid
per subject, artefacts, NIfTI / NRRD / MHA / DICOM); --kind centred writes this phantom's own
volumes as NIfTI instead (--image_size, --depth).
"""
import argparse
import json
import time

import nibabel as nib
import numpy as np
from scipy import ndimage

from data_prep import scanner_phantom
from data_prep.errors import UsageError, exit_on_bad_input
from data_prep.phantom_anatomy import (BODY_UNIT_MM, DEFAULT_COUNTS, RAW_LABEL_VALUES, SPLITS, bias_field, draw_anatomy,
                                       save_preview, subject_counts, subject_rng, tissue_image)
from sifa_synthmix import files
from sifa_synthmix.data import layout
from sifa_synthmix.data.preprocessing import clip_and_standardise, record_crop
from sifa_synthmix.data.volumes import geometry_record

GENERATOR = "data_prep.phantom"

# (nominal value, per-subject standard deviation) of each tissue, indexed by tissue.
CT_HU = ((-1000, 5), (-800, 40), (-100, 15), (40, 8), (100, 12), (300, 40), (700, 60))
MR_SIGNAL = ((0.0, 0.0), (0.06, 0.01), (0.8, 0.05), (0.32, 0.03), (0.22, 0.02), (1.0, 0.06),
             (0.12, 0.02))
CT_NOISE_HU = 20.0
MR_NOISE = 0.035  # sigma of each complex channel, relative to blood
CT_BLUR = 0.02  # in-plane Gaussian sigma in half-widths of the image (0.64 px at 64 x 64)
MR_BLUR = 0.04

DEFAULT_IMAGE_SIZE = 64
RAW_KINDS = ("scanner", "centred")  # --as_raw: scanner_phantom's scans, or this phantom's volumes
VIEW_CENTRE = (-0.05, 0.04)  # row, column of the image centre, body units
VIEW_HALF_WIDTH = 0.65  # body units
SLICE_THICKNESS = 2.0  # pixel widths
MR_STORED_SCALE = 1000.0  # --as_raw: MR's stored value per blood signal


def default_depth(image_size):
    return image_size // 2


def voxel_spacing_mm(image_size):
    pixel = 2 * VIEW_HALF_WIDTH * BODY_UNIT_MM / image_size
    return pixel, pixel, pixel * SLICE_THICKNESS


def volume_affine(image_size, depth):
    """Voxel -> world (RAS+, mm) affine of a phantom volume, as `voxel_grid` draws it: rows toward
    the back (P), columns toward the patient's left (L), slices toward the head (S), body
    coordinates times BODY_UNIT_MM with the body's axis at x = y = 0."""
    pixel, _, thickness = voxel_spacing_mm(image_size)
    first = (0.5 - image_size / 2) * pixel
    affine = np.zeros((4, 4))
    affine[0, 1], affine[1, 0], affine[2, 2], affine[3, 3] = -pixel, -pixel, thickness, 1.0
    affine[:3, 3] = [-(first + VIEW_CENTRE[1] * BODY_UNIT_MM), -(first + VIEW_CENTRE[0] * BODY_UNIT_MM),
                     (0.5 - depth / 2) * thickness]
    return affine


def voxel_grid(image_size, depth):
    """Row, column and slice body coordinates of the voxel centres, as broadcastable
    (H,1,1), (1,W,1), (1,1,D) arrays."""
    pixel = 2 * VIEW_HALF_WIDTH / image_size
    in_plane = (np.arange(image_size, dtype=np.float32) + 0.5 - image_size / 2) * pixel
    slices = (np.arange(depth, dtype=np.float32) + 0.5 - depth / 2) * pixel * SLICE_THICKNESS
    return (in_plane[:, None, None] + VIEW_CENTRE[0], in_plane[None, :, None] + VIEW_CENTRE[1],
            slices[None, None, :])


def blurred(image, sigma):
    """Gaussian blur, sigma in half-widths of the (square) slice; thick slices get less in z."""
    in_plane = sigma * image.shape[0] / 2.0
    return ndimage.gaussian_filter(image, (in_plane, in_plane, in_plane / SLICE_THICKNESS))


def mr_bias_field(rng, shape):
    """`bias_field` over the grid of a volume of `shape`."""
    return bias_field(rng, voxel_grid(shape[0], shape[2]))


def render_ct(rng, tissue):
    """HU-like: light blur and Gaussian noise."""
    image = blurred(tissue_image(rng, tissue, CT_HU), CT_BLUR)
    return image + rng.normal(0, CT_NOISE_HU, image.shape)


def render_mr(rng, tissue):
    """bSSFP-like: bias field, stronger blur, Rician noise (magnitude of complex Gaussian)."""
    image = blurred(tissue_image(rng, tissue, MR_SIGNAL) * mr_bias_field(rng, tissue.shape), MR_BLUR)
    real, imaginary = rng.normal(0, MR_NOISE, (2,) + image.shape)
    return np.hypot(image + real, imaginary)


RENDERERS = {"mr": render_mr, "ct": render_ct}


def raw_subject(rng, grid, modality):
    """(rendered float image: CT in HU, MR in signal relative to blood; uint8 labels)."""
    tissue, label = draw_anatomy(rng, grid)
    return RENDERERS[modality](rng, tissue), label


def prepared_subject(rng, grid, modality):
    """(preprocessed float32 image, uint8 labels) of one new subject in `modality`."""
    image, label = raw_subject(rng, grid, modality)
    return clip_and_standardise(image), label


def write_subjects(writer, grid, seed, counts):
    """Draws, renders, preprocesses and writes every subject; returns the first one per modality."""
    first = {}
    for modality in layout.MODALITIES:
        for split in SPLITS:
            for index in range(counts[f"{modality}_{split}"]):
                image, label = prepared_subject(subject_rng(seed, modality, split, index), grid, modality)
                name = f"{modality}_{split}_{index:02d}"
                if split == "test":
                    writer.add_test_volume(modality, name, image, label, spacing=voxel_spacing_mm(image.shape[0]),
                                           geometry=geometry_record(volume_affine(*image.shape[1:])))
                else:
                    crop, indices = record_crop(label)
                    writer.add_record_volume(modality, split, name, image[:, :, crop], label[:, :, crop],
                                             indices)
                first.setdefault(modality, (image, label))
    return first


def generate_phantom(output_dir, image_size=DEFAULT_IMAGE_SIZE, depth=None, seed=0, counts=None):
    """Writes a phantom data set to `output_dir` (absent or empty); returns the stats dict.

    `counts` overrides DEFAULT_COUNTS entries, e.g. {"mr_train": 2}. Everything is written to
    a temporary sibling folder first and renamed into place at the end, so `output_dir` is
    either a finished data set or untouched.
    """
    depth = default_depth(image_size) if depth is None else int(depth)
    counts = subject_counts(counts)
    with files.staged_folder(output_dir) as staging:
        writer = layout.PreparedDatasetWriter(
            staging, layout.CARDIAC_CLASSES, image_size, flip_test_volumes=False,
            provenance={"generator": GENERATOR, "seed": seed, "image_size": image_size, "depth": depth})
        first_subjects = write_subjects(writer, voxel_grid(image_size, depth), seed, counts)
        stats = writer.finish()
        save_preview(staging / "preview.png", first_subjects, stats)
    return stats


def raw_scan_arrays(image, label, modality):
    """A raw subject as a scanner would store it: CT as int16 HU, MR as uint16 in arbitrary units
    (1000 per blood signal); labels with MMWHS's values."""
    stored = np.round(image if modality == "ct" else image * MR_STORED_SCALE)
    kind = np.int16 if modality == "ct" else np.uint16
    info = np.iinfo(kind)
    return np.clip(stored, info.min, info.max).astype(kind), RAW_LABEL_VALUES[label]


def write_raw(output_dir, image_size=DEFAULT_IMAGE_SIZE, depth=None, seed=0, counts=None):
    """Writes the phantom as a folder of raw scans, one nnU-Net v2 style folder per modality
    (DIR/{mr,ct}/dataset.json, imagesTr/, labelsTr/, imagesTs/, labelsTs/), NIfTI with the
    phantom's world affine, for `python -m data_prep.folder`. CT training scans have no labels
    (no ct/labelsTr/): the unlabelled target of domain adaptation. Returns the scans written."""
    depth = default_depth(image_size) if depth is None else int(depth)
    counts = subject_counts(counts)
    grid, affine = voxel_grid(image_size, depth), volume_affine(image_size, depth)
    written = 0
    with files.staged_folder(output_dir) as staging:
        for modality in layout.MODALITIES:
            root = staging / modality
            for split in SPLITS:
                images = root / ("imagesTs" if split == "test" else "imagesTr")
                labels = root / ("labelsTs" if split == "test" else "labelsTr")
                for index in range(counts[f"{modality}_{split}"]):
                    image, label = raw_scan_arrays(*raw_subject(subject_rng(seed, modality, split, index), grid,
                                                                modality), modality)
                    case = f"{modality}_{split}_{index:02d}"
                    images.mkdir(parents=True, exist_ok=True)
                    nib.save(nib.Nifti1Image(image, affine), str(images / f"{case}_0000.nii.gz"))
                    if split == "test" or modality == "mr":
                        labels.mkdir(parents=True, exist_ok=True)
                        nib.save(nib.Nifti1Image(label, affine), str(labels / f"{case}.nii.gz"))
                    written += 1
            info = {"name": f"SIFA phantom {modality.upper()}", "channel_names": {"0": modality.upper()},
                    "labels": {"background": 0, **{name: int(RAW_LABEL_VALUES[index]) for index, name
                                                   in enumerate(layout.CARDIAC_CLASSES) if index}},
                    "numTraining": counts[f"{modality}_train"] + counts[f"{modality}_val"], "file_ending": ".nii.gz",
                    "provenance": {"generator": GENERATOR, "seed": seed, "image_size": image_size, "depth": depth}}
            files.atomic_write_text(root / "dataset.json", json.dumps(info, indent=2) + "\n")
    return written


def ensure_phantom(output_dir, image_size=DEFAULT_IMAGE_SIZE, seed=0):
    """Generates the default phantom unless `output_dir` already holds one (has dataset.json);
    returns the stats. An existing data set made with other settings is an error, not reused."""
    prepared = layout.PreparedLayout(output_dir)
    if not prepared.info_path.exists():
        return generate_phantom(output_dir, image_size=image_size, seed=seed)
    provenance = prepared.read_info().get("provenance", {})
    wanted = {"generator": GENERATOR, "seed": seed, "image_size": image_size,
              "depth": default_depth(image_size)}
    found = {key: provenance.get(key) for key in wanted}
    if found != wanted:
        raise ValueError(f"{output_dir} holds a data set made with {found}, not {wanted}")
    return json.loads(prepared.stats_path.read_text(encoding="utf-8"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m data_prep.phantom", description=__doc__.split("\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--output_dir", help="absent or empty folder to write the prepared data set to")
    target.add_argument("--as_raw", metavar="DIR",
                        help="write raw scans instead, one nnU-Net style folder per modality (DIR/mr, "
                             "DIR/ct; CT training scans without labels), for python -m data_prep.folder")
    parser.add_argument("--kind", choices=RAW_KINDS, default=None,
                        help="--as_raw: scanner-like scans in mixed formats (default) or the centred "
                             "phantom's volumes as NIfTI")
    parser.add_argument("--image_size", type=int, default=None,
                        help=f"centred phantom: slice width and height (default {DEFAULT_IMAGE_SIZE})")
    parser.add_argument("--depth", type=int, default=None,
                        help="centred phantom: slices per volume (default image_size // 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--target_labels", action="store_true",
                        help="scanner-like scans: write the CT training scans' labels too (ct/labelsTr/), for an "
                             "oracle to train on; without, the CT training scans are unlabelled as a user's are")
    for name, count in DEFAULT_COUNTS.items():
        parser.add_argument(f"--{name}", type=int, default=count, help="number of subjects")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    started = time.perf_counter()
    counts = {name: getattr(args, name) for name in DEFAULT_COUNTS}
    kind = args.kind or ("scanner" if args.as_raw else "centred")
    image_size = DEFAULT_IMAGE_SIZE if args.image_size is None else args.image_size
    if kind == "scanner" and not args.as_raw:
        raise UsageError("--kind scanner writes raw scans: use --as_raw DIR, then python -m data_prep.folder")
    if kind == "scanner" and (args.image_size, args.depth) != (None, None):
        raise UsageError("--image_size and --depth set the centred phantom's grid; scanner-like scans draw "
                         "their own grid per subject (add --kind centred for the centred phantom)")
    if args.as_raw:
        if kind == "scanner":
            written = len(scanner_phantom.write_raw(args.as_raw, args.seed, counts,
                                                    target_labels=args.target_labels))
        else:
            written = write_raw(args.as_raw, image_size, args.depth, args.seed, counts)
        print(f"wrote {written} raw scans to {args.as_raw} in {time.perf_counter() - started:.1f} s; "
              f"prepare them with: python -m data_prep.folder --mr_dir {args.as_raw}/mr --ct_dir {args.as_raw}/ct "
              f"--mr_val_count {counts['mr_val']} --output_dir DIR")
        return
    stats = generate_phantom(args.output_dir, image_size, args.depth, args.seed, counts)
    print(f"wrote {args.output_dir} in {time.perf_counter() - started:.1f} s; stats {json.dumps(stats)}")


if __name__ == "__main__":
    exit_on_bad_input(main)
