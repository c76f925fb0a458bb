"""Seconds data_prep.folder takes per CT volume of a clinical size (512 x 512 x 200 at 0.7 x 0.7 x
1.25 mm, int16 HU): one labelled volume and one unlabelled (body-mask crop), prepared at the
paper's 256 x 256 and resampled in-plane to 1 mm.

    python -m benchmarks.conversion [--shape 512 512 200] [--spacing 1.0]
"""
import argparse
import pathlib
import tempfile
import time

import nibabel as nib
import numpy as np

from data_prep import conversion, folder
from data_prep.errors import exit_on_bad_input
from sifa_synthmix.data import volumes

VOXEL_MM = (0.7, 0.7, 1.25)


def synthetic_ct(shape, rng):
    """(int16 HU image, labels 1-4): an elliptic body of soft tissue in air, four boxes inside."""
    rows, columns = np.ogrid[:shape[0], :shape[1]]
    body = ((rows - shape[0] / 2) / (shape[0] * 0.4)) ** 2 + ((columns - shape[1] / 2) / (shape[1] * 0.45)) ** 2 <= 1
    image = np.where(np.broadcast_to(body[:, :, None], shape), 40, -1000).astype(np.int16)
    image += rng.normal(0, 20, shape).astype(np.int16)
    label = np.zeros(shape, np.uint8)
    for value in range(1, 5):
        corner = [n // 2 - n // 10 + value * n // 40 for n in shape]
        label[tuple(slice(c, c + n // 10) for c, n in zip(corner, shape))] = value
    image[label > 0] += 100
    return image, label


def write_raw(root, shape):
    """RAW/ct/imagesTr + labelsTr (one labelled case) and imagesTrUnlabelled (one case), and a tiny
    labelled MR folder (the source, needed for a data set)."""
    rng = np.random.default_rng(0)
    affine = np.diag([-VOXEL_MM[0], -VOXEL_MM[1], VOXEL_MM[2], 1.0])
    image, label = synthetic_ct(shape, rng)
    for sub, name, array in (("imagesTr", "big_0000", image), ("labelsTr", "big", label),
                             ("imagesTrUnlabelled", "big_unlabelled", image)):
        (root / "ct" / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, affine), str(root / "ct" / sub / f"{name}.nii.gz"))
    small, small_label = synthetic_ct((64, 64, 20), rng)
    for sub, name, array in (("imagesTr", "mr_0000", small.astype(np.float32) + 1000), ("labelsTr", "mr", small_label)):
        (root / "mr" / sub).mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(array, np.diag([4.0, 4.0, 4.0, 1.0])), str(root / "mr" / sub / f"{name}.nii.gz"))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.conversion", description=__doc__.split("\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200))
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--image_size", type=int, default=256)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        write_raw(root / "raw", tuple(args.shape))
        cases = folder.folder_cases(root / "raw" / "ct")
        settings = conversion.Settings(axcodes=volumes.AXIAL, image_size=args.image_size, spacing_mm=args.spacing,
                                       crop="auto")
        labels = folder.label_mapping({v: n for v, n in enumerate(["background", "A", "B", "C", "D"])},
                                      ["background", "A", "B", "C", "D"])
        for case in cases:
            raw = conversion.RawVolume("ct", "train", case.name,
                                       lambda c=case: volumes.load_pair(c.image, c.label), labels,
                                       labelled=case.label is not None)
            start = time.perf_counter()
            prepared = conversion.prepare_volume(raw, settings)
            seconds = time.perf_counter() - start
            kind = "labelled" if raw.labelled else "unlabelled (body-mask crop)"
            print(f"{case.name}: {kind} {tuple(args.shape)} CT -> {prepared[0].image.shape} in {seconds:.1f} s "
                  "(read, orient, resample, crop, normalise)")
        start = time.perf_counter()
        folder.main(["--mr_dir", str(root / "raw" / "mr"), "--ct_dir", str(root / "raw" / "ct"), "--output_dir",
                     str(root / "out"), "--image_size", str(args.image_size), "--spacing", str(args.spacing),
                     "--ct_labels", "A=1,B=2,C=3,D=4", "--mr_labels", "A=1,B=2,C=3,D=4"])
        print(f"python -m data_prep.folder on both CT volumes (and a tiny MR) end to end, records written: "
              f"{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    exit_on_bad_input(main)
