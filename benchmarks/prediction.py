"""Seconds of `--mode=predict` on one scan, file to file: read, preprocess, predict every slice,
map back onto the scan's grid, write. An untrained e_B + s_B at the given widths is saved as a
run folder (the work does not depend on the weights); the scan is a synthetic volume stored
in another voxel order than the prepared arrays (RAS against PLS), so the map back permutes and
flips axes as for a real scan.

    python -m benchmarks.prediction [--size 256] [--depth 128] [--widths official] [--scans 2]
        [--precision float32|mixed_bfloat16]   (the run's; predict computes in it where native)
"""
import argparse
import json
import pathlib
import tempfile
import time

import nibabel as nib
import numpy as np
import tensorflow as tf

from benchmarks.evaluation import synthetic_volume
from benchmarks.flops import function_flops
from benchmarks.settings import model_config
from sifa_synthmix.config import DataConfig, RuntimeConfig, TrainConfig
from sifa_synthmix.models.networks import SegmenterNetworks, set_precision, target_logits
from sifa_synthmix.models.traced_model import inline_calls
from sifa_synthmix.prediction import scan_recipe
from sifa_synthmix.prediction.inference import inference_precision, restore_target_segmenter, run_data
from sifa_synthmix.prediction.scan_prediction import predict_scan
from sifa_synthmix.runs.run_folder import CHECKPOINT_DIR, checkpoint_manager, load_run_config, write_run_config

BATCH_SIZE = 16  # --eval_batch_size's default
INTENSITY_RANGE = (-2.8, 3.2)  # SIFA's released CT statistics


def untrained_run(folder, size, widths, precision="float32"):
    """A run folder holding an untrained e_B + s_B (ckpt-1) and its flags (trained in `precision`);
    and the conv FLOPs of one slice through them."""
    cfg = TrainConfig(model=model_config(size, widths), data=DataConfig(target_range=INTENSITY_RANGE),
                      output_dir=str(folder), runtime=RuntimeConfig(precision=precision))
    set_precision("float32")
    networks = SegmenterNetworks(cfg.model)

    def one_slice(images):
        with inline_calls():
            return target_logits(networks, images)

    flops = sum(function_flops(one_slice, tf.TensorSpec([1, size, size, 1], tf.float32)).values())
    checkpoint = tf.train.Checkpoint(e_B=networks.e_B, s_B=networks.s_B)
    checkpoint_manager(checkpoint, pathlib.Path(folder) / CHECKPOINT_DIR, cfg).save(checkpoint_number=1)
    write_run_config(cfg, folder)
    return pathlib.Path(folder), flops


def synthetic_scan(path, size, depth):
    """A CT-like scan (air around a body of nested ellipsoids) as NIfTI in RAS voxel order."""
    image, _ = synthetic_volume(size, depth)
    hounsfield = np.where(image > 0.5, 40.0 + 60.0 * image, -1000.0).astype(np.float32)
    # The prepared arrays run P, L, S; this scan runs R, A, S (0.8 mm pixels, 1.5 mm slices).
    nib.save(nib.Nifti1Image(hounsfield, np.diag([0.8, 0.8, 1.5, 1.0])), str(path))
    return path


def time_prediction(size=256, depth=128, widths="official", scans=2, precision="float32"):
    """Per scan: wall seconds file to file and of inference alone, and slices per second; and
    the segmenter's conv GFLOP per slice. The first scan includes tracing the segmenter's
    function, as the first scan of a predict call does."""
    with tempfile.TemporaryDirectory() as folder:
        folder = pathlib.Path(folder)
        run, flops = untrained_run(folder / "run", size, widths, precision)
        scan = synthetic_scan(folder / "scan.nii.gz", size, depth)
        (folder / "out").mkdir()
        cfg = load_run_config(run)
        recorded = run_data(run, cfg)
        recipe = scan_recipe.recipe_for(recorded.recipe, size)
        computed_in = inference_precision(cfg.runtime.precision)
        predict_logits, _ = restore_target_segmenter(run, cfg, log=lambda _: None, precision=computed_in)
        results = []
        for _ in range(scans):
            start = time.perf_counter()
            slices, inference = predict_scan(predict_logits, scan, recipe, recorded.target_range, folder / "out",
                                             BATCH_SIZE, save_probabilities=False)
            seconds = time.perf_counter() - start
            results.append({"seconds": round(seconds, 2), "inference_seconds": round(inference, 2),
                            "slices_per_second": round(slices / seconds, 2)})
    return {"size": size, "depth": depth, "widths": widths, "batch_size": BATCH_SIZE, "precision": computed_in,
            "gflop_per_slice": round(flops / 1e9, 2), "scans": results}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--widths", default="official", choices=("demo", "official"))
    parser.add_argument("--scans", type=int, default=2)
    parser.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16", "mixed_float16"))
    args = parser.parse_args()
    print(json.dumps(time_prediction(args.size, args.depth, args.widths, args.scans, args.precision)))


if __name__ == "__main__":
    main()
