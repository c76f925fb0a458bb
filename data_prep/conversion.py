"""From raw volumes to a prepared data set: the steps per volume, the run over all volumes
(optionally in several processes) and its report. The MMWHS and abdominal converters only
find their files and choose the label mapping and slice orientation.

Per volume: load and check, orient (slices on axis 2), optionally resample in-plane, map the
labels, add augmented copies (training volumes), frame it (`preprocessing.framing`: an
image_size x image_size window centred by `Settings.crop` on the body, the labelled structure
or the array's centre, kept inside the scan, padded with the volume's minimum; the intensities
normalised by `Settings.normalisation`), then keep the record slices for train/val or every slice
for test. Record slices (`preprocessing.record_crop`, plus a margin) are the body's slices
under the "body" crop, for every scan alike; the labelled slices of a labelled scan under the
label-centred crops. An unlabelled scan keeps an all-zero label and is listed as unlabelled in
dataset.json, so that nothing scores against it. A test volume keeps its geometry: the voxel ->
world (RAS+, mm) affine of the prepared array, so that a prediction written with it overlays the
raw scan, and the raw file's shape and affine.
"""
import dataclasses
import functools
import json
import multiprocessing
import sys
from typing import Callable, Optional

import numpy as np

from data_prep import augmentation
from sifa_synthmix import files
from sifa_synthmix.command_errors import quiet_worker
from sifa_synthmix.data import layout, preprocessing, volumes
from sifa_synthmix.data.preprocessing import record_crop

REPORT_NAME = "prep_report.json"
OBLIQUE_NOTE_DEGREES = 1.0  # a raw stack tilted more than this against the patient's axes is noted


@dataclasses.dataclass(frozen=True)
class RawVolume:
    """One raw volume to convert; `load` returns a `volumes.Volume` and must pickle (a
    functools.partial of a module-level function) for --workers."""
    modality: str
    split: str
    name: str
    load: Callable
    label_mapping: volumes.LabelMapping
    labelled: bool = True


@dataclasses.dataclass(frozen=True)
class Settings:
    axcodes: tuple
    image_size: int
    spacing_mm: Optional[float] = None
    augment: int = 0
    seed: int = 0
    ignore_unknown_labels: bool = False
    crop: str = "labels"  # one of preprocessing.CROP_CHOICES
    normalisation: str = "zscore"  # one of preprocessing.NORMALISATIONS

    def crop_mode(self, labelled):
        """The crop centre of one volume: "auto" is "labels" for a labelled volume, else "body"."""
        if self.crop != "auto":
            return self.crop
        return "labels" if labelled else "body"

    def records_by_labels(self, labelled):
        """Whether a volume's record slices are its labelled slices (label-centred crops of a
        labelled volume) rather than its body's."""
        return labelled and self.crop_mode(labelled) == "labels"

    def recipe(self):
        """What a prediction must repeat on a new scan (dataset.json's "preprocessing")."""
        axis = next((name for name, codes in volumes.SLICE_AXES.items() if codes == tuple(self.axcodes)), None)
        recipe = {"orientation": "".join(self.axcodes), "slice_axis": axis, "spacing_mm": self.spacing_mm,
                  "image_size": self.image_size, "crop": self.crop, "clip_percent": preprocessing.CLIP_PERCENT,
                  "normalisation": self.normalisation}
        if self.normalisation == "foreground":
            recipe["foreground_percentiles"] = list(preprocessing.FOREGROUND_PERCENTILES)
        return recipe


@dataclasses.dataclass
class PreparedVolume:
    """A cropped, normalised volume ready for the writer; `record_slices` is None for test."""
    modality: str
    split: str
    name: str
    source: str
    image: np.ndarray
    labels: np.ndarray
    record_slices: Optional[list]
    spacing: tuple
    geometry: dict  # volumes.geometry_record of the prepared array
    voxels_outside_crop: int
    unknown_labels: dict
    augmented: bool
    labelled: bool = True
    oblique_degrees: float = 0.0  # the raw stack's tilt against the patient's axes, resliced away

    @property
    def written_labels(self):
        return self.labels if self.record_slices is None else self.labels[:, :, self.record_slices]


def assign_splits(ids, test_ids, val_count, where):
    """{id: split}: `test_ids` for test, the last `val_count` of the others (in id order) for
    validation, the rest for training."""
    missing = sorted(set(test_ids) - set(ids))
    if missing:
        raise volumes.RawDataError(f"{where}: no volume with test id(s) {missing} (found {sorted(ids)})")
    rest = sorted(set(ids) - set(test_ids))
    if not 0 <= val_count < len(rest):
        raise volumes.RawDataError(f"{where}: {len(rest)} non-test volume(s) cannot give {val_count} "
                                   "for validation and at least one for training")
    splits = {i: "test" for i in test_ids}
    splits.update({i: "train" for i in rest[:len(rest) - val_count]})
    splits.update({i: "val" for i in rest[len(rest) - val_count:]})
    return splits


def split_raw_volumes(modality, sources, load, label_mapping, test_ids, val_count, where):
    """The `RawVolume`s of {id: arguments of `load`}, split by `assign_splits`."""
    splits = assign_splits(sources, test_ids, val_count, where)
    return [RawVolume(modality, splits[i], f"{modality}_{i}", functools.partial(load, *sources[i]),
                      label_mapping) for i in sorted(sources)]


def _finished_copy(raw, volume, name, image, labels, framing, unknown, body, source_geometry):
    """Crop, normalisation and record slices of one copy of a volume; its records are the slices
    of `body` (the volume's body mask, shared by its copies) or, without one, its labelled slices."""
    cropped_labels = framing.crop(labels, 0)
    outside = int(np.count_nonzero(labels) - np.count_nonzero(cropped_labels))
    if outside and raw.split == "test":  # evaluation scores them as missed, as prediction misses them
        counts = np.bincount(labels.ravel()) - np.bincount(cropped_labels.ravel(), minlength=labels.max() + 1)
        source_geometry = {**source_geometry, "labels_outside_crop": {
            str(c): int(n) for c, n in enumerate(counts) if c and n}}
    try:
        prepared = framing.image(image)
        record_slices = None
        if raw.split != "test":
            kept, record_slices = (record_crop(cropped_labels) if body is None
                                   else record_crop(framing.crop(body, False), "body"))
            prepared, cropped_labels = prepared[:, :, kept], cropped_labels[:, :, kept]
    except ValueError as error:  # a constant volume, or no labelled (body) slice left in the crop
        raise volumes.RawDataError(f"{volume.source}: {error}") from None
    geometry = volumes.geometry_record(volumes.cropped_affine(volume.affine, framing.start), source_geometry)
    return PreparedVolume(raw.modality, raw.split, name, volume.source, prepared, cropped_labels,
                          record_slices, volume.spacing, geometry, outside, unknown, augmented=name != raw.name,
                          labelled=raw.labelled,
                          oblique_degrees=volumes.obliquity_degrees(source_geometry["source_affine"]))


def prepare_volume(raw, settings):
    """The prepared volume of `raw`, then its augmented copies (training volumes only), each
    cropped as soon as it is made."""
    loaded = raw.load()
    volume = volumes.oriented(loaded, settings.axcodes)
    if settings.spacing_mm:
        volume = volumes.resampled_in_plane(volume, settings.spacing_mm)
    mapping = raw.label_mapping
    labels, unknown = (mapping.apply(volume.label, volume.label_source, settings.ignore_unknown_labels)
                       if raw.labelled else (volume.label.astype(np.uint8), {}))
    mode = settings.crop_mode(raw.labelled)
    centre_mask = mapping.centre_mask(volume.label) if mode == "labels" else None
    if centre_mask is not None and not centre_mask.any():
        raise volumes.RawDataError(f"{volume.label_source}: no voxel holds any of the label values "
                                   f"{list(mapping.centre_values)} to centre the crop on")
    try:
        framing = preprocessing.framing(volume.image, settings.image_size, mode, settings.normalisation,
                                        structure_mask=centre_mask)
    except ValueError as error:
        raise volumes.RawDataError(f"{volume.source}: {error}") from None
    body = None
    if not settings.records_by_labels(raw.labelled):
        body = preprocessing.body_mask(volume.image) if framing.body is None else framing.body
    finish = functools.partial(_finished_copy, raw, volume, framing=framing, unknown=unknown, body=body,
                               source_geometry=volumes.source_geometry(loaded))
    prepared = [finish(raw.name, volume.image, labels)]
    for copy in range(1, settings.augment + 1 if raw.split == "train" else 1):
        matrix = augmentation.random_affine(augmentation.copy_rng(settings.seed, raw.name, copy))
        prepared.append(finish(f"{raw.name}_aug{copy}", *augmentation.transformed(
            volume.image, labels, volume.spacing, framing.centre, matrix)))
    return prepared


def prepared_volumes(raw_volumes, settings, workers):
    """`prepare_volume` of each raw volume, in order, in `workers` processes."""
    prepare = functools.partial(prepare_volume, settings=settings)
    if workers <= 1:
        yield from map(prepare, raw_volumes)
        return
    with multiprocessing.Pool(workers, initializer=quiet_worker) as pool:
        yield from pool.imap(prepare, raw_volumes)


class PrepReport:
    """Volumes, slices and label voxels per class for each modality and split, and per volume."""

    def __init__(self, class_names):
        self.class_names = list(class_names)
        self.splits = {}
        self.volumes = []

    def add(self, item, slices):
        entry = self.splits.setdefault(f"{item.modality}_{item.split}", {
            "volumes": 0, "augmented_copies": 0, "unlabelled_volumes": 0, "slices": 0,
            "label_voxels": dict.fromkeys(self.class_names, 0)})
        entry["augmented_copies" if item.augmented else "volumes"] += 1
        entry["unlabelled_volumes"] += int(not item.labelled and not item.augmented)
        entry["slices"] += slices
        counts = np.bincount(item.written_labels.ravel(), minlength=len(self.class_names))
        for name, count in zip(self.class_names, counts):
            entry["label_voxels"][name] += int(count)
        self.volumes.append({
            "name": item.name, "modality": item.modality, "split": item.split, "source": item.source,
            "labelled": item.labelled, "shape": list(item.image.shape), "spacing_mm": list(item.spacing),
            "slices": slices, "voxels_outside_crop": item.voxels_outside_crop,
            "unknown_labels_ignored": {str(v): c for v, c in item.unknown_labels.items()}})

    def as_dict(self, stats, provenance):
        return {"splits": dict(sorted(self.splits.items())), "stats": stats,
                "provenance": provenance, "volumes": self.volumes}


def write(writer, item):
    """Hands one prepared volume to the writer; returns the slices written."""
    if item.record_slices is None:
        writer.add_test_volume(item.modality, item.name, item.image, item.labels, spacing=item.spacing,
                               geometry=item.geometry, labelled=item.labelled)
        return item.image.shape[2]
    before = writer.slices_written[(item.modality, item.split)]
    writer.add_record_volume(item.modality, item.split, item.name, item.image, item.labels,
                             item.record_slices, labelled=item.labelled)
    return writer.slices_written[(item.modality, item.split)] - before


def progress_line(number, total, items, slices):
    first = items[0]
    extra = f" + {len(items) - 1} augmented" if len(items) > 1 else ""
    notes = ""
    if first.oblique_degrees > OBLIQUE_NOTE_DEGREES:
        notes += (f"; note: an oblique stack, {first.oblique_degrees:.1f} degrees off the patient's axes: its slices "
                  "are taken along the stack's nearest axis as they are, not resampled")
    cut = sum(item.voxels_outside_crop for item in items)
    if cut:
        notes += (f"; WARNING: {cut} labelled voxels fall outside the crop (a coarser --spacing or a larger "
                  "--image_size widens it; data_prep.folder's --spacing auto fits it to the labels)")
    return f"[{number}/{total}] {first.modality} {first.split} {first.name}{extra}: {slices} slices{notes}"


def convert(raw_volumes, output_dir, settings, class_names, provenance, workers=1, progress=sys.stderr):
    """Writes the prepared data set and DIR/prep_report.json; returns the report.

    Everything is written to a sibling folder first and renamed at the end, so `output_dir`
    (which must be absent or empty) is either a finished data set or untouched.
    """
    with files.staged_folder(output_dir) as staging:
        writer = layout.PreparedDatasetWriter(staging, class_names, settings.image_size,
                                              flip_test_volumes=False, provenance=provenance,
                                              preprocessing=settings.recipe())
        report = PrepReport(class_names)
        for number, items in enumerate(prepared_volumes(raw_volumes, settings, workers), start=1):
            slices = 0
            for item in items:
                written = write(writer, item)
                report.add(item, written)
                slices += written
            print(progress_line(number, len(raw_volumes), items, slices), file=progress, flush=True)
        result = report.as_dict(writer.finish(), provenance)
        files.atomic_write_text(staging / REPORT_NAME, json.dumps(result, indent=2) + "\n")
    return result


def summary_text(report, output_dir):
    """A few lines for the terminal: per split volumes, slices and label voxels, then stats."""
    lines = [f"wrote {output_dir} ({REPORT_NAME} has the details)"]
    for split, entry in report["splits"].items():
        copies = f" + {entry['augmented_copies']} augmented" if entry["augmented_copies"] else ""
        if entry["unlabelled_volumes"]:
            copies += f" ({entry['unlabelled_volumes']} without labels)"
        voxels = ", ".join(f"{name} {count}" for name, count in entry["label_voxels"].items())
        lines.append(f"  {split}: {entry['volumes']} volumes{copies}, {entry['slices']} slices; "
                     f"label voxels: {voxels}")
    lines.append(f"  stats: {json.dumps(report['stats'])}")
    return "\n".join(lines)
