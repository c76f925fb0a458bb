"""Random 3D affine copies of training volumes (the converters' ``--augment N``).

Each copy rotates the volume about all three axes and scales each axis, in millimetres (so
anisotropic voxels rotate correctly), about a given centre voxel: the crop centre, so the
structure of interest stays in the crop. Copies are seeded by (seed, volume name, copy number),
so they do not depend on the order or the process volumes are prepared in.
"""
import math
import zlib

import numpy as np
from scipy import ndimage

MAX_ROTATION_DEGREES = 10.0
SCALE_RANGE = (0.9, 1.1)


def rotation_matrix(about_slice_axis, about_row_axis, about_column_axis):
    """Rotation (local -> grid coordinates) composed of rotations about the three axes, radians."""
    def plane_rotation(angle, i, j):
        matrix = np.eye(3)
        matrix[[i, i, j, j], [i, j, i, j]] = (math.cos(angle), -math.sin(angle),
                                              math.sin(angle), math.cos(angle))
        return matrix
    return (plane_rotation(about_slice_axis, 0, 1) @ plane_rotation(about_row_axis, 1, 2)
            @ plane_rotation(about_column_axis, 0, 2))


def copy_rng(seed, name, copy):
    return np.random.default_rng([seed, zlib.crc32(name.encode("utf-8")), copy])


def random_affine(rng):
    """A 3 x 3 mm-space matrix: uniform rotations within MAX_ROTATION_DEGREES about each axis
    after a uniform scale within SCALE_RANGE per axis."""
    angles = np.radians(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, 3))
    return rotation_matrix(*angles) @ np.diag(rng.uniform(*SCALE_RANGE, 3))


def transformed(image, labels, spacing, centre_voxel, matrix):
    """(image, labels) mapped by the mm-space `matrix` about `centre_voxel`, on the same grid:
    linear interpolation with edge values for the image, nearest class and background outside
    for the labels."""
    scale = np.diag(spacing)
    output_to_input = np.linalg.inv(scale) @ np.linalg.inv(matrix) @ scale
    centre = np.asarray(centre_voxel, dtype=float)
    offset = centre - output_to_input @ centre
    image = ndimage.affine_transform(image, output_to_input, offset, order=1, mode="nearest")
    labels = ndimage.affine_transform(labels, output_to_input, offset, order=0, mode="constant", cval=0)
    return image, labels
