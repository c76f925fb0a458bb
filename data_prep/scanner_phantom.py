"""A scanner-like cardiac phantom written as raw scans, for data_prep.folder (GitHub issue 34,
point 2): adaptation that works only on the centred phantom of data_prep/phantom.py does not
work on users' scans, which are messier.

Each subject is data_prep.phantom_anatomy's thorax (draw_anatomy: thorax, heart, MMWHS's labels), placed
in a scanner and scanned on a grid of its own:

- Pose: body size, a roll / pitch / yaw on the table and an offset from the isocentre vary per
  subject; the heart, left-anterior in the body, varies in size, position and orientation
  (phantom_anatomy.HeartFrame). The field of view is centred on the heart, so the body is off-centre.
- Geometry per modality and subject (PROTOCOLS): matrix, in-plane spacing, slice thickness and
  coverage. CT is axial on a square matrix; MR's field of view may cut the body at its sides
  (left-right is the frequency-encode axis, the phase-encode axis covers the body: no
  wrap-around) and the first OBLIQUE_MR_TRAIN MR training stacks are tilted 15-20 degrees.
- Rendering: the anatomy is drawn in body units on a grid at the scan's acquired resolution,
  each voxel given its tissue's subject mean plus a smooth texture (a distribution per tissue,
  not a constant), then sampled on sub-slices of the scan's slices and averaged into them
  (partial volume); labels take the sub-slices' majority.
- CT (int16 HU): a patient table under the body, in-plane blur, streaks along lines through dense
  contrast and bone, correlated noise, and a padding value outside the circular reconstruction
  field of view.
- MR (uint16, arbitrary units with a per-subject scale): in-plane blur, a smooth within-subject
  bias field, a ghost along the phase-encode axis and Rician noise.

Written as one nnU-Net v2 style folder per modality (DIR/mr, DIR/ct: dataset.json, imagesTr/,
labelsTr/, imagesTs/, labelsTs/), in a mix of formats (FORMATS): MR training scans alternate
NIfTI and NRRD; CT training scans are DICOM series as a scanner writes them (stored value = HU -
RescaleIntercept, LPS ImagePositionPatient / ImageOrientationPatient, Pixel Padding Value), CT
test scans MHA with NIfTI labels. CT training and validation scans have no labels (no
ct/labelsTr/): the unlabelled target of domain adaptation, which has no labels to validate on
either; data_prep.folder takes validation scans from labelled ones only.

    python -m data_prep.phantom --as_raw raw/scanner [--seed 0] [--mr_train 16 ...]
    python -m data_prep.folder --mr_dir raw/scanner/mr --ct_dir raw/scanner/ct --mr_val_count 4 \\
        --output_dir data/scanner --image_size 64

Sources of the figures (the rest, marked "typical", are ranges chosen to look like scans):
- CT numbers: the Hounsfield scale (air -1000, water 0); typical values in contrast-enhanced
  cardiac CT angiography: blood 250-450 HU, enhanced myocardium 100-140, fat -120 to -80,
  muscle 40-60, lung -900 to -700, cortical bone above 700; image noise 20-35 HU SD.
- CT artefacts: streaks and dark bands from beam hardening near dense contrast and bone, and
  partial volume averaging in thick slices (Barrett & Keat 2004, RadioGraphics 24:1679).
- CT padding: scanners store a Pixel Padding Value (0028,0120) outside the reconstruction circle,
  -2048 or -3024 HU after rescaling depending on the vendor (DICOM PS3.3, General Equipment
  Module).
- MR contrast: balanced SSFP signal grows with T2/T1, so blood and fat are bright and
  myocardium and muscle dark (Scheffler & Lehnhardt 2003, Eur Radiol 13:2409).
- MR magnitude noise is Rician, non-zero where the signal is zero (Gudbjartsson & Patz 1995,
  Magn Reson Med 34:910); intensity non-uniformity is a smooth multiplicative field (Sled et al.
  1998, IEEE TMI 17:87, N3); periodic motion makes ghosts along the phase-encode axis (Wood &
  Henkelman 1985, Med Phys 12:143).
"""
import dataclasses
import json
import math
import pathlib
import uuid
from typing import Optional

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from data_prep import phantom_anatomy as anatomy
from data_prep.augmentation import rotation_matrix
from sifa_synthmix import files
from sifa_synthmix.data import layout

GENERATOR = "data_prep.scanner_phantom"


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Uniform ranges one modality's scans are drawn from; `acquired_fraction` is the part of the
    stored matrix that was acquired (the rest interpolated), which sets the anatomy's resolution."""
    matrix: tuple  # voxels left-right (CT's matrix is square; MR's rows span the body front to back)
    pixel_mm: tuple
    thickness_mm: tuple
    coverage_mm: tuple  # along the slice normal
    acquired_fraction: float

    def coarser(self, factor):
        """The protocol with voxels `factor` times larger and the same fields of view."""
        return dataclasses.replace(self, matrix=tuple(max(8, round(n / factor)) for n in self.matrix),
                                   pixel_mm=tuple(p * factor for p in self.pixel_mm),
                                   thickness_mm=tuple(t * factor for t in self.thickness_mm))


# Typical, with smaller matrices and coarser pixels than clinical scans so that a data set
# writes in seconds: CT angiography reconstructs 512 x 512 at 0.6-0.9 mm in 0.5-3 mm slices;
# cine bSSFP stacks are 1.2-1.8 mm in-plane, 4-8 mm thick, acquired at about 70% of that.
PROTOCOLS = {"ct": Protocol(matrix=(160, 256), pixel_mm=(1.4, 2.2), thickness_mm=(1.5, 3.0),
                            coverage_mm=(150.0, 190.0), acquired_fraction=1.0),
             "mr": Protocol(matrix=(128, 192), pixel_mm=(1.2, 1.8), thickness_mm=(4.0, 8.0),
                            coverage_mm=(130.0, 170.0), acquired_fraction=0.7)}

# Where a subject lies (typical): body size, rotation on the table, offset of the body's axis
# from the isocentre (lateral, vertical, table position).
BODY_SCALE = (0.9, 1.1)  # times anatomy.BODY_UNIT_MM: with draw_thorax's sizes, chests 270-420 mm wide
POSE_DEGREES = (6.0, 3.0, 3.0)  # largest roll (about the long axis), pitch and yaw
BODY_OFFSET_MM = ((-40.0, 40.0), (-40.0, 20.0), (-200.0, 200.0))  # RAS x, y, z
BODY_TO_RAS = np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # (row P, column L, slice S)
# Rows, columns: half the largest body draw_thorax draws (semi-axes 0.6 and 0.86 times size and
# variation up to 1.05 each, centre row 0.02), body units; MR's phase-encode rows span this body.
BODY_HALF_EXTENT = (0.7, 0.96)
CENTRE_JITTER_MM = 15.0  # the field of view is centred on the heart by eye
BELOW_HEART = (0.42, 0.5)  # coverage below the heart's centre, body units: the LV apex is about 0.4 below
OBLIQUE_DEGREES = (15.0, 20.0)
OBLIQUE_MR_TRAIN = 2  # the first two MR training stacks are oblique

MAX_SUBSLICE_MM = 1.5  # slices are rendered on sub-slices at most this thick, at least MIN_SUBSLICES
MIN_SUBSLICES = 2
TEXTURE_SIGMA_MM = 5.0  # smoothness of the per-tissue texture (typical)
COARSE_FIELD_SIGMA = 2.0  # a smooth field is filtered noise on a grid this many voxels per sigma, interpolated

# (nominal mean, SD of the subject's mean, SD of the texture within the subject) per tissue in
# phantom's order: air, lung, fat, muscle, myocardium, blood, bone. CT in HU (module docstring;
# the drawn vertebrae are bone throughout, at cortical bone's values).
CT_TISSUE_HU = ((-1000.0, 0.0, 0.0), (-800.0, 40.0, 30.0), (-100.0, 8.0, 8.0), (50.0, 4.0, 6.0),
                (120.0, 8.0, 8.0), (350.0, 50.0, 20.0), (900.0, 80.0, 120.0))
# MR bSSFP signal relative to blood (typical, in the order of Scheffler & Lehnhardt 2003; bone
# stands for vertebral marrow).
MR_TISSUE_SIGNAL = ((0.0, 0.0, 0.0), (0.05, 0.01, 0.02), (0.85, 0.08, 0.06), (0.18, 0.03, 0.03),
                    (0.25, 0.03, 0.03), (1.0, 0.05, 0.08), (0.3, 0.05, 0.06))

PSF_SIGMA_PX = 0.7  # in-plane blur of the scanner's point spread function (typical)
CT_NOISE_SD_HU = (20.0, 35.0)
CT_NOISE_SIGMA_PX = 1.0  # in-plane Gaussian filter standing in for the reconstruction kernel (typical)
PADDING_HU = (-2048, -3024)  # alternating by subject index, as from two vendors
RESCALE_INTERCEPT = -1024  # stored DICOM value = HU - intercept, as CT scanners write
STREAK_SOURCE_HU = 300.0  # dense contrast and bone
STREAK_COUNT = (6, 14)
STREAK_HU = (30.0, 100.0)  # amplitude between the dense voxels, either sign (typical)
STREAK_WIDTH_MM = 1.5  # SD across a streak
STREAK_DECAY_MM = 60.0  # beyond the dense voxels a streak fades as STREAK_DECAY_MM / (STREAK_DECAY_MM + distance)
BODY_EDGE_HU = -500.0  # above: body (or table), below: air
TABLE_HU = 150.0  # a carbon-fibre table top (typical)
TABLE_THICKNESS_MM = 8.0
TABLE_HALF_WIDTH_MM = 225.0
TABLE_RADIUS_MM = 600.0  # curvature of the table top, rising to the sides
TABLE_GAP_MM = (5.0, 15.0)  # the mattress between back and table, shown as air

MR_BLOOD_SNR = (25.0, 50.0)  # blood signal / noise SD of each complex channel (typical)
MR_SCALE = (400.0, 1600.0)  # stored units per blood signal (typical of magnitude DICOMs)
PHASE_AXIS = 1  # MR arrays: rows (anterior-posterior) are phase-encoded
GHOST_FRACTION = (0.05, 0.1)  # of the image, shifted along PHASE_AXIS (typical)
GHOST_SHIFT = (0.25, 0.5)  # of the phase-encode field of view

DICOM = "dicom"  # a DICOM series: a folder of one file per slice
# (image ending, label ending or None: unlabelled) per modality and split, taken in turn by
# subject index.
FORMATS = {"mr": {"train": ((".nii.gz", ".nii.gz"), (".nrrd", ".nrrd")),
                  "val": ((".nii.gz", ".nii.gz"), (".nrrd", ".nrrd")),
                  "test": ((".nii.gz", ".nii.gz"),)},
           "ct": {"train": ((DICOM, None),), "val": ((DICOM, None),), "test": ((".mha", ".nii.gz"),)}}
TARGET_LABEL_ENDING = ".nii.gz"  # CT training labels, where written (write_raw's target_labels)
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"  # DICOM SOP class UID
MANUFACTURER = "SIFA scanner phantom"
PREVIEW_WINDOWS = {"ct": (-200.0, 600.0), "mr": (0.0, 99.5)}  # CT: HU; MR: percentiles of the image


@dataclasses.dataclass(frozen=True)
class ScanGrid:
    """A scan's voxel grid: `shape` along the affine's axes (x: columns, y: rows, z: slices)."""
    shape: tuple
    affine: np.ndarray  # voxel -> world (RAS+, mm)
    subslices: int  # rendered sub-slices per slice

    @property
    def spacing(self):
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    def fine_affine(self):
        """The affine of the grid with every slice cut into `subslices` thinner ones."""
        split = np.eye(4)
        split[2, 2], split[2, 3] = 1.0 / self.subslices, -(self.subslices - 1) / (2.0 * self.subslices)
        return self.affine @ split


@dataclasses.dataclass(frozen=True)
class Scan:
    """One subject as scanned: the stored image, class labels (0-4) on its grid, and its record."""
    image: np.ndarray
    label: np.ndarray
    grid: ScanGrid
    artefacts: dict


@dataclasses.dataclass(frozen=True)
class WrittenScan:
    """What `write_raw` wrote for one subject; `label` is None for an unlabelled scan."""
    modality: str
    split: str
    case: str
    image: pathlib.Path
    label: Optional[pathlib.Path]
    shape: tuple
    affine: np.ndarray  # voxel -> world (RAS+, mm), as read back by sifa_synthmix.data.scans.read_scan
    artefacts: dict


def along(values, axis):
    """A 1D array shaped to vary along `axis` of a 3D grid (the others of length 1)."""
    return np.reshape(values, [-1 if k == axis else 1 for k in range(3)])


def body_unit_mm(pose):
    """Millimetres per body unit of a subject's pose."""
    return float(np.linalg.norm(pose[:3, 0]))


def homogeneous(matrix=None, offset=(0.0, 0.0, 0.0)):
    """A 4 x 4 affine of a 3 x 3 matrix (identity) and an offset."""
    result = np.eye(4)
    result[:3, :3] = np.eye(3) if matrix is None else matrix
    result[:3, 3] = offset
    return result


def subject_pose(rng):
    """Body units -> world (RAS+, mm) of one subject lying on the table."""
    unit_mm = anatomy.BODY_UNIT_MM * rng.uniform(*BODY_SCALE)
    roll, pitch, yaw = np.radians(rng.uniform(-1.0, 1.0, 3) * POSE_DEGREES)
    offset = [rng.uniform(*limits) for limits in BODY_OFFSET_MM]
    return homogeneous(rotation_matrix(roll, pitch, yaw) @ (unit_mm * BODY_TO_RAS), offset)


def tilt(rng):
    """A rotation of 15-20 degrees about a random axis in the axial plane."""
    angle, about = np.radians(rng.uniform(*OBLIQUE_DEGREES)), rng.uniform(0.0, 2 * np.pi)
    axis = np.array([math.cos(about), math.sin(about), 0.0])
    cross = np.array([[0.0, -axis[2], axis[1]], [axis[2], 0.0, -axis[0]], [-axis[1], axis[0], 0.0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def scan_grid(rng, modality, protocol, pose, oblique):
    """The grid of one scan, centred on the heart: axes toward the patient's left (x), back (y)
    and head (z; MR stacks are written feet-first or head-first), tilted when `oblique`."""
    pixel, thickness = rng.uniform(*protocol.pixel_mm), rng.uniform(*protocol.thickness_mm)
    coverage = rng.uniform(*protocol.coverage_mm)
    columns = int(rng.integers(protocol.matrix[0], protocol.matrix[1] + 1))
    unit_mm = body_unit_mm(pose)
    rows = columns if modality == "ct" else int(math.ceil(2 * BODY_HALF_EXTENT[0] * unit_mm / pixel))
    slices = max(1, round(coverage / thickness))
    heart = (pose @ [*anatomy.HEART_CENTRE, 1.0])[:3]
    centre = heart + np.append(rng.uniform(-CENTRE_JITTER_MM, CENTRE_JITTER_MM, 2), 0.0)
    if modality == "mr":  # the phase-encode field of view is centred on the body
        centre[1] = pose[1, 3] + rng.uniform(-CENTRE_JITTER_MM, CENTRE_JITTER_MM)
    rotation = tilt(rng) if oblique else np.eye(3)
    head_first = modality == "ct" or rng.uniform() < 0.5
    directions = rotation @ np.diag([-1.0, -1.0, 1.0 if head_first else -1.0])
    centre += rotation[:, 2] * (slices * thickness / 2 - rng.uniform(*BELOW_HEART) * unit_mm)
    shape = (columns, rows, slices)
    linear = directions * [pixel, pixel, thickness]
    subslices = max(MIN_SUBSLICES, int(math.ceil(thickness / MAX_SUBSLICE_MM)))
    return ScanGrid(shape, homogeneous(linear, centre - linear @ ((np.asarray(shape) - 1) / 2.0)), subslices)


def corners(shape):
    """The 8 outer corners of an array's voxels, as homogeneous index columns."""
    return np.array([[i, j, k, 1.0] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                     for k in (-0.5, shape[2] - 0.5)]).T


def anatomy_grid(grid, pose, step):
    """(per-axis body coordinates, index -> body affine) of a grid with `step` body units between
    voxels, covering where the scan's slab meets the largest body."""
    body = (np.linalg.inv(pose) @ grid.affine @ corners(grid.shape))[:3]
    limits = np.array([*BODY_HALF_EXTENT, np.inf])
    low = np.maximum(body.min(axis=1), -limits) - step
    high = np.minimum(body.max(axis=1), limits) + step
    axes = [(lo + step * np.arange(int(math.ceil((hi - lo) / step)) + 1)).astype(np.float32)
            for lo, hi in zip(low, high)]
    return axes, homogeneous(step * np.eye(3), low)


def upsampled(coarse, shape):
    """Linear interpolation of a 3D array onto `shape` voxels (corners onto corners), one axis at
    a time: several times faster than ndimage.zoom."""
    for axis, n in enumerate(shape):
        position = np.linspace(0.0, coarse.shape[axis] - 1, n)
        low = np.minimum(position.astype(int), coarse.shape[axis] - 2)
        weight = along((position - low).astype(np.float32), axis)
        coarse = np.take(coarse, low, axis) * (1 - weight) + np.take(coarse, low + 1, axis) * weight
    return coarse


def smooth_field(rng, shape, sigma_voxels):
    """A random field of about unit SD that varies over about `sigma_voxels`: Gaussian-filtered
    noise on a grid COARSE_FIELD_SIGMA voxels per sigma, interpolated up."""
    factor = max(sigma_voxels / COARSE_FIELD_SIGMA, 1.0)
    coarse = rng.standard_normal([int(math.ceil(n / factor)) + 1 for n in shape], dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma_voxels / factor, mode="wrap")
    return upsampled(coarse / coarse.std(), shape)


def tissue_intensity(rng, tissue, table, sigma_voxels):
    """Each voxel: its tissue's subject mean (drawn from the table's nominal value and spread) plus
    a texture of the tissue's SD, each tissue its own mix of two smooth random fields."""
    table = np.asarray(table, dtype=float)
    image = anatomy.tissue_image(rng, tissue, table[:, :2]).astype(np.float32)
    mixes = rng.uniform(0.0, 2 * np.pi, len(table))
    for weights in (np.cos(mixes), np.sin(mixes)):
        image += (table[:, 2] * weights).astype(np.float32)[tissue] * smooth_field(rng, tissue.shape, sigma_voxels)
    return image


def index_box(grid, to_world, shape):
    """Slices of the scan grid that hold an array of `shape` placed by `to_world` (index -> world)."""
    inside = (np.linalg.inv(grid.affine) @ to_world @ corners(shape))[:3]
    return tuple(slice(max(int(math.floor(lo + 0.5)), 0), min(int(math.ceil(hi + 0.5)), n))
                 for lo, hi, n in zip(inside.min(axis=1), inside.max(axis=1), grid.shape))


def on_sub_slices(grid, to_world, values, order, fill):
    """(box of the scan grid, samples shaped (x, y, slices, sub-slices)): `values`, an array placed
    by `to_world` (index -> world), sampled on every slice's sub-slices where it lies."""
    box = index_box(grid, to_world, values.shape)
    n = grid.subslices
    start = [box[0].start, box[1].start, box[2].start * n]
    shape = (box[0].stop - box[0].start, box[1].stop - box[1].start, (box[2].stop - box[2].start) * n)
    to_values = np.linalg.inv(to_world) @ grid.fine_affine() @ homogeneous(offset=start)
    fine = ndimage.affine_transform(values, to_values[:3, :3], to_values[:3, 3], output_shape=shape, order=order,
                                    cval=fill)
    return box, fine.reshape(shape[:2] + (-1, n))


def on_scan(grid, to_world, intensity, label, air):
    """(image, labels) on the scan's grid: each slice the mean of its sub-slices (partial volume),
    sampled linearly, and their majority label (ties to the lower class, background first),
    sampled nearest around the labelled voxels only."""
    box, fine = on_sub_slices(grid, to_world, intensity, 1, air)
    image = np.full(grid.shape, air, dtype=np.float32)
    image[box] = fine.mean(axis=3)
    labelled = ndimage.find_objects((label != anatomy.BACKGROUND).astype(np.uint8))[0]
    box, fine = on_sub_slices(grid, to_world @ homogeneous(offset=[s.start for s in labelled]), label[labelled], 0,
                              anatomy.BACKGROUND)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    labels[box] = np.argmax([(fine == c).sum(axis=3, dtype=np.uint8) for c in range(len(layout.CARDIAC_CLASSES))],
                            axis=0)
    return image, labels


def in_plane_world(grid):
    """World (RAS) x and y of every voxel of an axial grid's slices, each (columns, rows)."""
    i, j = np.meshgrid(np.arange(grid.shape[0]), np.arange(grid.shape[1]), indexing="ij")
    return [grid.affine[axis, 0] * i + grid.affine[axis, 1] * j + grid.affine[axis, 3] for axis in (0, 1)]


def add_table(rng, image, grid):
    """A curved table top under the body's back (a gap of mattress, shown as air, between them),
    centred on the isocentre; where it meets nothing but air."""
    x, y = in_plane_world(grid)
    back = y[(image > BODY_EDGE_HU).any(axis=2)].min()
    top = back - rng.uniform(*TABLE_GAP_MM) + x ** 2 / (2 * TABLE_RADIUS_MM)
    table = (y <= top) & (y > top - TABLE_THICKNESS_MM) & (np.abs(x) <= TABLE_HALF_WIDTH_MM)
    image[table[:, :, None] & (image < BODY_EDGE_HU)] = TABLE_HU


def streaks(rng, image, grid):
    """Bands of either sign along lines through pairs of dense voxels (contrast, bone), strongest
    between them and fading beyond (beam hardening, Barrett & Keat 2004); each slice's as strong
    as its share of dense voxels."""
    dense = image > STREAK_SOURCE_HU
    sources = np.flatnonzero(dense.any(axis=2))
    if not sources.size:
        return 0.0
    x, y = np.meshgrid(np.arange(grid.shape[0]) * grid.spacing[0], np.arange(grid.shape[1]) * grid.spacing[1],
                       indexing="ij")
    pattern = np.zeros(x.shape)
    for _ in range(int(rng.integers(STREAK_COUNT[0], STREAK_COUNT[1] + 1))):
        ends = np.array(np.unravel_index(rng.choice(sources, 2), x.shape)).T * grid.spacing[:2]
        length = np.linalg.norm(ends[1] - ends[0])
        direction = (ends[1] - ends[0]) / length if length else np.array([1.0, 0.0])
        along = (x - ends[0][0]) * direction[0] + (y - ends[0][1]) * direction[1]
        across = (y - ends[0][1]) * direction[0] - (x - ends[0][0]) * direction[1]
        beyond = np.maximum(np.maximum(-along, along - length), 0.0)
        pattern += (rng.choice([-1.0, 1.0]) * rng.uniform(*STREAK_HU) * np.exp(-0.5 * (across / STREAK_WIDTH_MM) ** 2)
                    * STREAK_DECAY_MM / (STREAK_DECAY_MM + beyond))
    per_slice = dense.sum(axis=(0, 1))
    return (pattern[:, :, None] * (per_slice / per_slice.max())).astype(np.float32)


def correlated_noise(rng, shape, sd, sigma_px):
    """Gaussian noise of SD `sd`, correlated in-plane by a Gaussian filter of `sigma_px` pixels."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), (sigma_px, sigma_px, 0.0))
    return noise * np.float32(sd / noise.std())


def outside_circle(shape):
    """Pixels (columns x rows) whose centres lie outside the circle inscribed in the matrix."""
    i, j = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    return np.hypot(i - (shape[0] - 1) / 2, j - (shape[1] - 1) / 2) > shape[0] / 2


def blurred(image):
    """The image blurred in-plane by the point spread function."""
    return ndimage.gaussian_filter(image, (PSF_SIGMA_PX, PSF_SIGMA_PX, 0.0))


def ct_scan(rng, image, grid, padding_hu):
    """(int16 HU image, record): table, blur, streaks, correlated noise, padding outside the circle."""
    add_table(rng, image, grid)
    image = blurred(image)
    image += streaks(rng, image, grid)
    noise_sd = rng.uniform(*CT_NOISE_SD_HU)
    image += correlated_noise(rng, image.shape, noise_sd, CT_NOISE_SIGMA_PX)
    image[outside_circle(grid.shape)] = padding_hu
    info = np.iinfo(np.int16)
    return np.clip(np.round(image), info.min, info.max).astype(np.int16), {
        "padding_hu": padding_hu, "noise_sd_hu": round(noise_sd, 2),
        "reconstruction_diameter_mm": round(float(grid.shape[0] * grid.spacing[0]), 2)}


def scan_bias(rng, grid):
    """anatomy.bias_field over the scan's voxels, in the scan's own axes about its centre."""
    coordinates = [(np.arange(n) - (n - 1) / 2.0) * s / anatomy.BODY_UNIT_MM for n, s in zip(grid.shape, grid.spacing)]
    return anatomy.bias_field(rng, [along(c, axis) for axis, c in enumerate(coordinates)]).astype(np.float32)


def mr_scan(rng, image, grid):
    """(uint16 image, record): blur, bias field, a ghost along the phase-encode axis, Rician noise, scale."""
    image = blurred(image) * scan_bias(rng, grid)
    shift = int(round(grid.shape[PHASE_AXIS] * rng.uniform(*GHOST_SHIFT)))
    fraction = rng.uniform(*GHOST_FRACTION)
    image += np.float32(fraction) * np.roll(image, shift, axis=PHASE_AXIS)
    sigma = 1.0 / rng.uniform(*MR_BLOOD_SNR)
    real, imaginary = rng.standard_normal((2,) + image.shape, dtype=np.float32) * np.float32(sigma)
    scale = rng.uniform(*MR_SCALE)
    stored = np.round(np.hypot(image + real, imaginary) * scale)
    tilted = np.degrees(math.acos(min(1.0, abs(grid.affine[2, 2]) / grid.spacing[2])))
    return np.clip(stored, 0, np.iinfo(np.uint16).max).astype(np.uint16), {
        "oblique_degrees": round(float(tilted), 2), "ghost_shift_voxels": shift, "ghost_fraction": round(fraction, 4),
        "phase_axis": PHASE_AXIS, "noise_sd": round(sigma * scale, 2), "scale": round(scale, 2)}


def scan_subject(seed, modality, split, index, voxel_scale=1.0):
    """One subject drawn, placed and scanned; its own generator (anatomy.subject_rng)."""
    rng = anatomy.subject_rng(seed, modality, split, index)
    protocol = PROTOCOLS[modality].coarser(voxel_scale)
    pose = subject_pose(rng)
    grid = scan_grid(rng, modality, protocol, pose, oblique=modality == "mr" and split == "train"
                     and index < OBLIQUE_MR_TRAIN)
    step_mm = grid.spacing[0] / protocol.acquired_fraction
    axes, to_body = anatomy_grid(grid, pose, step_mm / body_unit_mm(pose))
    tissue, label = anatomy.draw_anatomy(rng, [along(a, axis) for axis, a in enumerate(axes)])
    table = CT_TISSUE_HU if modality == "ct" else MR_TISSUE_SIGNAL
    intensity = tissue_intensity(rng, tissue, table, TEXTURE_SIGMA_MM / step_mm)
    image, labels = on_scan(grid, pose @ to_body, intensity, label, air=table[anatomy.AIR][0])
    if modality == "ct":
        image, artefacts = ct_scan(rng, image, grid, PADDING_HU[index % len(PADDING_HU)])
    else:
        image, artefacts = mr_scan(rng, image, grid)
    return Scan(image, labels, grid, artefacts)


def sitk_image(array, affine):
    """A SimpleITK image (LPS geometry) of an (x, y, z) array with a RAS affine."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = np.diag([-1.0, -1.0, 1.0]) @ np.asarray(affine)[:3]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    return image


def write_file(path, array, affine):
    """A NIfTI file (nibabel) or one SimpleITK writes from its ending (.nrrd, .mha)."""
    if path.name.endswith(".nii.gz"):
        nifti = nib.Nifti1Image(array, affine)
        nifti.header.set_xyzt_units("mm")
        nib.save(nifti, str(path))
    else:
        sitk.WriteImage(sitk_image(array, affine), str(path), True)


def dicom_uid(*parts):
    """A UID of the UUID-derived form (2.25.N), the same for the same parts."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '/'.join(map(str, (GENERATOR,) + parts))).int}"


def write_dicom_series(folder, hu, affine, case, seed, artefacts):
    """One file per slice, as a CT scanner stores them: stored value = HU - RESCALE_INTERCEPT,
    ImagePositionPatient / ImageOrientationPatient in LPS, the padding as Pixel Padding Value."""
    folder.mkdir(parents=True)
    image = sitk_image(hu, affine)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    shared = {"0008|0016": CT_IMAGE_STORAGE, "0008|0060": "CT", "0008|0070": MANUFACTURER, "0010|0010": case,
              "0010|0020": case, "0018|0050": f"{image.GetSpacing()[2]:.4f}",
              "0018|1100": f"{artefacts['reconstruction_diameter_mm']:.2f}", "0018|5100": "HFS",
              "0020|000d": dicom_uid(seed, case, "study"), "0020|000e": dicom_uid(seed, case, "series"),
              "0020|0052": dicom_uid(seed, case, "frame"),
              "0020|0037": "\\".join(f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])),
              "0028|0120": str(artefacts["padding_hu"] - RESCALE_INTERCEPT),
              "0028|1052": str(RESCALE_INTERCEPT), "0028|1053": "1"}
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    slices = hu.shape[2]
    for k in range(slices):
        part = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        tags = {**shared, "0008|0018": dicom_uid(seed, case, k), "0020|0013": str(slices - k),  # from the head down
                "0020|0032": "\\".join(f"{p:.4f}" for p in position), "0020|1041": f"{position[2]:.4f}"}
        for tag, value in tags.items():
            part.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{slices - k:04d}.dcm"))
        writer.Execute(part)


def write_scan(scan, root, modality, split, index, seed, target_labels=False):
    """Writes one scan's image (and labels, unless unlabelled: CT training scans get NIfTI labels
    with `target_labels`); returns their paths under `root`."""
    image_ending, label_ending = FORMATS[modality][split][index % len(FORMATS[modality][split])]
    label_ending = label_ending or (TARGET_LABEL_ENDING if target_labels else None)
    case = f"{modality}_{split}_{index:02d}"
    images, labels = (root / modality / name for name in (("imagesTs", "labelsTs") if split == "test"
                                                          else ("imagesTr", "labelsTr")))
    images.mkdir(parents=True, exist_ok=True)
    if image_ending == DICOM:
        image_path = images / case
        write_dicom_series(image_path, scan.image, scan.grid.affine, case, seed, scan.artefacts)
    else:
        image_path = images / f"{case}_0000{image_ending}"
        write_file(image_path, scan.image, scan.grid.affine)
    label_path = None
    if label_ending:
        labels.mkdir(parents=True, exist_ok=True)
        label_path = labels / f"{case}{label_ending}"
        write_file(label_path, anatomy.RAW_LABEL_VALUES[scan.label], scan.grid.affine)
    return case, image_path, label_path


def dataset_json(modality, counts, seed, voxel_scale, target_labels):
    """A modality folder's dataset.json: MMWHS's label values by name, its one channel."""
    labels = {"background": 0, **{name: int(anatomy.RAW_LABEL_VALUES[index])
                                  for index, name in enumerate(layout.CARDIAC_CLASSES) if index}}
    return {"name": f"SIFA scanner phantom {modality.upper()}", "channel_names": {"0": modality.upper()},
            "labels": labels, "numTraining": counts[f"{modality}_train"] + counts[f"{modality}_val"],
            "numTest": counts[f"{modality}_test"],
            "provenance": {"generator": GENERATOR, "seed": seed, "voxel_scale": voxel_scale,
                           "target_labels": target_labels, "counts": counts}}


def preview_arrays(scan, modality):
    """(image, class labels) as anatomy.save_preview shows them (rows anterior -> posterior,
    slices feet -> head), and the display window."""
    low, high = PREVIEW_WINDOWS[modality]
    if modality == "mr":
        low, high = np.percentile(scan.image, [low, high])
    head_up = slice(None, None, 1 if scan.grid.affine[2, 2] > 0 else -1)
    return ((scan.image.transpose(1, 0, 2)[:, :, head_up], scan.label.transpose(1, 0, 2)[:, :, head_up]),
            {"min": float(low), "max": float(high)})


def write_raw(output_dir, seed=0, counts=None, voxel_scale=1.0, target_labels=False):
    """Writes the scanner-like phantom as raw scans to `output_dir` (absent or empty): DIR/mr and
    DIR/ct for data_prep.folder, and DIR/preview.png; returns a `WrittenScan` per subject.

    `counts` overrides anatomy.DEFAULT_COUNTS entries; validation subjects go to imagesTr (the
    MR ones labelled: give data_prep.folder --mr_val_count). `voxel_scale` > 1 makes voxels that
    many times larger (same fields of view), for fast tests. `target_labels` writes the CT training
    and validation scans' labels too (ct/labelsTr/), for the oracle of a comparison, which trains on
    them; SIFA never reads target labels. Everything is written to a staging
    folder renamed into place at the end, so `output_dir` is either finished or untouched.
    """
    counts = anatomy.subject_counts(counts)
    output_dir = pathlib.Path(output_dir)
    written, previews, windows = [], {}, {}
    with files.staged_folder(output_dir) as staging:
        for modality in layout.MODALITIES:
            (staging / modality).mkdir()
            for split in anatomy.SPLITS:
                for index in range(counts[f"{modality}_{split}"]):
                    scan = scan_subject(seed, modality, split, index, voxel_scale)
                    case, image_path, label_path = write_scan(scan, staging, modality, split, index, seed,
                                                              target_labels)
                    written.append(WrittenScan(
                        modality, split, case, output_dir / image_path.relative_to(staging),
                        label_path and output_dir / label_path.relative_to(staging), scan.image.shape,
                        scan.grid.affine, scan.artefacts))
                    if modality not in previews:
                        previews[modality], windows[modality] = preview_arrays(scan, modality)
            files.atomic_write_text(staging / modality / "dataset.json",
                                     json.dumps(dataset_json(modality, counts, seed, voxel_scale, target_labels),
                                                indent=2) + "\n")
        if previews:
            anatomy.save_preview(staging / "preview.png", previews, windows)
    return written
