"""The training loop: run folder, data, checkpoints (and resuming), TensorBoard, progress line."""
import json
import os
import pathlib
import shutil
import signal
import sys
import time

import keras
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from sifa_synthmix import checkpoint_files, distribution, inputs, visualize
from sifa_synthmix.config import DATA_PATH_FIELDS, TrainConfig, absolute_path_spec
from sifa_synthmix.data.layout import atomic_write_text
from sifa_synthmix.data.reader import DataError, as_data_error, find_corrupt_file
from sifa_synthmix.run_lock import RunLock
from sifa_synthmix.task_factory import build_task
from sifa_synthmix.task import foreground_dice

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# What evaluation must find unchanged in the data (inputs.data_fingerprint), as at training.
DATA_FINGERPRINT_FILE = "data_fingerprint.json"
# Settings a resumed run may change: they do not change what is trained.
RESUMABLE_SETTINGS = ("max_steps", "save_every", "keep_checkpoints", "log_every", "image_every", "max_nonfinite",
                      "distribution")
PROGRESS_LOSSES = (("g_A", "g_loss_A"), ("d_B", "d_loss_B"), ("seg", "seg_loss"), ("de_B", "g_loss_B"),
                   ("d_A", "d_loss_A"), ("d_P", "d_loss_P"))
IMAGES_SHOWN = 4


class RunFolderError(Exception):
    """The output folder holds a run that this one must not overwrite."""


class NonFiniteError(Exception):
    """Too many steps in a row had a non-finite loss or gradient."""


class TrainingStopped(Exception):
    """SIGINT or SIGTERM stopped the run; its last step is checkpointed. exit_code: 128 + signal."""

    def __init__(self, signum, message):
        super().__init__(message)
        self.exit_code = 128 + signum


def _flatten(values, prefix=""):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def _comparable_settings(config_dict):
    """A config's flattened settings as compared between runs: its paths resolved, and without
    output_dir (a run folder is the folder its config.json lives in, wherever it was moved)."""
    flat = _flatten(json.loads(json.dumps(config_dict)))
    flat.pop("output_dir", None)
    for name in DATA_PATH_FIELDS:
        if isinstance(flat.get(f"data.{name}"), str):
            flat[f"data.{name}"] = absolute_path_spec(flat[f"data.{name}"])
    return flat


def _check_writable(out):
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"{out}: --output_dir is a file, not a folder")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"{existing}: not writable, so --output_dir={out} cannot be written")


def has_checkpoint(out):
    return bool(checkpoint_files.newest_first(pathlib.Path(out) / CHECKPOINT_DIR))


def check_run_folder(cfg, overwrite=False):
    """What starting `cfg` does to its output folder, decided before anything is written.

    Returns "new" (no run there), "resume" (a run with the same flags), "retry" (a run with
    other flags that never saved a checkpoint) or "replace" (other flags and overwrite: its
    checkpoints and events go). Raises RunFolderError for a folder it must not touch.
    """
    out = pathlib.Path(cfg.output_dir)
    _check_writable(out)
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        return "new"
    try:
        old = _comparable_settings(json.loads(saved_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, AttributeError) as error:
        raise RunFolderError(f"{saved_path}: not a run's config ({error}); move it away or choose another "
                             "--output_dir") from None
    new = _comparable_settings(cfg.to_dict())
    differing = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_SETTINGS and old.get(k) != new.get(k))
    if not differing:
        return "resume"
    if not has_checkpoint(out):
        return "retry"
    if overwrite:
        return "replace"
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing)
    raise RunFolderError(f"{out} holds a run with other flags ({details}); "
                         "pass --overwrite to replace it or choose another --output_dir")


def prepare_run_folder(cfg, overwrite=False, log=print):
    """Creates OUTPUT_DIR and saves the run's flags there (paths made absolute), as
    check_run_folder decides; returns the folder."""
    cfg = cfg.with_absolute_paths()
    out = pathlib.Path(cfg.output_dir)
    plan = check_run_folder(cfg, overwrite)
    if plan == "replace":
        log(f"--overwrite: deleting the checkpoints and events of the run with other flags in {out}")
        for sub in (CHECKPOINT_DIR, "tb"):
            shutil.rmtree(out / sub, ignore_errors=True)
    elif plan == "retry":
        log(f"{out} held a run with other flags that never saved a checkpoint; starting afresh")
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(cfg, out)
    return out


def write_run_config(cfg, folder):
    """Writes FOLDER/config.json: the flags a run is trained, resumed and evaluated with."""
    atomic_write_text(pathlib.Path(folder) / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")


def load_run_config(run_dir):
    """The TrainConfig a run folder was trained with."""
    return TrainConfig.from_dict(json.loads((pathlib.Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")))


def step_variable(value=0):
    """The run's step counter, saved in every checkpoint (the trainer's, not the replicas')."""
    return tf.Variable(value, dtype=tf.int64, trainable=False, name="step")


def run_checkpoint(task, step, **extra_items):
    """The tf.train.Checkpoint of a run: the task's items, the step and any extra items."""
    return tf.train.Checkpoint(**task.checkpoint_items(), step=step, **extra_items)


def checkpoint_manager(checkpoint, directory, cfg):
    """Keeps cfg.keep_checkpoints checkpoints in `directory`; save with checkpoint_number=step."""
    return tf.train.CheckpointManager(checkpoint, str(directory), max_to_keep=cfg.keep_checkpoints)


def scalar_tag(metric):
    """TensorBoard tag of a step metric: inspector accuracies and SynthMix losses get their own groups."""
    if metric.startswith("dice_"):
        return f"dice/{metric[len('dice_'):]}"
    if metric.startswith("inspector_accuracy_"):
        return f"inspector/accuracy_{metric[len('inspector_accuracy_'):]}"
    if metric == "inspector_cls":
        return "synthmix/L_cls"
    if metric.startswith("mix_adv_"):
        return f"synthmix/L_adv_mix_{metric[len('mix_adv_'):]}"
    return f"loss/{metric}"


def _format_eta(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Trainer:
    """Trains one run of a TrainConfig; a second Trainer on the same folder resumes it."""

    def __init__(self, cfg, overwrite=False, log=print):
        self.cfg = cfg.with_absolute_paths()
        self.overwrite = overwrite
        self.log = log
        self.lock = None

    def _build(self):
        """Everything that can fail on bad flags or data (the task included) comes before the
        run folder changes; the folder is locked before it does."""
        cfg = self.cfg
        strategy = self.strategy = distribution.build_strategy(cfg.distribution)
        distribution.check_run(strategy, cfg)
        # Under several workers only the chief writes config, events and checkpoints.
        self.chief = distribution.is_chief(strategy)
        if self.chief:
            check_run_folder(cfg, self.overwrite)  # a refusal comes before the slow parts
        else:
            self.log = lambda _: None
        resolved = inputs.resolve_data(cfg.data)
        keras.utils.set_random_seed(cfg.seed)
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        source, target, val = inputs.build_training_datasets(cfg, resolved)
        self.record_paths = resolved.source_train + resolved.target_train + resolved.target_val
        with strategy.scope():
            self.task = build_task(cfg)
        self.out = pathlib.Path(cfg.output_dir)
        if self.chief:
            self.lock = RunLock(self.out, self.log).acquire()
            prepare_run_folder(cfg, self.overwrite, self.log)  # decides again, now under the lock
            fingerprint_path = self.out / DATA_FINGERPRINT_FILE
            if not has_checkpoint(self.out) or not fingerprint_path.is_file():
                atomic_write_text(fingerprint_path, json.dumps(inputs.data_fingerprint(cfg.data, resolved)) + "\n")
        self.step = step_variable()
        self.source_it = iter(distribution.distribute_dataset(strategy, source))
        self.target_it = iter(distribution.distribute_dataset(strategy, target))
        self.val_it = iter(val) if val is not None else None
        iterators = dict(source_iterator=self.source_it, target_iterator=self.target_it) if cfg.deterministic else {}
        self.checkpoint = run_checkpoint(self.task, self.step, **iterators)
        checkpoint_dir = self.out / CHECKPOINT_DIR
        self.manager = checkpoint_manager(
            self.checkpoint, checkpoint_dir if self.chief else distribution.scratch_dir(strategy), cfg)
        latest = checkpoint_files.newest_intact(checkpoint_dir, self.log)
        self.saved_step = None
        if latest:
            self.saved_step = int(latest.rsplit("-", 1)[1])
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            self.log(f"resumed {latest} at step {int(self.step)}")
        self.train_step = distribution.distributed_step(strategy, self.task.train_step, cfg.jit_compile)
        self.predict = tf.function(self.task.predict_logits, autograph=False)
        self.writer = (tf.summary.create_file_writer(str(self.out / "tb")) if self.chief
                       else tf.summary.create_noop_writer())

    def _write_hparams(self):
        if not self.chief:
            return
        with self.writer.as_default(step=int(self.step)):
            hparams_api.hparams(_flatten(self.cfg.to_dict()), trial_id=str(self.out))

    def _write_scalars(self, step, metrics, target_batch):
        scalars = {scalar_tag(k): float(v) for k, v in metrics.items()}
        scalars.update({f"lr/{k}": float(keras.ops.convert_to_numpy(v))
                        for k, v in self.task.learning_rates().items()})
        images_B, labels_B = target_batch
        scalars["dice/B_train_batch"] = float(foreground_dice(self.predict(images_B), labels_B))
        if self.val_it is not None:
            val_images, val_labels = next(self.val_it)
            scalars["dice/B_val_batch"] = float(foreground_dice(self.predict(val_images), val_labels))
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        return scalars

    def _write_images(self, step, images, target_batch):
        num_classes = self.cfg.model.num_classes
        shown = {k: v[:IMAGES_SHOWN] for k, v in images.items()}
        with self.writer.as_default(step=step):
            for name in ("A", "B", "fake_A", "fake_B", "cycle_A", "cycle_B"):
                if name in shown:
                    tf.summary.image(f"images/{name}", visualize.grey_to_rgb(shown[name]), max_outputs=IMAGES_SHOWN)
            for name in sorted(k for k in shown if k.startswith("mix/")):
                tf.summary.image(name, shown[name], max_outputs=IMAGES_SHOWN)
            # The image the segmentation loss saw (fake_B for SIFA) with predicted and true masks.
            masks = {
                "masks/train_input_predicted": (shown["seg_image"], tf.argmax(shown["seg_logits"], axis=-1)),
                "masks/train_input_true": (shown["seg_image"], tf.argmax(shown["seg_labels"], axis=-1)),
            }
            images_B, labels_B = (t[:IMAGES_SHOWN] for t in target_batch)
            masks["masks/B_predicted"] = (images_B, tf.argmax(self.predict(images_B), axis=-1))
            masks["masks/B_true"] = (images_B, tf.argmax(labels_B, axis=-1))
            for name, (image, labels) in masks.items():
                tf.summary.image(name, visualize.overlay(image, labels, num_classes), max_outputs=IMAGES_SHOWN)

    def _progress(self, step, seconds_per_step, metrics):
        cfg = self.cfg
        losses = " ".join(f"{short} {float(metrics[key]):.3f}" for short, key in PROGRESS_LOSSES if key in metrics)
        if "inspector_cls" in metrics:
            losses += (f" L_cls {float(metrics['inspector_cls']):.3f} "
                       f"acc_mix {float(metrics['inspector_accuracy_unaligned_mix']):.2f}")
        dice = " ".join(f"{k.replace('_', ' ', 1)} {float(v):.3f}" for k, v in metrics.items() if k.startswith("dice_"))
        return (f"step {step}/{cfg.max_steps} | {seconds_per_step:.2f} s/step | "
                f"ETA {_format_eta((cfg.max_steps - step) * seconds_per_step)} | {losses} | {dice}")

    def save(self):
        """Saves a checkpoint; every worker takes part, only the chief's stays."""
        path = checkpoint_files.save(self.manager, int(self.step))
        self.saved_step = int(self.step)
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)
        return path

    def _request_stop(self, signum, frame):
        del frame
        self.stop_signal = signum

    def _check_finite(self, step, metrics):
        """Counts steps in a row with a skipped update; raises after cfg.max_nonfinite of them."""
        skipped = int(metrics.get("skipped_updates", 0))
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if skipped else 0
        if skipped:
            self.log(f"step {step}: {skipped} update(s) skipped (non-finite loss or gradient), "
                     f"{self.nonfinite_in_a_row} step(s) in a row")
        if self.nonfinite_in_a_row >= self.cfg.max_nonfinite:
            raise NonFiniteError(
                f"stopped at step {step}: {self.nonfinite_in_a_row} steps in a row with non-finite losses or "
                f"gradients; the last good checkpoint is {self.manager.latest_checkpoint}")

    def run(self):
        """Trains up to max_steps; returns the last step's metrics as floats.

        SIGINT or SIGTERM ends the run after the current step with a checkpoint, then raises
        TrainingStopped. The run folder is locked throughout.
        """
        try:
            return self._train()
        finally:
            if self.lock is not None:
                self.lock.release()

    def _train(self):
        cfg = self.cfg
        self._build()
        self._write_hparams()
        metrics, interval_start, interval_steps = {}, None, 0
        self.stop_signal, self.nonfinite_in_a_row = None, 0
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while int(self.step) < cfg.max_steps and self.stop_signal is None:
                source_images, source_labels = next(self.source_it)
                target_batch = next(self.target_it)
                metrics, images = self.train_step(source_images, source_labels, *target_batch)
                target_batch = distribution.local_batch(self.strategy, target_batch)
                step = int(self.step.assign_add(1))
                self._check_finite(step, metrics)
                if interval_start is None:  # leave the tracing step out of the timing
                    interval_start, interval_steps = time.perf_counter(), 0
                else:
                    interval_steps += 1
                if self.chief and (step % cfg.log_every == 0 or step == cfg.max_steps):
                    self._write_scalars(step, metrics, target_batch)
                    elapsed = time.perf_counter() - interval_start
                    self.log(self._progress(step, elapsed / max(interval_steps, 1), metrics))
                    interval_start, interval_steps = time.perf_counter(), 0
                if self.chief and (step % cfg.image_every == 0 or step == cfg.max_steps):
                    self._write_images(step, images, target_batch)
                if step % cfg.save_every == 0:
                    self.save()
        except tf.errors.DataLossError:
            corrupt = find_corrupt_file(self.record_paths)
            raise DataError(f"{corrupt}: a record is corrupt (checksum mismatch)" if corrupt
                            else "a record file is corrupt") from None
        except tf.errors.InvalidArgumentError as error:
            data_error = as_data_error(error)
            if data_error is None:
                raise
            raise data_error from None
        finally:
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            self.writer.flush()
        if self.saved_step != int(self.step):
            self.save()
        sys.stdout.flush()
        if self.stop_signal:
            raise TrainingStopped(self.stop_signal, f"{signal.Signals(self.stop_signal).name}: stopped at step "
                                                    f"{int(self.step)}, saved in {self.manager.latest_checkpoint}")
        return {k: float(v) for k, v in metrics.items()}
