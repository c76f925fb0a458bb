"""The training loop: data, checkpoints (and resuming), TensorBoard, and what the run prints (kept
in RUN/train.log too). The run folder's parts and the checks before it changes are run_folder.py's."""
import dataclasses
import json
import os
import pathlib
import shutil
import signal
import sys
import time

import keras
import tensorflow as tf

from sifa_synthmix import cpu_features, visualize
from sifa_synthmix.config import EVAL_EVERY_AUTO, auto_eval_every
from sifa_synthmix.data import inputs
from sifa_synthmix.data.layout import PreparedLayout
from sifa_synthmix.data.reader import DataError, as_data_error, find_corrupt_file
from sifa_synthmix.errors import ToolkitError, TrainingStopped
from sifa_synthmix.evaluation.learning_curve import LearningCurve, curve_volumes
from sifa_synthmix.evaluation.methods import method_name
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.runs import checkpoint_files
from sifa_synthmix.runs.run_folder import (CHECKPOINT_DIR, DATA_FINGERPRINT_FILE, LOG_FILE, REPLACED_DIR, SIGNAL_FILE,
                                           TENSORBOARD_DIR, check_data_fingerprint, check_run_folder,
                                           checkpoint_manager, discard_replaced, has_checkpoint, prepare_run_folder,
                                           restore_replaced, run_checkpoint, sealed_fingerprint, step_variable)
from sifa_synthmix.runs.run_lock import RunLock
from sifa_synthmix.tensorflow_paths import for_people, for_tensorflow
from sifa_synthmix.training import adaptation_signal, distribution, step_memory
from sifa_synthmix.training.run_log import RunLog
from sifa_synthmix.training.task import foreground_dice
from sifa_synthmix.training.task_factory import build_task
from sifa_synthmix.training.tensorboard_summaries import RunSummaries

PROGRESS_LOSSES = (("g_A", "g_loss_A"), ("d_B", "d_loss_B"), ("seg", "seg_loss"), ("de_B", "g_loss_B"),
                   ("d_A", "d_loss_A"), ("d_P", "d_loss_P"))
IMAGES_SHOWN = 4


class NonFiniteError(ToolkitError):
    """Too many steps in a row had a non-finite loss or gradient."""

    exit_code = 3


def resolve_eval_every(cfg, resolved):
    """cfg.schedule.eval_every, with EVAL_EVERY_AUTO (--eval_every=auto) turned into auto_eval_every when
    the target has labelled validation or test volumes to score, else 0 (off)."""
    if cfg.schedule.eval_every != EVAL_EVERY_AUTO:
        return cfg.schedule.eval_every
    modality = cfg.data.target_modality
    test_volumes = PreparedLayout(cfg.data.data_dir).test_volumes(modality)
    labelled_test = inputs.split_unlabelled(test_volumes, resolved.info, modality, "test")[0]
    schedule = cfg.schedule
    return auto_eval_every(schedule.max_steps, schedule.save_every) if resolved.target_val or labelled_test else 0


def _format_duration(seconds):
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def describe_devices(strategy):
    """The devices a run trains on, for its first lines."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus]
    bfloat16 = cpu_features.native_bfloat16()
    instructions = f"bfloat16 instructions: {' '.join(bfloat16)}" if bfloat16 else "no bfloat16 instructions"
    where = (f"{len(gpus)} GPU(s) ({', '.join(names)})" if gpus
             else f"CPU ({os.cpu_count()} cores, {instructions}, no GPU found)")
    replicas = strategy.num_replicas_in_sync
    return where + (f", {replicas} replicas" if replicas > 1 else "")


class Trainer:
    """Trains one run of a TrainConfig; a second Trainer on the same folder resumes it.

    `log` prints one line; the chief also keeps every line in RUN/train.log."""

    def __init__(self, cfg, overwrite=False, log=print):
        self.cfg = cfg.with_absolute_paths()
        self.overwrite = overwrite
        self.log = RunLog(log)
        self.lock = None
        self.writer = None
        self.replacing = False  # an old run waits in OUT/replaced_run for this one's first checkpoint

    def _build(self):
        """Everything that can fail on bad flags or data (the task included) comes before the
        run folder changes; the folder is locked before it does."""
        cfg = self.cfg
        strategy = self.strategy = distribution.build_strategy(cfg.runtime.distribution)
        distribution.check_run(strategy, cfg)
        # Under several workers only the chief writes config, events, checkpoints and train.log.
        self.chief = distribution.is_chief(strategy)
        plan = None
        if self.chief:
            plan = check_run_folder(cfg, self.overwrite)  # a refusal comes before the slow parts
        else:
            self.log = RunLog(lambda _: None)
            self.log.without_file()
        resolved = inputs.resolve_data(cfg.data)
        schedule = dataclasses.replace(cfg.schedule, eval_every=resolve_eval_every(cfg, resolved))
        cfg = self.cfg = dataclasses.replace(cfg, schedule=schedule)
        if self.chief and plan == "resume" and has_checkpoint(cfg.output_dir):
            check_data_fingerprint(cfg.output_dir, cfg, inputs.data_fingerprint(cfg.data, resolved), "resume", self.log)
        keras.utils.set_random_seed(cfg.seed)
        if cfg.runtime.deterministic:
            tf.config.experimental.enable_op_determinism()
        source, target, val = inputs.build_training_datasets(cfg, resolved)
        self.record_paths = resolved.source_train + resolved.target_train + resolved.target_val
        self.target_labelled = not resolved.target_unlabelled
        class_names = self.class_names = inputs.class_names(resolved.info, cfg.model.num_classes)
        self.curve = None
        if cfg.schedule.eval_every and self.chief:
            self.curve = LearningCurve(cfg.output_dir, *curve_volumes(cfg, resolved, self.log), resolved.target_range,
                                       class_names, cfg.batch_size)
        with strategy.scope():
            self.task = build_task(cfg)
        if cfg.kind == "sifa" and not tf.config.list_physical_devices("GPU"):
            step_memory.check_step_fits(cfg, self.task.parameter_counts()["total"], step_memory.reachable_megabytes())
        self.out = pathlib.Path(cfg.output_dir)
        if self.chief:
            self.lock = RunLock(self.out, self.log).acquire()
            prepare_run_folder(cfg, self.overwrite, self.log)  # decides again, now under the lock
            self.replacing = (self.out / REPLACED_DIR).is_dir()
            self.log.keep_in(self.out)
            fingerprint_path = self.out / DATA_FINGERPRINT_FILE
            if not has_checkpoint(self.out) or not fingerprint_path.is_file():
                atomic_write_text(fingerprint_path,
                                  json.dumps(sealed_fingerprint(inputs.data_fingerprint(cfg.data, resolved))) + "\n")
        self.step = step_variable()
        self.source_it = iter(distribution.distribute_dataset(strategy, source))
        self.target_it = iter(distribution.distribute_dataset(strategy, target))
        self.val_it = iter(val) if val is not None else None
        iterators = (dict(source_iterator=self.source_it, target_iterator=self.target_it) if cfg.runtime.deterministic
                     else {})
        self.checkpoint = run_checkpoint(self.task, self.step, **iterators)
        checkpoint_dir = self.out / CHECKPOINT_DIR
        self.manager = checkpoint_manager(
            self.checkpoint, checkpoint_dir if self.chief else distribution.scratch_dir(strategy), cfg, self.log)
        self._announce(resolved)
        if self.chief:
            checkpoint_files.remove_unfinished(checkpoint_dir, self.log)
        latest = checkpoint_files.newest_intact(checkpoint_dir, self.log)
        self.saved_step = None
        if latest:
            self.saved_step = checkpoint_files.step_of(latest)
            self.checkpoint.restore(for_tensorflow(latest)).assert_existing_objects_matched()
            self.log(f"resumed {latest} at step {int(self.step)}")
        if self.curve is not None:
            self.curve.keep_until(int(self.step))
        self.train_step = distribution.distributed_step(strategy, self.task.train_step, cfg.runtime.jit_compile)
        self.predict = tf.function(self.task.predict_logits, autograph=False)
        self.summaries = RunSummaries(cfg, class_names)

    def _announce(self, resolved):
        """The run's first lines: folder, data, model, precision and devices."""
        cfg = self.cfg
        data = cfg.data
        counts = [f"source {data.source_modality.upper()} {inputs.count_slices(resolved.source_train)}",
                  f"target {data.target_modality.upper()} {inputs.count_slices(resolved.target_train)}"]
        if resolved.target_val:
            counts.append(f"target validation {inputs.count_slices(resolved.target_val)}")
        self.log(f"run folder: {self.out}")
        self.log(f"data: {data.data_dir}; training slices: {', '.join(counts)}")
        if resolved.target_unlabelled:
            self.log(f"target {data.target_modality.upper()} training data: {resolved.target_unlabelled} of "
                     f"{len(resolved.target_train)} volumes have no labels (as domain adaptation expects); "
                     "no Dice on target training batches")
        parameters = self.task.parameter_counts()["total"]
        self.log(f"model: {method_name(cfg.to_dict())}, {parameters:,} trainable parameters, "
                 f"{cfg.model.image_size} x {cfg.model.image_size} slices, batch {cfg.batch_size}; "
                 f"precision {cfg.runtime.precision}; device: {describe_devices(self.strategy)}")
        if self.curve is not None:
            self.log(f"learning curve: target Dice and ASSD on the whole {self.curve.kind} volumes every "
                     f"{cfg.schedule.eval_every} step(s) and at the end (--eval_every)")

    def _write_session_start(self):
        with self.writer.as_default(step=int(self.step)):
            if int(self.step) == 0:
                self.summaries.write_legend()
            self.summaries.write_session_start(trial_id=str(self.out))

    def _end_session(self, status):
        """The HParams session end record (status: "success", "stopped" or "failed")."""
        if self.writer is not None:
            with self.writer.as_default():
                self.summaries.write_session_end(status, int(self.step))
            self.writer.flush()

    def _write_scalars(self, step, metrics, target_batch):
        summaries = self.summaries
        scalars = {}
        for metric, value in metrics.items():
            if not adaptation_signal.is_measure(metric):  # written as the window's signal
                scalars[summaries.step_scalar(metric)] = float(value)
        for name, rate in self.task.learning_rates().items():
            scalars[summaries.learning_rate(name)] = float(keras.ops.convert_to_numpy(rate))
        for name, scale in self.task.loss_scale_values().items():
            scalars[summaries.loss_scale(name)] = float(scale.numpy())
        images_B, labels_B = target_batch
        if self.target_labelled:
            scalars[summaries.batch_dice("train")] = float(foreground_dice(self.predict(images_B), labels_B))
        if self.val_it is not None:
            val_images, val_labels = next(self.val_it)
            scalars[summaries.batch_dice("val")] = float(foreground_dice(self.predict(val_images), val_labels))
        with self.writer.as_default(step=step):
            for (tag, description), value in scalars.items():
                tf.summary.scalar(tag, value, description=description)

    def _close_signal_window(self, target_batch, source_labels):
        """The adaptation signal of the steps since the last log line. A task whose step computes
        none (the segmenter) gets it from s_B's inference-mode prediction on the logged target batch."""
        if self.signal_window.is_empty():
            self.signal_window.add(adaptation_signal.step_measures(self.predict(target_batch[0]), source_labels))
        return self.signal_window.close(self.class_names)

    def _write_signal(self, step, adaptation):
        with self.writer.as_default(step=step):
            for (tag, description), value in self.summaries.signal_scalars(adaptation).items():
                tf.summary.scalar(tag, value, description=description)

    def _final_signal(self):
        """The signal the run's verdict is taken from: s_B's inference-mode predictions (e_B's moving
        statistics, as evaluation and prediction run it) on about FINAL_SIGNAL_SLICES target training
        slices, against as many source slices' labels, predicted FINAL_SIGNAL_CHUNK batches at a time.
        The training step's own windows see e_B's batch statistics, under which a run can look
        adapted that evaluation finds is not (docs/phantom_results.md)."""
        window = adaptation_signal.SignalWindow()
        batches = max(1, -(-adaptation_signal.FINAL_SIGNAL_SLICES // self.cfg.batch_size))
        for start in range(0, batches, adaptation_signal.FINAL_SIGNAL_CHUNK):
            pairs = [(distribution.local_batch(self.strategy, next(self.target_it))[0],
                      distribution.local_batch(self.strategy, next(self.source_it)[1]))
                     for _ in range(min(adaptation_signal.FINAL_SIGNAL_CHUNK, batches - start))]
            targets, labels = (tf.concat(parts, axis=0) for parts in zip(*pairs))
            window.add(adaptation_signal.step_measures(self.predict(targets), labels))
        return window.close(self.class_names)

    def _report_signal(self):
        """Writes RUN/adaptation_signal.json and says what its verdict is."""
        record = adaptation_signal.end_of_run_record(self._final_signal(), int(self.step))
        path = self.out / SIGNAL_FILE
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        source_only = self.cfg.kind == "segmenter" and self.cfg.train_domain == "source"
        self.log(adaptation_signal.end_of_run_line(record, path, source_only))

    def _write_images(self, step, images, target_batch):
        num_classes = self.cfg.model.num_classes
        summaries = self.summaries
        shown = {k: v[:IMAGES_SHOWN] for k, v in images.items()}
        images_B, labels_B = (t[:IMAGES_SHOWN] for t in target_batch)
        panels = {summaries.mask_pair("train_input"): (shown["seg_image"], shown["seg_logits"], shown["seg_labels"]),
                  summaries.mask_pair("target"): (images_B, self.predict(images_B), labels_B)}
        with self.writer.as_default(step=step):
            for name in ("A", "B", "fake_A", "fake_B", "cycle_A", "cycle_B"):
                if name in shown:
                    tag, description = summaries.image(name)
                    tf.summary.image(tag, visualize.grey_to_rgb(shown[name]), max_outputs=IMAGES_SHOWN,
                                     description=description)
            for name in sorted(k for k in shown if k.startswith("mix/")):
                tf.summary.image(name, shown[name], max_outputs=IMAGES_SHOWN, description=summaries.mix_panel(name))
            for (tag, description), (image, logits, onehot) in panels.items():
                pair = visualize.prediction_beside_truth(image, tf.argmax(logits, axis=-1), tf.argmax(onehot, axis=-1),
                                                         num_classes)
                tf.summary.image(tag, pair, max_outputs=IMAGES_SHOWN, description=description)

    def _progress(self, step, seconds_per_step, metrics, overflows, adaptation=None):
        cfg = self.cfg
        losses = " ".join(f"{short} {float(metrics[key]):.3f}" for short, key in PROGRESS_LOSSES if key in metrics)
        if "inspector_cls" in metrics:
            losses += (f" L_cls {float(metrics['inspector_cls']):.3f} "
                       f"acc_mix {float(metrics['inspector_accuracy_unaligned_mix']):.2f}")
        dice = " ".join(f"{k.replace('_', ' ', 1)} {float(v):.3f}" for k, v in metrics.items() if k.startswith("dice_"))
        signal_note = f" | {adaptation_signal.progress_text(adaptation)}" if adaptation else ""
        overflow_note = f" | {overflows} loss-scale overflow(s) since the last line" if overflows else ""
        return (f"step {step}/{cfg.schedule.max_steps} | {seconds_per_step:.2f} s/step | "
                f"ETA {_format_duration((cfg.schedule.max_steps - step) * seconds_per_step)} | {losses} | {dice}"
                f"{signal_note}{overflow_note}")

    def save(self):
        """Saves a checkpoint; every worker takes part, only the chief's stays."""
        path = checkpoint_files.save(self.manager, int(self.step))
        self.saved_step = int(self.step)
        if not self.chief:
            shutil.rmtree(self.manager.directory, ignore_errors=True)
        if self.replacing:
            discard_replaced(self.out)
            self.replacing = False
        self.log(f"saved {path}")
        return path

    def _request_stop(self, signum, frame):
        del frame
        self.stop_signal = signum

    def _check_finite(self, step, metrics):
        """Counts steps in a row with a skipped update; raises after cfg.schedule.max_nonfinite of them."""
        skipped = int(metrics.get("skipped_updates", 0))
        self.nonfinite_in_a_row = self.nonfinite_in_a_row + 1 if skipped else 0
        if skipped:
            self.log(f"step {step}: {skipped} update(s) skipped (non-finite loss or gradient), "
                     f"{self.nonfinite_in_a_row} step(s) in a row")
        if self.nonfinite_in_a_row >= self.cfg.schedule.max_nonfinite:
            raise NonFiniteError(
                f"stopped at step {step}: {self.nonfinite_in_a_row} steps in a row with non-finite losses or "
                f"gradients; the last good checkpoint is {for_people(self.manager.latest_checkpoint)}")

    def run(self):
        """Trains up to max_steps; returns the last step's metrics as floats ({} when the run
        was already at max_steps).

        SIGINT or SIGTERM ends the run after the current step with a checkpoint, then raises
        TrainingStopped. The run folder is locked throughout. An error that ends the run is
        recorded in train.log (the caller prints it).
        """
        try:
            return self._train()
        except TrainingStopped as stop:
            self._close_session("stopped", str(stop))
            raise
        except Exception as error:
            self._close_session("failed", f"error: {error}")
            self._undo_replacement()
            raise
        except BaseException as interruption:  # SystemExit from main's signal handler, KeyboardInterrupt
            self._close_session("stopped", f"stopped ({type(interruption).__name__})")
            self._undo_replacement()
            raise
        finally:
            if self.lock is not None:
                self.lock.release()

    def _close_session(self, status, line):
        """Records in train.log how the session ended, then ends its TensorBoard session; on a full
        disk either can fail, and must not hide the error that ended the run."""
        for close in (lambda: self.log.record(line), lambda: self._end_session(status)):
            try:
                close()
            except (OSError, tf.errors.OpError):
                pass

    def _undo_replacement(self):
        if self.replacing:
            if self.writer is not None:
                self.writer.close()
            restore_replaced(self.out, self.log)
            self.replacing = False

    def _train(self):
        self._build()
        cfg = self.cfg  # as _build resolved it
        if int(self.step) >= cfg.schedule.max_steps:
            self.log(f"{self.out} is already at step {int(self.step)} of --max_steps={cfg.schedule.max_steps}: "
                     "nothing to train (a higher --max_steps continues it)")
            return {}
        if self.chief:
            self.writer = tf.summary.create_file_writer(str(self.out / TENSORBOARD_DIR))
            self._write_session_start()
        self.log(f"building the training step (TensorFlow traces it on the first step: "
                 f"{'XLA-compiled, ' if cfg.runtime.jit_compile else ''}this can take minutes)")
        metrics, interval_start, interval_steps, overflows = {}, None, 0, 0
        self.stop_signal, self.nonfinite_in_a_row = None, 0
        self.signal_window, adaptation = adaptation_signal.SignalWindow(), None
        started = time.perf_counter()
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while int(self.step) < cfg.schedule.max_steps and self.stop_signal is None:
                source_images, source_labels = next(self.source_it)
                target_batch = next(self.target_it)
                metrics, images = self.train_step(source_images, source_labels, *target_batch)
                target_batch = distribution.local_batch(self.strategy, target_batch)
                step = int(self.step.assign_add(1))
                self._check_finite(step, metrics)
                overflows += int(metrics.get("loss_scale_overflows", 0))
                if interval_start is None:  # leave the tracing step out of the timing
                    self.log(f"first step took {time.perf_counter() - started:.1f} s (building the step included)")
                    interval_start, interval_steps = time.perf_counter(), 0
                else:
                    interval_steps += 1
                if self.chief:
                    self.signal_window.add(metrics)
                if self.chief and (step % cfg.schedule.log_every == 0 or step == cfg.schedule.max_steps):
                    self._write_scalars(step, metrics, target_batch)
                    adaptation = self._close_signal_window(target_batch, distribution.local_batch(self.strategy,
                                                                                                  source_labels))
                    self._write_signal(step, adaptation)
                    elapsed = time.perf_counter() - interval_start
                    self.log(self._progress(step, elapsed / max(interval_steps, 1), metrics, overflows, adaptation))
                    interval_start, interval_steps, overflows = time.perf_counter(), 0, 0
                if self.chief and (step % cfg.schedule.image_every == 0 or step == cfg.schedule.max_steps):
                    self._write_images(step, images, target_batch)
                if self.curve is not None and (step % cfg.schedule.eval_every == 0 or step == cfg.schedule.max_steps):
                    evaluation_start = time.perf_counter()
                    self.curve.evaluate(self.predict, step, self.writer, self.log)
                    interval_start += time.perf_counter() - evaluation_start  # not in the s/step
                if step % cfg.schedule.save_every == 0:
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
        if self.saved_step != int(self.step):
            self.save()
        sys.stdout.flush()
        if self.stop_signal:
            saved = for_people(self.manager.latest_checkpoint)
            raise TrainingStopped(self.stop_signal, f"{signal.Signals(self.stop_signal).name}: stopped at step "
                                                    f"{int(self.step)}, saved in {saved}")
        self._end_session("success")
        self.log(f"finished: step {int(self.step)} of {cfg.schedule.max_steps} in "
                 f"{_format_duration(time.perf_counter() - started)}. Results in {self.out}: {CHECKPOINT_DIR}/, "
                 f"{TENSORBOARD_DIR}/ (tensorboard --logdir {self.out / TENSORBOARD_DIR}), {LOG_FILE}; evaluate with "
                 f"python main.py --mode=evaluate --output_dir={self.out}")
        if self.chief:
            self._report_signal()
        return {k: float(v) for k, v in metrics.items()}
