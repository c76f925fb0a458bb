"""`--mode=predict`: label maps of new scans with a run's target segmenter, on each scan's own grid.

Per scan: read it (`scan_recipe.read_scan`, through sifa_synthmix.data.scans), prepare it as the run's
data were prepared (`scan_recipe.prepare_scan`), predict every slice
(`inference.predict_logits_volume`), map the prediction back onto the scan's voxels through the
two affines (scan voxel -> world -> prepared voxel), and write OUT/NAME.nii.gz (int16 labels, the
scan's shape and affine; background outside the crop) and, with --save_probabilities,
OUT/NAME.npz (`probabilities`: float32 softmax, class first, then the scan's axes, as nnU-Net's);
a scan's files appear together or not at all. A scan that fails is one `error:` line; the others
are still written. OUT/prediction.json records what made the folder. Modelled on nnU-Net's
inference/predict_from_raw_data.py.
"""
import dataclasses
import glob
import io
import json
import os
import pathlib
import sys
import time

import numpy as np
from scipy import ndimage

from sifa_synthmix.data import scans
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.files import atomic_write_text, write_together
from sifa_synthmix.prediction import label_files, scan_recipe
from sifa_synthmix.prediction.inference import (inference_precision, predict_logits_volume, restore_target_segmenter,
                                                run_data)
from sifa_synthmix.runs.run_folder import load_run_config, require_run_folder

PROBABILITIES_KEY = "probabilities"
PREDICTION_RECORD = "prediction.json"
_GRID_TOLERANCE = 1e-3  # voxels: grids closer than this to an exact voxel match are mapped by index


def _expanded(spec, log=print):
    """The scans one --predict_input entry names: a file, a glob, a folder holding a DICOM series,
    or a folder of scan files and DICOM series folders (as the converters take them; other
    entries are named in a note)."""
    if any(c in spec for c in "*?["):
        matches = [pathlib.Path(p) for p in sorted(glob.glob(spec))]
        if not matches:
            raise DataError(f"--predict_input={spec}: no file or folder matches")
        return [scan for match in matches for scan in _expanded(str(match), log)]
    path = pathlib.Path(spec)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"--predict_input={spec}: does not exist")
    entries = [p for p in sorted(path.iterdir()) if not p.name.startswith(".")]
    found = [p for p in entries if (p.is_file() and scans.scan_ending(p)) or scans.is_dicom_folder(p)]
    if not found and scans.is_dicom_folder(path):
        return [path]
    if not found:
        raise DataError(f"--predict_input={spec}: the folder holds no scan ({', '.join(scans.SCAN_ENDINGS)} "
                        "files, DICOM series folders, or a DICOM series)")
    ignored = sorted(p.name for p in entries if p not in found)
    if ignored:
        log(f"note: --predict_input={spec}: ignored {len(ignored)} entr{'y' if len(ignored) == 1 else 'ies'} that "
            f"are neither scans nor DICOM series folders: {', '.join(ignored[:5])}{' ...' if len(ignored) > 5 else ''}")
    return found


def output_path(out_dir, scan):
    return pathlib.Path(out_dir) / f"{scans.scan_name(scan)}{label_files.SUFFIX}"


def scan_paths(specs, out_dir, log=print):
    """Every scan of the --predict_input entries, once each; DataError for an entry that names
    none, for two scans whose outputs would share a name, or for a scan its output would replace."""
    if not specs:
        raise DataError("--mode=predict needs --predict_input=PATHS (scan files, globs or folders)")
    paths = []
    for spec in specs:
        paths += [p for p in _expanded(spec, log) if p.resolve() not in {q.resolve() for q in paths}]
    by_name = {}
    for path in paths:
        other = by_name.setdefault(scans.scan_name(path), path)
        if other != path:
            raise DataError(f"--predict_input: {other} and {path} would both be written as "
                            f"{scans.scan_name(path)}{label_files.SUFFIX}")
        if output_path(out_dir, path).resolve() == path.resolve():
            raise DataError(f"--predictions_dir={out_dir}: its label map would replace the scan {path}; "
                            "choose another folder")
    return paths


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _index_mapping(matrix, shape):
    """For a scan voxel -> prepared voxel matrix that only permutes, flips and shifts axes by
    whole voxels: per scan axis, the prepared axis it runs along and the prepared indices of its
    voxels; else None (the grids need interpolation)."""
    rotation, offset = matrix[:3, :3], matrix[:3, 3]
    if (np.abs(rotation - np.rint(rotation)).max() > _GRID_TOLERANCE
            or np.abs(offset - np.rint(offset)).max() > _GRID_TOLERANCE
            or sorted(np.abs(np.rint(rotation)).sum(axis=0)) != [1, 1, 1]):
        return None
    rotation, offset = np.rint(rotation).astype(int), np.rint(offset).astype(int)
    axes = [int(np.flatnonzero(rotation[:, j])[0]) for j in range(3)]
    if sorted(axes) != [0, 1, 2]:
        return None
    return [(k, rotation[k, j] * np.arange(shape[j]) + offset[k]) for j, k in enumerate(axes)]


def _gathered(values, mapping, fill):
    """values (prepared grid, optional trailing channel axis) at the scan's voxels by index;
    `fill` (per channel) where a scan voxel lies outside the prepared grid."""
    moved = values.transpose([k for k, _ in mapping] + list(range(3, values.ndim)))
    valid = [(0 <= index) & (index < values.shape[k]) for k, index in mapping]
    picked = moved[np.ix_(*[np.clip(index, 0, values.shape[k] - 1) for k, index in mapping])]
    inside = valid[0][:, None, None] & valid[1][None, :, None] & valid[2][None, None, :]
    picked[~inside] = fill
    return picked


def on_scan_grid(logits, prepared_affine, scan_affine, scan_shape, with_probabilities):
    """(labels, probabilities or None) of prepared-grid logits on the scan's grid. Grids that
    match voxel for voxel (the recipe only reoriented and cropped) are mapped by index; others
    (in-plane resampling) by linear interpolation of each class's probability, then argmax.
    Outside the prepared grid: background."""
    matrix = np.linalg.inv(prepared_affine) @ scan_affine
    background = np.eye(logits.shape[-1], dtype=np.float32)[0]
    mapping = _index_mapping(matrix, scan_shape)
    if mapping is not None:
        labels = _gathered(np.argmax(logits, axis=-1), mapping, 0)
        return labels, _gathered(_softmax(logits), mapping, background) if with_probabilities else None
    probabilities = _softmax(logits)
    resampled = np.stack([ndimage.affine_transform(probabilities[..., c], matrix[:3, :3], matrix[:3, 3],
                                                   output_shape=tuple(scan_shape), order=1, cval=float(background[c]))
                          for c in range(probabilities.shape[-1])], axis=-1)
    return np.argmax(resampled, axis=-1), resampled if with_probabilities else None


def _probabilities_bytes(probabilities):
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{PROBABILITIES_KEY: np.moveaxis(probabilities, -1, 0).astype(np.float32)})
    return buffer.getvalue()


def predict_scan(predict_logits, path, recipe, intensity_range, out_dir, batch_size, save_probabilities):
    """Predicts one scan and writes its files; returns (slices, seconds of inference)."""
    image, scan_affine = scan_recipe.read_scan(path)
    prepared, prepared_affine = scan_recipe.prepare_scan(image, scan_affine, recipe, path)
    started = time.perf_counter()
    logits = predict_logits_volume(predict_logits, prepared, intensity_range, batch_size)
    inference = time.perf_counter() - started
    labels, probabilities = on_scan_grid(logits, prepared_affine, scan_affine, image.shape, save_probabilities)
    outputs = {output_path(out_dir, path): label_files.label_volume_bytes(labels, scan_affine)}
    if save_probabilities:
        outputs[out_dir / f"{scans.scan_name(path)}.npz"] = _probabilities_bytes(probabilities)
    write_together(outputs)  # a label map without its probabilities would look like a finished scan
    return prepared.shape[2], inference


def prediction_record(run_dir, restored, precision, recipe, recorded, command):
    """What made a predictions folder, for OUT/prediction.json (as nnU-Net keeps its prediction
    arguments beside its outputs): the run, the checkpoint and its step, the precision, the
    preprocessing, the intensity range and class names, and the command line."""
    return {"run": os.path.abspath(run_dir), "checkpoint": os.path.abspath(restored.path), "step": restored.step,
            "precision": precision, "recipe": dataclasses.asdict(recipe),
            "intensity_range": list(recorded.target_range), "class_names": recorded.class_names,
            "command": list(command)}


def predict_run(run_dir, specs, out_dir, checkpoint=None, batch_size=16, save_probabilities=False,
                slice_axis="recorded", spacing="recorded", target_range=None, log=print, errors=None, command=()):
    """Writes the label map of every scan of `specs` into `out_dir`, with the colour tables and
    PREDICTION_RECORD (`prediction_record`, the scans written and those that failed; `command`:
    the command line to record); returns the scans that failed (each already reported as one
    `error:` line on `errors`). Bad input that concerns every scan (the run, the flags, no
    scans) raises DataError first."""
    run_dir = require_run_folder(run_dir)
    if not out_dir:
        raise DataError("--mode=predict needs --predictions_dir=OUT, the folder to write the label maps to")
    cfg = load_run_config(run_dir)
    paths = scan_paths(specs, out_dir, log)
    recorded = run_data(run_dir, cfg, target_range)
    recipe = scan_recipe.recipe_for(recorded.recipe, cfg.model.image_size, slice_axis, spacing)
    precision = inference_precision(cfg.runtime.precision)
    predict_logits, restored = restore_target_segmenter(run_dir, cfg, checkpoint, log, precision, "to predict with")
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"predicting {len(paths)} scan(s) with {restored.path} (step {restored.step}) in {precision}: slices "
        f"{recipe.orientation}, in-plane spacing {recipe.spacing_mm or 'native'} mm, {recipe.image_size} px crop "
        f"({recipe.crop}), intensity range {list(recorded.target_range)}")
    label_files.write_colour_tables(out_dir, recorded.class_names)
    written, failed = {}, []
    for number, scan in enumerate(paths, start=1):
        started = time.perf_counter()
        try:
            slices, inference = predict_scan(predict_logits, scan, recipe, recorded.target_range, out_dir, batch_size,
                                             save_probabilities)
        except (ValueError, DataError, OSError) as error:  # RawDataError is a ValueError
            message = str(error) if str(scan) in str(error) else f"{scan}: {error}"
            print(f"error: {message}", file=errors or sys.stderr, flush=True)
            failed.append(scan)
            continue
        written[output_path(out_dir, scan).name] = os.path.abspath(scan)
        seconds = time.perf_counter() - started
        log(f"[{number}/{len(paths)}] {scan}: {slices} slices in {seconds:.1f} s, {slices / seconds:.1f} slices/s "
            f"({slices / inference:.1f} slices/s inference) -> {output_path(out_dir, scan)}")
    record = {**prediction_record(run_dir, restored, precision, recipe, recorded, command),
              "written": written, "failed": [os.path.abspath(scan) for scan in failed]}
    atomic_write_text(out_dir / PREDICTION_RECORD, json.dumps(record, indent=2) + "\n")
    return failed
