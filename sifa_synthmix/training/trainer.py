"""The training loop: data, the train step, checkpoints (and resuming) and stopping (SIGINT and
SIGTERM, non-finite steps). What the run reports at the loop's fixed points (its lines, kept in
RUN/train.log too, TensorBoard, the learning curve, the adaptation signal) is reporting.py's; the
run folder's parts and the checks before it changes are run_folder.py's."""
import dataclasses
import json
import pathlib
import shutil
import signal
import sys

import keras
import tensorflow as tf

from sifa_synthmix.config import EVAL_EVERY_AUTO, auto_eval_every
from sifa_synthmix.data import inputs
from sifa_synthmix.data.layout import PreparedLayout
from sifa_synthmix.data.reader import DataError, as_data_error, find_corrupt_file
from sifa_synthmix.errors import ToolkitError, TrainingStopped
from sifa_synthmix.evaluation.learning_curve import LearningCurve, curve_volumes
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.runs import checkpoint_files
from sifa_synthmix.runs.run_folder import (CHECKPOINT_DIR, DATA_FINGERPRINT_FILE, REPLACED_DIR, check_data_fingerprint,
                                           check_run_folder, checkpoint_manager, discard_replaced, has_checkpoint,
                                           prepare_run_folder, restore_replaced, run_checkpoint, sealed_fingerprint,
                                           step_variable)
from sifa_synthmix.runs.run_lock import RunLock
from sifa_synthmix.tensorflow_paths import for_people, for_tensorflow
from sifa_synthmix.training import distribution, step_memory
from sifa_synthmix.training.reporting import RunReporter
from sifa_synthmix.training.run_log import RunLog
from sifa_synthmix.training.task_factory import build_task


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


class Trainer:
    """Trains one run of a TrainConfig; a second Trainer on the same folder resumes it.

    `log` prints one line; the chief also keeps every line in RUN/train.log."""

    def __init__(self, cfg, overwrite=False, log=print):
        self.cfg = cfg.with_absolute_paths()
        self.overwrite = overwrite
        self.log = RunLog(log)
        self.lock = None
        self.reporter = None  # what the run reports (reporting.RunReporter), once it is built
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
        class_names = inputs.class_names(resolved.info, cfg.model.num_classes)
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
        iterators = (dict(source_iterator=self.source_it, target_iterator=self.target_it) if cfg.runtime.deterministic
                     else {})
        self.checkpoint = run_checkpoint(self.task, self.step, **iterators)
        checkpoint_dir = self.out / CHECKPOINT_DIR
        self.manager = checkpoint_manager(
            self.checkpoint, checkpoint_dir if self.chief else distribution.scratch_dir(strategy), cfg, self.log)
        self.reporter = RunReporter(cfg, self.out, self.task, tf.function(self.task.predict_logits, autograph=False),
                                    class_names, self.log, strategy, self.chief,
                                    val_it=iter(val) if val is not None else None,
                                    target_labelled=not resolved.target_unlabelled, curve=self.curve,
                                    source_it=self.source_it, target_it=self.target_it)
        self.reporter.announce(resolved)
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

    def _end_session(self, status):
        if self.reporter is not None:
            self.reporter.end_session(status, int(self.step))

    def _undo_replacement(self):
        if self.replacing:
            if self.reporter is not None:
                self.reporter.close()
            restore_replaced(self.out, self.log)
            self.replacing = False

    def _train(self):
        self._build()
        cfg = self.cfg  # as _build resolved it
        if int(self.step) >= cfg.schedule.max_steps:
            self.log(f"{self.out} is already at step {int(self.step)} of --max_steps={cfg.schedule.max_steps}: "
                     "nothing to train (a higher --max_steps continues it)")
            return {}
        self.reporter.on_train_begin(int(self.step))
        metrics = {}
        self.stop_signal, self.nonfinite_in_a_row = None, 0
        previous_handlers = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while int(self.step) < cfg.schedule.max_steps and self.stop_signal is None:
                source_images, source_labels = next(self.source_it)
                target_batch = next(self.target_it)
                metrics, images = self.train_step(source_images, source_labels, *target_batch)
                step = int(self.step.assign_add(1))
                self._check_finite(step, metrics)
                self.reporter.on_step_end(step, metrics, images, source_labels, target_batch)
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
        self.reporter.on_train_end(int(self.step))
        return {k: float(v) for k, v in metrics.items()}
