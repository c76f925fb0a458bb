"""The target segmenter of a run at inference, shared by evaluation, prediction and export:
e_B + s_B restored from the run folder, what the run recorded about its data (intensity range,
class names, preprocessing recipe), and volumes predicted slice by slice in batches.

Everything here reads the run folder only (config.json, data_fingerprint.json, checkpoints/);
a run without a fingerprint (trained before it was recorded, or imported from an official
checkpoint) falls back to its data flags: an explicit --target_range, else the stats file."""
import dataclasses
import functools
import os
import pathlib
import re

import numpy as np
import tensorflow as tf

from sifa_synthmix import cpu_features
from sifa_synthmix.data import inputs
from sifa_synthmix.data.reader import DataError, to_unit_range
from sifa_synthmix.models.networks import SegmenterNetworks, set_precision, target_logits
from sifa_synthmix.runs import checkpoint_files
from sifa_synthmix.runs.run_folder import (CHECKPOINT_DIR, CONFIG_FILE, DATA_FINGERPRINT_FILE,
                                           check_config_against_fingerprint, load_run_config, read_fingerprint)
from sifa_synthmix.runs.run_lock import RunLock
from sifa_synthmix.tensorflow_paths import for_tensorflow

# TensorFlow's message when a checkpoint's tensor has another shape than the variable it restores.
_SHAPE_MISMATCH = re.compile(r"incompatible tensor with shape (\(.*?\)) when attempting to restore variable with "
                             r"shape (\(.*?\)) and name (\S+?)(?::\d+)?\.")
MODEL_FLAGS = ("image_size", "ngf", "ndf", "encoder_base", "num_classes", "skip")
# Restores of a run's newest checkpoint, each after the one before vanished while it was read.
RESTORE_ATTEMPTS = 5


def architecture_difference(checkpoint_path, cfg, error=None):
    """Which model flags differ between `cfg` and the run a checkpoint came from, as far as known;
    for a checkpoint of this very run (config.json edited since), the tensor that does not fit
    (`error`: the failed restore's)."""
    run_dir = pathlib.Path(checkpoint_path).parent.parent
    if not (run_dir / CONFIG_FILE).is_file():
        return "its run's flags are unknown"
    saved = load_run_config(run_dir).model
    differing = [f"--{name}={getattr(saved, name)} there, {getattr(cfg.model, name)} here"
                 for name in MODEL_FLAGS if getattr(saved, name) != getattr(cfg.model, name)]
    if differing:
        return "; ".join(differing)
    mismatch = _SHAPE_MISMATCH.search(str(error or ""))
    if mismatch:
        stored, needed, name = mismatch.groups()
        flags = ", ".join(f"{flag}={getattr(cfg.model, flag)}" for flag in MODEL_FLAGS)
        return (f"it holds {name} of shape {stored}, the networks of {run_dir / CONFIG_FILE} ({flags}) need "
                f"{needed}: {CONFIG_FILE} was edited after training; put back the model flags it was trained with")
    return "same model flags; the file may be damaged"


def inference_precision(precision, has_gpu=None, bfloat16_flags=None):
    """The precision evaluation and prediction compute in: the run's where this machine computes
    it natively (float16 on a GPU; bfloat16 on a GPU or a CPU with bfloat16 instructions, where a
    256 x 256 x 128 scan at official widths took 5.2 instead of 19.9 s, benchmarks.prediction),
    else float32 (a CPU emulates float16, and bfloat16 without its instructions)."""
    if precision == "float32":
        return precision
    if tf.config.list_physical_devices("GPU") if has_gpu is None else has_gpu:
        return precision
    native = cpu_features.native_bfloat16() if bfloat16_flags is None else bfloat16_flags
    return precision if precision == "mixed_bfloat16" and native else "float32"


@dataclasses.dataclass(frozen=True)
class RestoredCheckpoint:
    """The checkpoint a restore read: its path and the training step it holds."""

    path: str
    step: int


STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"  # the trainer's step in its checkpoints


def _restored_step(path):
    """The trainer's step a checkpoint holds; from its file name where it holds none (a
    checkpoint written by a benchmark or an import)."""
    reader = tf.train.load_checkpoint(for_tensorflow(path))
    return int(reader.get_tensor(STEP_KEY)) if reader.has_tensor(STEP_KEY) else checkpoint_files.step_of(path)


def restore_networks(run_dir, cfg, networks, checkpoint=None, log=print, use="to evaluate"):
    """Restores `networks` ({scope name in the run's checkpoints: network}) from a run's
    checkpoint; returns the RestoredCheckpoint.

    Without `checkpoint`, the run's newest intact checkpoint (a damaged newer one is named and
    skipped; one that a trainer still at work deletes while it is read is replaced by its
    successor, and the step used is logged); a given `checkpoint` must read in full.
    use: what the checkpoint is for, in the message when there is none ("to predict with").
    """
    run_dir = pathlib.Path(run_dir)
    training = RunLock(run_dir, activity="trained").holder_text()
    for _ in range(RESTORE_ATTEMPTS):
        if checkpoint:
            path = checkpoint_files.verify(checkpoint)
        else:
            path = checkpoint_files.newest_intact(run_dir / CHECKPOINT_DIR, log)
        if path is None:
            raise DataError(f"{run_dir / CHECKPOINT_DIR}: no checkpoint {use} yet; " + (
                f"the run is {training}: wait for its first checkpoint (every "
                f"--save_every={cfg.schedule.save_every} steps)"
                if training else "train the run first"))
        try:
            status = tf.train.Checkpoint(**networks).restore(for_tensorflow(path))
            status.expect_partial().assert_existing_objects_matched()
            step = _restored_step(path)
        except (ValueError, AssertionError, tf.errors.OpError) as error:
            if not checkpoint and not os.path.isfile(f"{path}.index"):
                continue  # deleted by the trainer meanwhile: its newer one is there
            raise DataError(f"{path}: does not fit this run's networks "
                            f"({architecture_difference(path, cfg, error)})") from error
        restored = RestoredCheckpoint(path, step)
        if training and not checkpoint:
            log(f"note: {run_dir} is still {training}; using its newest checkpoint, {path} (step {restored.step}), "
                "and newer ones will follow")
        return restored
    raise DataError(checkpoint_files.vanishing(run_dir / CHECKPOINT_DIR, RESTORE_ATTEMPTS))


def restore_segmenter_networks(run_dir, cfg, checkpoint=None, log=print, precision="float32", use="to evaluate"):
    """(SegmenterNetworks with the run's e_B and s_B under `precision`, RestoredCheckpoint), as
    `restore_networks` finds the checkpoint. Every run kind stores them under the scope names e_B
    and s_B, so one restore serves all."""
    set_precision(precision)
    networks = SegmenterNetworks(cfg.model)
    return networks, restore_networks(run_dir, cfg, {"e_B": networks.e_B, "s_B": networks.s_B}, checkpoint, log, use)


def float32_logits(networks, images):
    return tf.cast(target_logits(networks, images), tf.float32)


def restore_target_segmenter(run_dir, cfg, checkpoint=None, log=print, precision="float32", use="to evaluate"):
    """A tf.function mapping [N, H, W, 1] float32 images in [-1, 1] to float32 logits, with the
    run's e_B and s_B computing in `precision`, and the RestoredCheckpoint (`restore_segmenter_networks`)."""
    networks, restored = restore_segmenter_networks(run_dir, cfg, checkpoint, log, precision, use)
    return tf.function(functools.partial(float32_logits, networks), autograph=False), restored


@dataclasses.dataclass(frozen=True)
class RunData:
    """What inference needs to know of the data a run was trained on."""

    target_range: tuple  # (min, max) of the target intensities, mapped to [-1, 1]
    class_names: list
    recipe: dict  # dataset.json's "preprocessing" recipe, or None when the data recorded none
    fingerprint: dict  # data_fingerprint.json as recorded at training ({} when absent)


def run_data(run_dir, cfg, target_range=None):
    """The RunData of a run folder: its data fingerprint (checked against the run's model flags),
    else its data flags (`data_facts`); an explicit `target_range` wins over both."""
    recorded = read_fingerprint(run_dir)
    check_config_against_fingerprint(run_dir, cfg.model, recorded)
    known = recorded if inputs.target_range_of(recorded, cfg.data) else inputs.data_facts(cfg.data)
    if target_range:
        explicit = dataclasses.replace(cfg.data, stats_file="", target_range=tuple(target_range))
        known = {**known, **inputs.data_facts(explicit)}
    intensity_range = inputs.target_range_of(known, cfg.data)
    if intensity_range is None:
        raise DataError(f"{run_dir}: no {cfg.data.target_modality} intensity range recorded (no "
                        f"{DATA_FINGERPRINT_FILE}, no --target_range, no stats file in {cfg.data.data_dir}); "
                        "pass --target_range=min,max")
    names = recorded.get("class_names") or known.get("class_names")
    return RunData(intensity_range, inputs.class_names({"class_names": names}, cfg.model.num_classes),
                   recorded.get("preprocessing"), recorded)


def _predicted(predict_logits, image, intensity_range, batch_size, output):
    """output(logits of a batch's slices) for every slice of an H x W x D volume, stacked on axis 2."""
    if image.ndim != 3:
        raise ValueError(f"expected an H x W x D image volume, got shape {image.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    slices = to_unit_range(np.moveaxis(image, 2, 0).astype(np.float32), intensity_range)[..., np.newaxis]
    depth = slices.shape[0]
    results = []
    for start in range(0, depth, batch_size):
        batch = slices[start:start + batch_size]
        count = batch.shape[0]
        if count < batch_size:
            batch = np.concatenate([batch, np.repeat(batch[-1:], batch_size - count, axis=0)])
        logits = np.asarray(predict_logits(batch.astype(np.float32)))
        results.append(output(logits[:count]))
    return np.moveaxis(np.concatenate(results), 0, 2)


def predict_volume(predict_logits, image, intensity_range, batch_size, flip=False):
    """Integer label volume H x W x D of an image volume H x W x D (slice axis 2).

    predict_logits: callable, float32 [N, H, W, 1] in [-1, 1] -> logits [N, H, W, C] (a
    tf.function or a numpy function). Every slice is predicted: the last batch is padded to
    `batch_size` by repeating its last slice (so a tf.function sees one shape and traces once)
    and the padded outputs are dropped. The official script predicted only
    floor(D / 128) * 128 slices and counted the rest as background.

    flip: the test volumes are stored flipped on axes 0 and 1 relative to the training slices.
    The official script flipped image and label before inference and scored them in that
    orientation; here the image is flipped for inference and the prediction flipped back, so it
    lines up with the stored label and image (and the saved NIfTI overlays them). Dice and ASSD
    do not change under the flip.
    """
    volume = np.flip(image, (0, 1)) if flip else image
    prediction = _predicted(predict_logits, volume, intensity_range, batch_size, lambda l: np.argmax(l, axis=-1))
    return np.flip(prediction, (0, 1)) if flip else prediction


def predict_logits_volume(predict_logits, image, intensity_range, batch_size):
    """Float32 logits H x W x D x C of an image volume H x W x D, batched as `predict_volume`."""
    return _predicted(predict_logits, image, intensity_range, batch_size, lambda l: l.astype(np.float32))
