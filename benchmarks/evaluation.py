"""Seconds per test volume of evaluation, split into inference, metrics and NIfTI writing."""
import pathlib
import tempfile
import time

import numpy as np
import tensorflow as tf

from benchmarks.settings import model_config
from sifa_synthmix.evaluation import metrics
from sifa_synthmix.models.networks import SegmenterNetworks, set_precision
from sifa_synthmix.prediction import label_files
from sifa_synthmix.prediction.inference import predict_volume

NUM_CLASSES = 5
BATCH_SIZE = 16  # --eval_batch_size's default


def synthetic_volume(size, depth, seed=0):
    """An image volume and nested-ellipsoid labels 0..4 (H x W x D); the image is the labels plus noise."""
    rows, cols, slices = np.meshgrid(*(np.linspace(-1, 1, n) for n in (size, size, depth)), indexing="ij")
    radius = np.sqrt(rows ** 2 + (cols / 0.8) ** 2 + (slices / 0.9) ** 2)
    labels = np.digitize(radius, [0.75, 0.55, 0.4, 0.2][::-1])[..., None]
    labels = (NUM_CLASSES - 1 - labels[..., 0]).clip(0)
    noise = np.random.default_rng(seed).normal(0, 0.2, labels.shape)
    return (labels + noise).astype(np.float32), labels.astype(np.int64)


def segmenter(image_size, widths):
    """A float32 tf.function of e_B + s_B (untrained) at the given widths, as evaluation restores it."""
    set_precision("float32")
    networks = SegmenterNetworks(model_config(image_size, widths))

    @tf.function(autograph=False)
    def predict_logits(images):
        latent, _ = networks.e_B(images, training=False)
        return networks.s_B(latent)

    return predict_logits


def _timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def time_evaluation(size, depth, widths):
    """Seconds of each part of evaluating one volume. Metrics compare the truth with the truth
    shifted by one voxel, a prediction with realistic surfaces (an untrained net's is not)."""
    image, truth = synthetic_volume(size, depth)
    predict_logits = segmenter(size, widths)
    _, trace = _timed(predict_logits, np.zeros([BATCH_SIZE, size, size, 1], np.float32))
    intensity_range = (float(image.min()), float(image.max()))
    _, inference = _timed(predict_volume, predict_logits, image, intensity_range, BATCH_SIZE)
    _, scoring = _timed(metrics.volume_metrics, np.roll(truth, 1, axis=0), truth, NUM_CLASSES)
    with tempfile.TemporaryDirectory() as folder:
        _, writing = _timed(label_files.write_label_volume, pathlib.Path(folder) / "v.nii.gz", truth)
    return {"size": size, "depth": depth, "widths": widths, "trace_seconds": trace,
            "inference_seconds": inference, "metrics_seconds": scoring, "nifti_seconds": writing,
            "total_seconds": inference + scoring + writing}
