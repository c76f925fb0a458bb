"""Evaluation of one run on whole test volumes, written to an eval folder:

    metrics.json           per volume per class {dice, assd, status}, summary mean/std per class
                           and Avg, units, the empty-case rule and its counts, the volume paths,
                           the checkpoint and step evaluated
    metrics.csv            one row per volume per class
    table.md               the paper's table layout for this run
    predictions/NAME.nii.gz  each predicted label volume (int16)
    images/NAME.nii.gz, ground_truth/NAME.nii.gz  (write_images) the test image and its labels
    label_colours_itksnap.txt, label_colours_slicer.ctbl  the class colours for both viewers

Every NIfTI file has the test volume's voxel -> world affine when dataset.json holds it (the
converters keep it), so it overlays the raw scan in 3D Slicer or ITK-SNAP; else the spacing.
"""
import pathlib

import numpy as np

from sifa_synthmix.data.layout import read_test_volume
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.evaluation import metrics, result_files, table
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.prediction import label_files
from sifa_synthmix.prediction.inference import predict_volume
from sifa_synthmix.runs.run_folder import (GROUND_TRUTH_DIR, IMAGES_DIR, METRICS_FILE, METRICS_TABLE_FILE,
                                           PREDICTIONS_DIR, TABLE_FILE)

SPACING_UNITS = ("voxel", "mm")


def _by_volume(entries, modality):
    prefix = f"{modality}/"
    return {key[len(prefix):]: value for key, value in entries.items() if key.startswith(prefix)}


def spacing_by_volume(dataset_info, modality):
    """Volume name -> voxel spacing from dataset.json's test_spacing ({"MOD/NAME": [sx, sy, sz]})."""
    return _by_volume(dataset_info.get("test_spacing", {}), modality)


def affine_by_volume(dataset_info, modality):
    """Volume name -> voxel -> world (RAS+, mm) affine from dataset.json's test_geometry."""
    return {name: geometry["affine"] for name, geometry in
            _by_volume(dataset_info.get("test_geometry", {}), modality).items()}


def missed_by_volume(dataset_info, modality):
    """Volume name -> {class index: labelled voxels of the raw scan outside the prepared crop},
    from dataset.json's test_geometry (absent: none were)."""
    return {name: {int(c): int(n) for c, n in geometry.get("labels_outside_crop", {}).items()} for name, geometry in
            _by_volume(dataset_info.get("test_geometry", {}), modality).items()}


def _volume_names(volume_paths):
    names = [pathlib.Path(p).name.removesuffix(".npz") for p in volume_paths]
    if not names:
        raise ValueError("no test volumes to evaluate")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"test volume names must be unique (their predictions share a folder): {repeated}")
    return names


def check_labels(path, labels, num_classes):
    """Test labels must be classes, 0 .. num_classes - 1: any other value (negative, fractional,
    too large) would be scored as background without a word."""
    values = np.unique(labels)
    wrong = values[(values < 0) | (values >= num_classes) | (values != np.round(values))]
    if wrong.size:
        raise DataError(f"{path}: label values outside the classes 0..{num_classes - 1} (--num_classes="
                        f"{num_classes}); found {wrong[:10].tolist()}")


def evaluate_volumes(predict_logits, volume_paths, intensity_range, class_names, out_dir,
                     batch_size=16, flip=False, spacing=None, spacing_unit="voxel", method="This run",
                     affines=None, write_images=False, checkpoint=None, step=None, image_size=None, missed=None):
    """Predicts and scores every test volume (npz: arr_0 image, arr_1 labels, slice axis 2).

    spacing: volume name (file name without .npz) -> voxel spacing, or None. ASSD uses it only
    with spacing_unit="mm" (then every volume needs one). affines: volume name -> voxel -> world
    affine (`affine_by_volume`), or None; the NIfTI files take it, else the spacing. missed: volume
    name -> {class index: true voxels outside its crop} (`missed_by_volume`), scored as false
    negatives, as prediction leaves them background. write_images:
    also write each test image and ground truth. checkpoint, step: what was evaluated, recorded.
    image_size: the slice size the model takes, checked in every volume first.
    Returns the record written to metrics.json.
    """
    class_names = list(class_names)
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names must be unique: {class_names}")
    if spacing_unit not in SPACING_UNITS:
        raise ValueError(f"spacing_unit must be one of {SPACING_UNITS}, got {spacing_unit!r}")
    names = _volume_names(volume_paths)
    spacing, affines = dict(spacing or {}), dict(affines or {})
    if spacing_unit == "mm" and set(names) - set(spacing):
        raise ValueError(f"ASSD in mm needs the spacing of every volume; none for {sorted(set(names) - set(spacing))}")
    for path in volume_paths:  # a bad volume stops before anything is written
        image, labels = read_test_volume(path)
        check_labels(path, labels, len(class_names))
        if image_size is not None and image.shape[:2] != (image_size, image_size):
            raise DataError(f"{path}: {image.shape[0]} x {image.shape[1]} slices, but the model takes "
                            f"{image_size} x {image_size} (--image_size)")
    out_dir = pathlib.Path(out_dir)
    folders = (PREDICTIONS_DIR, IMAGES_DIR, GROUND_TRUTH_DIR) if write_images else (PREDICTIONS_DIR,)
    for folder in folders:
        (out_dir / folder).mkdir(parents=True, exist_ok=True)
    volumes = [_evaluate_volume(predict_logits, pathlib.Path(path), name, intensity_range, class_names,
                                out_dir, batch_size, flip, spacing.get(name), spacing_unit, affines.get(name),
                                write_images, (missed or {}).get(name))
               for path, name in zip(volume_paths, names)]
    label_files.write_colour_tables(out_dir, class_names)
    record = {
        "method": method,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "step": None if step is None else int(step),
        "class_names": class_names,
        "dice_unit": "fraction (tables show %)",
        "assd_unit": spacing_unit,
        "empty_case_rule": metrics.EMPTY_CASE_RULE,
        "intensity_range": [float(v) for v in intensity_range],
        "flip": bool(flip),
        "batch_size": int(batch_size),
        "volumes": volumes,
        "summary": metrics.summarise([v["classes"] for v in volumes]),
    }
    result_files.write_csv(out_dir / METRICS_TABLE_FILE, ["volume", "class_index", "class", "dice", "assd",
                                                     "assd_unit", "status"],
                           [[v["name"], class_names.index(c), c, m["dice"], m["assd"], spacing_unit, m["status"]]
                            for v in volumes for c, m in v["classes"].items()])
    atomic_write_text(out_dir / TABLE_FILE, run_table(record))
    # Last: compare reads metrics.json, so its presence means the whole folder is written.
    result_files.write_json(out_dir / METRICS_FILE, record)
    return record


def _evaluate_volume(predict_logits, path, name, intensity_range, class_names, out_dir, batch_size, flip,
                     spacing, spacing_unit, affine, write_images, missed):
    image, truth = read_test_volume(path)
    prediction = predict_volume(predict_logits, image, intensity_range, batch_size, flip)
    per_class = metrics.volume_metrics(prediction, truth, len(class_names),
                                       spacing if spacing_unit == "mm" else None, missed)
    prediction_path = f"{PREDICTIONS_DIR}/{name}{label_files.SUFFIX}"
    label_files.write_label_volume(out_dir / prediction_path, prediction, affine, spacing)
    if write_images:
        label_files.write_image_volume(out_dir / IMAGES_DIR / f"{name}{label_files.SUFFIX}", image, affine, spacing)
        label_files.write_label_volume(out_dir / GROUND_TRUTH_DIR / f"{name}{label_files.SUFFIX}", truth, affine,
                                       spacing)
    return {"name": name, "path": str(path.resolve()), "prediction": prediction_path,
            "affine": label_files.volume_affine(affine, spacing).tolist(),
            "spacing": None if spacing is None else [float(s) for s in spacing],
            "classes": {class_names[c]: m for c, m in per_class.items()},
            "avg": metrics.volume_average(per_class)}


def _empty_case_note(summary, class_names):
    counts = {c: summary[c]["status_counts"] for c in class_names[1:]}
    cases = [f"{c}: " + ", ".join(f"{n} {s}" for s, n in counted.items() if n and s != metrics.OK)
             for c, counted in counts.items() if any(n for s, n in counted.items() if s != metrics.OK)]
    if not cases:
        return ""
    return ("\nEmpty cases (" + "; ".join(cases) + "). Rule: " + metrics.EMPTY_CASE_RULE + "\n")


def run_table(record):
    """table.md of one evaluated run: its row in the paper's layout, plus any empty cases."""
    columns = table.table_columns(record["class_names"])
    named = [(record["method"], record["summary"])]
    blocks = [(table.block_title(m, record["assd_unit"]), table.metric_rows(named, columns, m))
              for m in ("dice", "assd")]
    return (table.markdown_table(columns, blocks)
            + f"\nmean(std) over {len(record['volumes'])} volumes.\n"
            + _empty_case_note(record["summary"], record["class_names"]))


def read_metrics(eval_dir):
    """The record in EVAL_DIR/metrics.json (NaN restored)."""
    return result_files.read_json(pathlib.Path(eval_dir) / METRICS_FILE)
