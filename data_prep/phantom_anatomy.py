"""The phantoms' anatomy, shared by the centred phantom (phantom.py) and the scanner-like one
(scanner_phantom.py): one subject's thorax drawn in 3D, its tissue values, a smooth bias field,
the subjects' own random generators and counts, and a preview picture.

Each subject is a thorax drawn in 3D on a voxel grid (H x W x D, slice axis 2, axial-like
slices: rows run anterior -> posterior, columns patient right -> left): body with a
subcutaneous fat layer, lungs, vertebral column, descending aorta, mediastinal soft tissue
and a heart (RA, RV, pulmonary artery, LA, ascending aorta, LV myocardium and cavity, each in
a thin coat of epicardial fat). The labels are MMWHS's five classes; RA, RV, pulmonary artery
and descending aorta carry blood but no label, so intensity alone cannot segment. Anatomy is
drawn in "body units" (1 unit = BODY_UNIT_MM; the body is about 1.7 units wide) on any grid of
body coordinates.
"""
import functools
import math

import numpy as np

from data_prep.augmentation import rotation_matrix
from sifa_synthmix.data import layout

AIR, LUNG, FAT, MUSCLE, MYOCARDIUM, BLOOD, BONE = range(7)
TISSUE_NAMES = ("air", "lung", "fat", "muscle", "myocardium", "blood", "bone")
BACKGROUND, MYO, LAC, LVC, AA = range(len(layout.CARDIAC_CLASSES))
MR_BIAS_STRENGTH = 0.25  # spread of the log bias field's coefficients
SPLITS = layout.RECORD_SPLITS + ("test",)
DEFAULT_COUNTS = {"mr_train": 16, "ct_train": 14, "mr_val": 4, "ct_val": 2, "mr_test": 4, "ct_test": 4}
BODY_UNIT_MM = 200.0
HEART_CENTRE = (-0.1, 0.06, -0.02)  # row, column, slice of the heart's frame, body units (anterior, left)
LABEL_COLOURS = ("#e41a1c", "#4daf4a", "#377eb8", "#ffd92f")  # MYO, LAC, LVC, AA
# Label values as MMWHS stores them (background, MYO, LAC, LVC, AA), in raw scans.
RAW_LABEL_VALUES = np.array([0, 205, 420, 500, 820], dtype=np.int16)


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


def bias_field(rng, grid):
    """A smooth multiplicative field: exp of a random quadratic polynomial of the grid's
    coordinates (body units, about 0 at the centre of the view)."""
    linear = rng.normal(0, MR_BIAS_STRENGTH, 3)
    quadratic = rng.normal(0, MR_BIAS_STRENGTH / 2, (3, 3))
    log_field = sum(linear[i] * grid[i] for i in range(3))
    log_field = log_field + sum(quadratic[i, j] * grid[i] * grid[j] for i in range(3) for j in range(i, 3))
    return np.exp(log_field)


def subject_rng(seed, modality, split, index):
    """A generator of its own per subject, so subjects do not depend on the counts of others."""
    return np.random.default_rng([seed, layout.MODALITIES.index(modality), SPLITS.index(split), index])


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
