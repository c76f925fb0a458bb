"""`--mode=export`: a run's target segmenter (e_B + s_B, inference mode) as a TensorFlow
SavedModel that needs nothing of this project to load and run.

Signatures, float32 in and out whatever precision the run trained in:

    serving_default      images [N, S, S, 1] in the model's [-1, 1] scale
    segment_intensities  slices [N, S, S, 1] in the prepared data's intensities (clipped and
                         z-scored, as the test volumes), mapped to [-1, 1] inside with the run's
                         target range

both returning {"probabilities": [N, S, S, C] softmax, "labels": [N, S, S] int32 argmax}. S is
the run's slice size exactly and the channel one: a call with another size or channel count, or
with a NaN or infinite value, raises InvalidArgumentError inside the SavedModel (nothing is
resized, and no label map comes out of input the model was not trained on).
EXPORT_DIR/sifa_export.json records the class names, the intensity range and its formula, the
slice size, the preprocessing recipe (None: the converters' defaults) in words, and the
checkpoint exported (an absolute path).
"""
import json
import os
import pathlib

import tensorflow as tf

from sifa_synthmix.data.preprocessing import FOREGROUND_PERCENTILES
from sifa_synthmix.data.reader import DataError, to_unit_range
from sifa_synthmix.data.volumes import SLICE_AXES
from sifa_synthmix.files import atomic_write_text, staged_folder
from sifa_synthmix.models.networks import target_logits
from sifa_synthmix.models.traced_model import inline_calls
from sifa_synthmix.prediction import scan_recipe
from sifa_synthmix.prediction.inference import restore_segmenter_networks, run_data
from sifa_synthmix.runs.run_folder import load_run_config, require_run_folder

EXPORT_INFO = "sifa_export.json"
SIGNATURES = ("serving_default", "segment_intensities")


class TargetSegmenter(tf.Module):
    """e_B + s_B with the two serving functions; the intensity range is a constant of the graph."""

    def __init__(self, networks, image_size, intensity_range):
        super().__init__(name="target_segmenter")
        self.e_B, self.s_B = networks.e_B, networks.s_B
        self.intensity_range = tuple(float(v) for v in intensity_range)
        self.input_shape = [None, image_size, image_size, 1]
        spec = tf.TensorSpec(self.input_shape, tf.float32)
        self.serving_default = tf.function(self.segment, input_signature=[spec], autograph=False)
        self.segment_intensities = tf.function(self.segment_prepared, input_signature=[spec], autograph=False)

    def checked(self, images):
        """`images`, once the graph has checked them: a loaded signature does not enforce its
        input shape (a 64 px slice into a 32 px model gave a 32 x 32 map), nor finite values."""
        images = tf.ensure_shape(images, self.input_shape, name="slice_size_and_one_channel")
        return tf.debugging.assert_all_finite(images, "the slices hold NaN or infinite values")

    def segment(self, images):
        logits = tf.cast(target_logits(self, self.checked(images)), tf.float32)
        return {"probabilities": tf.nn.softmax(logits), "labels": tf.argmax(logits, axis=-1, output_type=tf.int32)}

    def segment_prepared(self, slices):
        return self.segment(to_unit_range(self.checked(slices), self.intensity_range))


AXIS_WORDS = {"P": "anterior -> posterior", "A": "posterior -> anterior", "L": "right -> left",
              "R": "left -> right", "S": "feet -> head", "I": "head -> feet"}


# What each normalisation of sifa_synthmix.data.preprocessing does to a cropped scan, in words.
INTENSITY_WORDS = {
    "zscore": lambda recipe: (f"values above the crop's {100 - recipe.clip_percent:g}th percentile clipped to it, "
                              "then z-scored with the crop's mean and standard deviation"),
    "foreground": lambda recipe: ("clipped to the {:g}th and {:g}th percentiles of the body's voxels, then z-scored "
                                  "with the body's mean and standard deviation (after clipping)"
                                  ).format(*FOREGROUND_PERCENTILES),
}


def orientation_words(orientation):
    """Nibabel axis codes ("PLS") as the directions rows, columns and slices run in."""
    return ", ".join(f"{axis} {AXIS_WORDS[code]}" for axis, code in zip(("rows", "columns", "slices"), orientation))


def recipe_words(recorded, image_size):
    """What --mode=predict does to a new scan before the model sees it (the run's recorded
    recipe, `scan_recipe.recipe_for`), in words, so that a user of the export can do the same."""
    recipe = scan_recipe.recipe_for(recorded, image_size)
    axis = next((name for name, codes in SLICE_AXES.items() if "".join(codes) == recipe.orientation), "oblique")
    centre = ("the middle of the slices" if recipe.crop == "centre" else
              "the centroid of the scan's body (voxels above an Otsu threshold, their largest part; a new scan "
              "has no labels)")
    return {"orientation": f"{recipe.orientation} ({axis} slices): {orientation_words(recipe.orientation)}",
            "spacing": (f"slices resampled in-plane to {recipe.spacing_mm} mm" if recipe.spacing_mm
                        else "each scan's own in-plane spacing (no resampling)"),
            "crop": (f"{recipe.crop}: a {image_size} x {image_size} window centred on {centre}, shifted to "
                     "stay inside the scan where the scan is larger and padded with the scan's minimum where "
                     "it is smaller"),
            "intensities": f"{INTENSITY_WORDS[recipe.normalisation](recipe)} (segment_intensities' input)"}


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
    networks, restored = restore_segmenter_networks(run_dir, cfg, checkpoint, log, use="to export")
    module = TargetSegmenter(networks, cfg.model.image_size, recorded.target_range)
    low, high = module.intensity_range
    size = cfg.model.image_size
    record = {"checkpoint": os.path.abspath(restored.path), "step": restored.step,
              "class_names": recorded.class_names, "image_size": size,
              "input": (f"[N, {size}, {size}, 1] float32, finite: another slice size or channel count, or a NaN "
                        "or infinite value, raises InvalidArgumentError (resize or crop slices to "
                        f"{size} x {size} first)"),
              "intensity_range": [low, high],
              "to_model_range": f"x' = 2 * (x - ({low})) / ({high} - ({low})) - 1, so {low} -> -1 and {high} -> 1 "
                                "(serving_default takes x', segment_intensities x)",
              "preprocessing": recorded.recipe, "new_scans": recipe_words(recorded.recipe, size),
              "signatures": list(SIGNATURES)}
    # Plain Keras calls, also where saving traces the networks: a TracedModel's per-call functions
    # (keyed by tuples) cannot be saved.
    with staged_folder(export_dir) as staging, inline_calls():
        tf.saved_model.save(module, str(staging), signatures={name: getattr(module, name) for name in SIGNATURES})
        atomic_write_text(staging / EXPORT_INFO, json.dumps(record, indent=2) + "\n")
    log(f"exported {restored.path} (step {restored.step}) to {export_dir} (signatures {', '.join(SIGNATURES)}; "
        f"{EXPORT_INFO} has the classes and the intensity range)")
    return record
