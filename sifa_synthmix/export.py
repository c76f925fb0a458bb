"""`--mode=export`: a run's target segmenter (e_B + s_B, inference mode) as a TensorFlow
SavedModel that needs nothing of this project to load and run.

Signatures, float32 in and out whatever precision the run trained in:

    serving_default      images [N, H, W, 1] in the model's [-1, 1] scale
    segment_intensities  slices [N, H, W, 1] in the prepared data's intensities (clipped and
                         z-scored, as the test volumes), mapped to [-1, 1] inside with the run's
                         target range

both returning {"probabilities": [N, H, W, C] softmax, "labels": [N, H, W] int32 argmax}.
EXPORT_DIR/sifa_export.json records the class names, the intensity range, the slice size, the
preprocessing recipe (None: the converters' defaults) and the checkpoint exported.
"""
import json
import pathlib

import tensorflow as tf

from sifa_synthmix.data.layout import atomic_write_text, staged_folder
from sifa_synthmix.data.reader import DataError, to_unit_range
from sifa_synthmix.evaluation.inference import restore_segmenter_networks, run_data
from sifa_synthmix.task import target_logits
from sifa_synthmix.traced_model import inline_calls
from sifa_synthmix.run_folder import require_run_folder
from sifa_synthmix.trainer import load_run_config

EXPORT_INFO = "sifa_export.json"
SIGNATURES = ("serving_default", "segment_intensities")


class TargetSegmenter(tf.Module):
    """e_B + s_B with the two serving functions; the intensity range is a constant of the graph."""

    def __init__(self, networks, image_size, intensity_range):
        super().__init__(name="target_segmenter")
        self.e_B, self.s_B = networks.e_B, networks.s_B
        self.intensity_range = tuple(float(v) for v in intensity_range)
        spec = tf.TensorSpec([None, image_size, image_size, 1], tf.float32)
        self.serving_default = tf.function(self.segment, input_signature=[spec], autograph=False)
        self.segment_intensities = tf.function(self.segment_prepared, input_signature=[spec], autograph=False)

    def segment(self, images):
        logits = tf.cast(target_logits(self, images), tf.float32)
        return {"probabilities": tf.nn.softmax(logits), "labels": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    def segment_prepared(self, slices):
        return self.segment(to_unit_range(slices, self.intensity_range))


def export_run(run_dir, export_dir, checkpoint=None, log=print):
    """Writes the SavedModel of the run's target segmenter to `export_dir` (absent or empty; it
    appears whole or not at all); returns the sifa_export.json record."""
    run_dir = require_run_folder(run_dir)
    if not export_dir:
        raise DataError("--mode=export needs --export_dir=DIR, the folder to write the SavedModel to")
    export_dir = pathlib.Path(export_dir)
    if export_dir.exists() and (not export_dir.is_dir() or any(export_dir.iterdir())):
        raise DataError(f"--export_dir={export_dir}: not an empty folder; remove it or choose another")
    cfg = load_run_config(run_dir)
    recorded = run_data(run_dir, cfg)
    networks, path = restore_segmenter_networks(run_dir, cfg, checkpoint, log)
    module = TargetSegmenter(networks, cfg.model.image_size, recorded.target_range)
    record = {"checkpoint": str(path), "class_names": recorded.class_names, "image_size": cfg.model.image_size,
              "intensity_range": list(module.intensity_range), "preprocessing": recorded.recipe,
              "signatures": list(SIGNATURES)}
    # Plain Keras calls, also where saving traces the networks: a TracedModel's per-call functions
    # (keyed by tuples) cannot be saved.
    with staged_folder(export_dir) as staging, inline_calls():
        tf.saved_model.save(module, str(staging), signatures={name: getattr(module, name) for name in SIGNATURES})
        atomic_write_text(staging / EXPORT_INFO, json.dumps(record, indent=2) + "\n")
    log(f"exported {path} to {export_dir} (signatures {', '.join(SIGNATURES)}; {EXPORT_INFO} has the classes "
        "and the intensity range)")
    return record
