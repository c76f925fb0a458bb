"""A synthetic cardiac MR/CT data set in the prepared-data layout, for demos and tests.

Each subject is a thorax drawn in 3D on a voxel grid (H x W x D, slice axis 2, axial-like
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
import functools
import json
import math
import time

import nibabel as nib
import numpy as np
from scipy import ndimage

from data_prep.augmentation import rotation_matrix
from data_prep.errors import UsageError, exit_on_bad_input
from sifa_synthmix import files
from sifa_synthmix.data import layout
from sifa_synthmix.data.preprocessing import clip_and_standardise, record_crop
from sifa_synthmix.data.volumes import geometry_record

GENERATOR = "data_prep.phantom"
AIR, LUNG, FAT, MUSCLE, MYOCARDIUM, BLOOD, BONE = range(7)
TISSUE_NAMES = ("air", "lung", "fat", "muscle", "myocardium", "blood", "bone")
BACKGROUND, MYO, LAC, LVC, AA = range(len(layout.CARDIAC_CLASSES))

# (nominal value, per-subject standard deviation) of each tissue, indexed by tissue.
CT_HU = ((-1000, 5), (-800, 40), (-100, 15), (40, 8), (100, 12), (300, 40), (700, 60))
MR_SIGNAL = ((0.0, 0.0), (0.06, 0.01), (0.8, 0.05), (0.32, 0.03), (0.22, 0.02), (1.0, 0.06),
             (0.12, 0.02))
CT_NOISE_HU = 20.0
MR_NOISE = 0.035  # sigma of each complex channel, relative to blood
CT_BLUR = 0.02  # in-plane Gaussian sigma in half-widths of the image (0.64 px at 64 x 64)
MR_BLUR = 0.04
MR_BIAS_STRENGTH = 0.25  # spread of the log bias field's coefficients

SPLITS = layout.RECORD_SPLITS + ("test",)
DEFAULT_IMAGE_SIZE = 64
RAW_KINDS = ("scanner", "centred")  # --as_raw: scanner_phantom's scans, or this phantom's volumes
DEFAULT_COUNTS = {"mr_train": 16, "ct_train": 14, "mr_val": 4, "ct_val": 2, "mr_test": 4, "ct_test": 4}
BODY_UNIT_MM = 200.0
VIEW_CENTRE = (-0.05, 0.04)  # row, column of the image centre, body units
VIEW_HALF_WIDTH = 0.65  # body units
SLICE_THICKNESS = 2.0  # pixel widths
HEART_CENTRE = (-0.1, 0.06, -0.02)  # row, column, slice of the heart's frame, body units (anterior, left)
LABEL_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ffd92f")  # MYO, LAC, LVC, AA
# --as_raw: label values as MMWHS stores them (background, MYO, LAC, LVC, AA), MR's stored scale.
RAW_LABEL_VALUES = np.array([0, 205, 420, 500, 820], dtype=np.int16)
MR_STORED_SCALE = 1000.0


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


def per_axis_coordinates(grid):
    """The 1D coordinates of each axis when every grid array holds ascending coordinates along its
    own axis only (as `voxel_grid`'s), else None."""
    shape = np.broadcast_shapes(*(g.shape for g in grid))
    if any(g.shape != tuple(n if k == axis else 1 for k, n in enumerate(shape)) for axis, g in enumerate(grid)):
        return None
    values = [g.ravel() for g in grid]
    return values if all(np.all(np.diff(v) > 0) for v in values) else None


def bounding_box(axes, centre, semi_axes, rotation):
    """Index slices of the grid `axes` (per-axis coordinates) that hold the ellipsoid, one voxel wider."""
    matrix = np.eye(3) if rotation is None else np.asarray(rotation)
    with np.errstate(invalid="ignore"):  # 0 * inf: a cylinder has no extent across its axis
        spread = np.where(matrix == 0, 0.0, (matrix * np.asarray(semi_axes, dtype=float)) ** 2)
    extents = np.sqrt(spread.sum(axis=1))
    return tuple(slice(max(int(np.searchsorted(values, c - extent, side="left")) - 1, 0),
                       int(np.searchsorted(values, c + extent, side="right")) + 1)
                 for values, c, extent in zip(axes, centre, extents))


def inside_ellipsoid(grid, centre, semi_axes, rotation):
    offsets = [g - c for g, c in zip(grid, centre)]
    if rotation is not None:
        offsets = [sum(rotation[k, i] * offsets[k] for k in range(3)) for i in range(3)]
    return sum((offset / axis) ** 2 for offset, axis in zip(offsets, semi_axes)) <= 1.0


def ellipsoid(grid, centre, semi_axes, rotation=None):
    """Voxels inside an ellipsoid; a semi-axis of np.inf makes it a cylinder along that axis.
    On a grid of per-axis coordinates only the bounding box is tested, so large grids stay fast."""
    axes = per_axis_coordinates(grid)
    if axes is None:
        return inside_ellipsoid(grid, centre, semi_axes, rotation)
    box = bounding_box(axes, centre, semi_axes, rotation)
    mask = np.zeros(tuple(len(values) for values in axes), dtype=bool)
    mask[box] = inside_ellipsoid([g[tuple(box[k] if k == axis else slice(None) for k in range(3))]
                                  for axis, g in enumerate(grid)], centre, semi_axes, rotation)
    return mask


def quadratic_bezier(start, control, end, count):
    t = np.linspace(0.0, 1.0, count)[:, None]
    start, control, end = (np.asarray(p, dtype=float) for p in (start, control, end))
    return (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end


def tube(grid, control_points, radius):
    """Voxels within `radius` of a quadratic Bezier curve: a union of spheres half a radius apart
    (the surface then ripples by 3% of the radius)."""
    rough = quadratic_bezier(*control_points, count=16)
    length = np.linalg.norm(np.diff(rough, axis=0), axis=1).sum()
    centres = quadratic_bezier(*control_points, count=int(math.ceil(2 * length / radius)) + 1)
    mask = np.zeros(np.broadcast_shapes(*(g.shape for g in grid)), dtype=bool)
    for centre in centres:
        mask |= ellipsoid(grid, centre, (radius,) * 3)
    return mask


class Canvas:
    """A tissue map and a label map painted object by object; later objects cover earlier ones."""

    def __init__(self, grid):
        self.grid = grid
        shape = np.broadcast_shapes(*(g.shape for g in grid))
        self.tissue = np.full(shape, AIR, dtype=np.uint8)
        self.label = np.full(shape, BACKGROUND, dtype=np.uint8)

    def paint(self, mask, tissue, label=BACKGROUND):
        self.tissue[mask] = tissue
        self.label[mask] = label


class HeartFrame:
    """The heart's own coordinates: scaled, rotated and placed in the grid per subject."""

    def __init__(self, rng):
        self.centre = np.array(HEART_CENTRE) + rng.uniform(-0.04, 0.04, 3)
        self.scale = rng.uniform(0.88, 1.12)
        self.rotation = rotation_matrix(rng.uniform(-0.35, 0.35), rng.uniform(-0.25, 0.25),
                                        rng.uniform(-0.25, 0.25))

    def to_grid(self, point):
        return self.centre + self.rotation @ (self.scale * np.asarray(point, dtype=float))

    def ellipsoid(self, grid, centre, semi_axes, grow=0.0):
        return ellipsoid(grid, self.to_grid(centre), self.scale * (np.asarray(semi_axes) + grow),
                         self.rotation)

    def tube(self, grid, control_points, radius, grow=0.0):
        return tube(grid, [self.to_grid(p) for p in control_points], self.scale * (radius + grow))


def varied(rng, values, relative=0.1):
    """Each value scaled by its own uniform factor in [1 - relative, 1 + relative]."""
    values = np.asarray(values, dtype=float)
    return values * rng.uniform(1 - relative, 1 + relative, values.shape)


def moved(rng, point, distance=0.02):
    return np.asarray(point, dtype=float) + rng.uniform(-distance, distance, 3)


def draw_thorax(canvas, rng):
    """Body with subcutaneous fat, muscle, lungs, vertebral column and descending aorta."""
    grid, size = canvas.grid, rng.uniform(0.92, 1.05)
    body_axes = size * varied(rng, [0.6, 0.86, np.inf], 0.05)
    fat = rng.uniform(0.05, 0.1)
    muscle = ellipsoid(grid, (0.02, 0, 0), body_axes - [fat, fat, 0])
    canvas.paint(ellipsoid(grid, (0.02, 0, 0), body_axes), FAT)
    canvas.paint(muscle, MUSCLE)
    for side in (-1, 1):
        lung = ellipsoid(grid, moved(rng, [-0.02, side * 0.42 * size, 0]),
                         size * varied(rng, [0.36, 0.27, 0.9]))
        canvas.paint(lung & muscle, LUNG)
    spine_row = 0.32 * size
    vertebra = ellipsoid(grid, (spine_row, 0, 0), (0.09, 0.1, np.inf))
    disc_period = rng.uniform(0.24, 0.3)
    discs = (grid[2] - rng.uniform(0, disc_period)) % disc_period < 0.05
    canvas.paint(vertebra & ~discs, BONE)
    canvas.paint(vertebra & discs, MUSCLE)
    canvas.paint(ellipsoid(grid, (spine_row + 0.13, 0, 0), (0.06, 0.08, np.inf)), BONE)
    canvas.paint(ellipsoid(grid, (spine_row + 0.12, 0, 0), (0.035, 0.035, np.inf)), MUSCLE)
    aorta_radius = rng.uniform(0.045, 0.06)
    canvas.paint(ellipsoid(grid, moved(rng, [0.2 * size, 0.16 * size, 0]),
                           (aorta_radius, aorta_radius, np.inf)), BLOOD)


def heart_parts(rng, grid, heart):
    """(mask of the part grown by a distance, tissue, label), in painting order: the unlabelled
    RA, RV and pulmonary artery, then LA, AA, LV myocardium and LV cavity."""
    def part(shape, *args):
        return functools.partial(shape, grid, *args)
    pulmonary_artery = [moved(rng, p) for p in ([-0.13, -0.04, 0.1], [-0.14, 0.08, 0.3], [0.0, 0.2, 0.5])]
    aorta = [moved(rng, p) for p in ([0.02, -0.02, 0.12], [-0.04, -0.1, 0.32], [0.02, -0.08, 0.6])]
    cavity_centre, cavity_axes = moved(rng, [0.0, 0.07, -0.08]), varied(rng, [0.11, 0.11, 0.19])
    return [
        (part(heart.ellipsoid, moved(rng, [0.1, -0.2, 0.1]), varied(rng, [0.1, 0.09, 0.13])), BLOOD, BACKGROUND),
        (part(heart.ellipsoid, moved(rng, [-0.08, -0.13, -0.06]), varied(rng, [0.11, 0.15, 0.19])),
         BLOOD, BACKGROUND),
        (part(heart.tube, pulmonary_artery, rng.uniform(0.045, 0.055)), BLOOD, BACKGROUND),
        (part(heart.ellipsoid, moved(rng, [0.19, 0.05, 0.17]), varied(rng, [0.11, 0.14, 0.11])), BLOOD, LAC),
        (part(heart.tube, aorta, rng.uniform(0.055, 0.07)), BLOOD, AA),
        (part(heart.ellipsoid, cavity_centre, cavity_axes + rng.uniform(0.05, 0.065)), MYOCARDIUM, MYO),
        (part(heart.ellipsoid, cavity_centre, cavity_axes), BLOOD, LVC),
    ]


def draw_heart(canvas, rng):
    """Mediastinal soft tissue, a coat of epicardial fat around every part, then the parts."""
    heart = HeartFrame(rng)
    canvas.paint(heart.ellipsoid(canvas.grid, [0.04, -0.02, 0.03], varied(rng, [0.28, 0.34, 0.4], 0.05)),
                 MUSCLE)
    parts, fat = heart_parts(rng, canvas.grid, heart), rng.uniform(0.02, 0.035)
    for mask, _, _ in parts:
        canvas.paint(mask(grow=fat), FAT)
    for mask, tissue, label in parts:
        canvas.paint(mask(), tissue, label)


def draw_anatomy(rng, grid):
    """One subject: (tissue map, label map), both uint8 H x W x D."""
    canvas = Canvas(grid)
    draw_thorax(canvas, rng)
    draw_heart(canvas, rng)
    return canvas.tissue, canvas.label


def tissue_image(rng, tissue, table):
    """Each voxel set to its tissue's value, drawn once per subject from (mean, sd) in `table`."""
    means, spreads = np.asarray(table, dtype=float).T
    return rng.normal(means, spreads)[tissue]


def blurred(image, sigma):
    """Gaussian blur, sigma in half-widths of the (square) slice; thick slices get less in z."""
    in_plane = sigma * image.shape[0] / 2.0
    return ndimage.gaussian_filter(image, (in_plane, in_plane, in_plane / SLICE_THICKNESS))


def mr_bias_field(rng, shape):
    """`bias_field` over the grid of a volume of `shape`."""
    return bias_field(rng, voxel_grid(shape[0], shape[2]))


def bias_field(rng, grid):
    """A smooth multiplicative field: exp of a random quadratic polynomial of the grid's
    coordinates (body units, about 0 at the centre of the view)."""
    linear = rng.normal(0, MR_BIAS_STRENGTH, 3)
    quadratic = rng.normal(0, MR_BIAS_STRENGTH / 2, (3, 3))
    log_field = sum(linear[i] * grid[i] for i in range(3))
    log_field = log_field + sum(quadratic[i, j] * grid[i] * grid[j] for i in range(3) for j in range(i, 3))
    return np.exp(log_field)


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


def subject_rng(seed, modality, split, index):
    """A generator of its own per subject, so subjects do not depend on the counts of others."""
    return np.random.default_rng([seed, layout.MODALITIES.index(modality), SPLITS.index(split), index])


def raw_subject(rng, grid, modality):
    """(rendered float image: CT in HU, MR in signal relative to blood; uint8 labels)."""
    tissue, label = draw_anatomy(rng, grid)
    return RENDERERS[modality](rng, tissue), label


def prepared_subject(rng, grid, modality):
    """(preprocessed float32 image, uint8 labels) of one new subject in `modality`."""
    image, label = raw_subject(rng, grid, modality)
    return clip_and_standardise(image), label


def subject_counts(counts):
    unknown = set(counts or {}) - set(DEFAULT_COUNTS)
    if unknown:
        raise ValueError(f"unknown subject count(s) {sorted(unknown)}; expected {sorted(DEFAULT_COUNTS)}")
    merged = {**DEFAULT_COUNTS, **(counts or {})}
    if any(n < 0 for n in merged.values()):
        raise ValueError(f"subject counts must not be negative, got {merged}")
    return merged


def preview_slices(label):
    """The slices with the most LV cavity and LA cavity, and one halfway from there to the
    top of the labels (the aorta): together they show every class."""
    lv, la = (int(np.argmax((label == c).sum(axis=(0, 1)))) for c in (LVC, LAC))
    top = int(np.flatnonzero(label.any(axis=(0, 1)))[-1])
    return [lv, la, (la + top + 1) // 2]


def save_preview(path, subjects, stats):
    """A PNG of a few slices per modality, plain and with the labels overlaid in colour."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import colors, patches, pyplot

    label_map = colors.ListedColormap(LABEL_COLOURS)
    rows = [(m, overlay) for m in subjects for overlay in (False, True)]
    figure, axes = pyplot.subplots(len(rows), 3, figsize=(7.5, 2.5 * len(rows)), squeeze=False)
    for (modality, overlay), row in zip(rows, axes):
        image, label = subjects[modality]
        value_range = stats.get(modality, {"min": float(image.min()), "max": float(image.max())})
        for index, ax in zip(preview_slices(label), row):
            ax.imshow(image[:, :, index], cmap="gray", vmin=value_range["min"], vmax=value_range["max"])
            if overlay:
                ax.imshow(np.ma.masked_equal(label[:, :, index], BACKGROUND), cmap=label_map,
                          vmin=MYO - 0.5, vmax=AA + 0.5, alpha=0.45, interpolation="nearest")
            ax.set_title(f"{modality.upper()} slice {index}" + (" + labels" if overlay else ""),
                         fontsize=9)
            ax.axis("off")
    legend = [patches.Patch(color=c, label=n) for c, n in zip(LABEL_COLOURS, layout.CARDIAC_CLASSES[1:])]
    figure.legend(handles=legend, loc="lower center", ncol=len(legend), fontsize=9)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=80)
    pyplot.close(figure)


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
        if kind == "scanner":  # imported here: scanner_phantom imports this module
            from data_prep import scanner_phantom  # pylint: disable=import-outside-toplevel
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
