"""The prepared-data layout every dataset is written in (phantom, MMWHS, AOS) and the trainer reads.

    DIR/{mr,ct}/{train,val}/*.tfrecords   3-slice records in the official format
    DIR/{mr,ct}/test/*.npz                 arr_0 float32 image, arr_1 integer labels, slice axis 2
    DIR/datalists/{mr,ct}_{train,val}.txt  record paths, relative to the list
    DIR/stats.json                         {"mr": {"min": .., "max": ..}, "ct": {..}}
    DIR/dataset.json                       class names, modalities, image size, flip, provenance,
                                           per test volume its spacing and geometry, the volumes
                                           without labels ("unlabelled") and, from the converters,
                                           the preprocessing recipe ("preprocessing")

A volume without labels (an unlabelled target scan, as unsupervised domain adaptation has) is
written with an all-zero label and listed in dataset.json's "unlabelled" under "MOD_SPLIT" by
name (its record file's or npz file's name without the ending): `unlabelled_names` reads it.
"""
import json
import os
import pathlib
import zipfile
import zlib

import numpy as np

from sifa_synthmix.data import records
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.files import atomic_write_text

MODALITIES = ("mr", "ct")
RECORD_SPLITS = ("train", "val")
CARDIAC_CLASSES = ("background", "MYO", "LAC", "LVC", "AA")
ABDOMINAL_CLASSES = ("background", "Liver", "R Kidney", "L Kidney", "Spleen")


class PreparedLayout:
    """Paths inside one prepared-data folder."""

    def __init__(self, root):
        self.root = pathlib.Path(root)

    def records_dir(self, modality, split):
        return self.root / modality / split

    def test_dir(self, modality):
        return self.root / modality / "test"

    def datalist(self, modality, split):
        return self.root / "datalists" / f"{modality}_{split}.txt"

    @property
    def stats_path(self):
        return self.root / "stats.json"

    @property
    def info_path(self):
        return self.root / "dataset.json"

    def test_volumes(self, modality):
        return sorted(self.test_dir(modality).glob("*.npz"))

    def read_info(self):
        """dataset.json as a dict; a DataError names the file when it is not a JSON object."""
        try:
            info = json.loads(self.info_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise DataError(f"{self.info_path}: not valid JSON ({error})") from None
        if not isinstance(info, dict):
            raise DataError(f"{self.info_path}: not a JSON object of the data's class names, sizes and volumes "
                            f"(got {type(info).__name__})")
        return info


def unlabelled_names(info, modality, split):
    """The names of the volumes of MOD/SPLIT that dataset.json's `info` lists as unlabelled."""
    return set(info.get("unlabelled", {}).get(f"{modality}_{split}", []))


def volume_name(path):
    """A record file's or test volume's name: its file name without the ending."""
    name = pathlib.Path(path).name
    return name.removesuffix(".tfrecords").removesuffix(".npz")


def read_test_volume(path):
    """(image, labels) of a test volume file, H x W x D each; a DataError names the file when it
    cannot be read, its arrays do not match, or the image holds NaN or infinite voxels."""
    try:
        with np.load(path) as arrays:
            image, labels = arrays["arr_0"], arrays["arr_1"]
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(f"{path}: not a readable test volume ({type(error).__name__}: {error})") from None
    if image.ndim != 3 or image.shape != labels.shape:
        raise DataError(f"{path}: image {image.shape} and labels {labels.shape} must be equal 3D shapes")
    nonfinite = image.size - int(np.count_nonzero(np.isfinite(image)))
    if nonfinite:
        raise DataError(f"{path}: {nonfinite} NaN or infinite voxels in the image")
    return image, labels


class PreparedDatasetWriter:
    """Writes volumes into the layout and, in `finish`, the datalists, stats.json and dataset.json.

    Volumes handed in are already preprocessed (clipped and z-scored), H x W x D, slice axis 2.
    stats.json holds each modality's min and max over its training volumes: the numbers the
    reader uses to map images to [-1, 1].
    """

    def __init__(self, root, class_names, image_size, flip_test_volumes=False, provenance=None,
                 preprocessing=None):
        self.layout = PreparedLayout(root)
        self.preprocessing = preprocessing
        self._unlabelled = {}
        self.class_names = list(class_names)
        self.image_size = int(image_size)
        self.flip_test_volumes = bool(flip_test_volumes)
        self.provenance = dict(provenance or {})
        self._records = {(m, s): [] for m in MODALITIES for s in RECORD_SPLITS}
        self._ranges = {}
        self._test_spacing = {}
        self._test_geometry = {}
        self.slices_written = {(m, s): 0 for m in MODALITIES for s in RECORD_SPLITS}

    def _check(self, modality, image, label):
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        if image.ndim != 3 or image.shape != label.shape:
            raise ValueError(f"image {image.shape} and label {label.shape} must be equal 3D shapes")
        if image.shape[:2] != (self.image_size, self.image_size):
            raise ValueError(f"slices must be {self.image_size} x {self.image_size}, got {image.shape[:2]}")
        if not np.all(np.isfinite(image)):
            raise ValueError("image volume holds NaN or infinite voxels")

    def _note_labels(self, modality, split, name, label, labelled):
        if not labelled:
            if np.any(label):
                raise ValueError(f"{modality}/{split}/{name}: an unlabelled volume must have an all-zero label")
            self._unlabelled.setdefault(f"{modality}_{split}", []).append(name)

    def add_record_volume(self, modality, split, name, image, label, slice_indices=None, labelled=True):
        """Writes one record per slice (the slice and its two neighbours) to MOD/SPLIT/NAME.tfrecords;
        `labelled=False` lists it as unlabelled (its label must be all zero)."""
        if split not in RECORD_SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {RECORD_SPLITS}")
        self._check(modality, image, label)
        self._note_labels(modality, split, name, label, labelled)
        if slice_indices is None:
            slice_indices = range(image.shape[2])
        out_dir = self.layout.records_dir(modality, split)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.tfrecords"
        tmp = path.with_name(path.name + ".tmp")
        pairs = ((records.three_slice_stack(image, i), records.three_slice_stack(label, i))
                 for i in slice_indices)
        count = records.write_records(tmp, pairs)
        os.replace(tmp, path)
        self._records[(modality, split)].append(path)
        self.slices_written[(modality, split)] += count
        if split == "train":
            low, high = self._ranges.get(modality, (np.inf, -np.inf))
            self._ranges[modality] = (min(low, float(image.min())), max(high, float(image.max())))
        return path

    def add_test_volume(self, modality, name, image, label, spacing=None, geometry=None, labelled=True):
        """Writes MOD/test/NAME.npz with arr_0 (float32 image) and arr_1 (int16 labels).

        geometry: {"affine": voxel -> world (RAS+, mm) 4 x 4 of the array, ...}, kept in
        dataset.json's test_geometry so that predictions are written to overlay the raw scan."""
        self._check(modality, image, label)
        self._note_labels(modality, "test", name, label, labelled)
        out_dir = self.layout.test_dir(modality)
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"{name}.npz"
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, arr_0=image.astype(np.float32), arr_1=label.astype(np.int16))
        os.replace(tmp, path)
        if spacing is not None:
            self._test_spacing[f"{modality}/{name}"] = [float(s) for s in spacing]
        if geometry is not None:
            self._test_geometry[f"{modality}/{name}"] = geometry
        return path

    def stats(self):
        return {m: {"min": lo, "max": hi} for m, (lo, hi) in sorted(self._ranges.items())}

    def finish(self):
        """Writes datalists, stats.json and dataset.json; returns the stats."""
        lists_dir = self.layout.root / "datalists"
        lists_dir.mkdir(parents=True, exist_ok=True)
        for (modality, split), paths in self._records.items():
            if not paths:
                continue
            lines = [os.path.relpath(p, lists_dir) for p in sorted(paths)]
            atomic_write_text(self.layout.datalist(modality, split), "\n".join(lines) + "\n")
        stats = self.stats()
        atomic_write_text(self.layout.stats_path, json.dumps(stats, indent=2) + "\n")
        info = {
            "class_names": self.class_names,
            "num_classes": len(self.class_names),
            "modalities": sorted({m for (m, _), p in self._records.items() if p}),
            "image_size": self.image_size,
            "flip_test_volumes": self.flip_test_volumes,
            "test_spacing": self._test_spacing,
            "test_geometry": self._test_geometry,
            "slices_written": {f"{m}_{s}": n for (m, s), n in self.slices_written.items() if n},
            "unlabelled": {key: sorted(names) for key, names in sorted(self._unlabelled.items())},
            "provenance": self.provenance,
        }
        if self.preprocessing is not None:
            info["preprocessing"] = self.preprocessing
        atomic_write_text(self.layout.info_path, json.dumps(info, indent=2) + "\n")
        return stats
