"""What a training run reports, handed its work by the trainer at fixed points, as keras-io's GAN
examples hand side work to callbacks: the run's first lines (`announce`), the TensorBoard session
(`on_train_begin`, `end_session`), every step's end (`on_step_end`: the progress line with the
adaptation signal, scalars, images, the learning curve) and the run's end (`on_train_end`: the
last line and the end-of-run adaptation signal). The trainer keeps the loop, checkpoints and
stopping.

Under several workers only the chief writes TensorBoard events and the adaptation signal, and
logs its lines (the other workers' log is silent).
"""
import json
import os
import time

import keras
import tensorflow as tf

from sifa_synthmix import cpu_features, visualize
from sifa_synthmix.data import inputs
from sifa_synthmix.evaluation.methods import method_name
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.runs.run_folder import CHECKPOINT_DIR, LOG_FILE, SIGNAL_FILE, TENSORBOARD_DIR
from sifa_synthmix.training import adaptation_signal, distribution
from sifa_synthmix.training.task import foreground_dice
from sifa_synthmix.training.tensorboard_summaries import RunSummaries

PROGRESS_LOSSES = (("g_A", "g_loss_A"), ("d_B", "d_loss_B"), ("seg", "seg_loss"), ("de_B", "g_loss_B"),
                   ("d_A", "d_loss_A"), ("d_P", "d_loss_P"))
IMAGES_SHOWN = 4


def format_duration(seconds):
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


class RunReporter:
    """Reports one training session of a run in `out` (its config `cfg`, with eval_every resolved).

    task: the run's task (learning rates, loss scales, parameter counts); predict: s_B's
    inference-mode logits of target images (a tf.function of task.predict_logits); log: the run's
    RunLog. val_it: an iterator of target validation batches, or None; target_labelled: whether
    target training batches carry labels (for their batch Dice); curve: the LearningCurve, or None;
    source_it, target_it: the trainer's training iterators, which the end-of-run signal draws from.
    """

    def __init__(self, cfg, out, task, predict, class_names, log, strategy=None, chief=True, val_it=None,
                 target_labelled=True, curve=None, source_it=None, target_it=None):
        self.cfg, self.out, self.task, self.predict, self.log = cfg, out, task, predict, log
        self.class_names = list(class_names)
        self.strategy = strategy or tf.distribute.get_strategy()
        self.chief, self.val_it, self.target_labelled, self.curve = chief, val_it, target_labelled, curve
        self.source_it, self.target_it = source_it, target_it
        self.summaries = RunSummaries(cfg, class_names)
        self.writer = None
        self.signal_window = adaptation_signal.SignalWindow()
        self.started = self.interval_start = None
        self.interval_steps = self.overflows = 0
        self.adaptation = None

    # ------------------------------------------------------------------ the trainer's hooks
    def announce(self, resolved):
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

    def on_train_begin(self, step):
        """Opens the run's TensorBoard events (the chief) and starts the session's clock."""
        if self.chief:
            self.writer = tf.summary.create_file_writer(str(self.out / TENSORBOARD_DIR))
            with self.writer.as_default(step=step):
                if step == 0:
                    self.summaries.write_legend()
                self.summaries.write_session_start(trial_id=str(self.out))
        self.log(f"building the training step (TensorFlow traces it on the first step: "
                 f"{'XLA-compiled, ' if self.cfg.runtime.jit_compile else ''}this can take minutes)")
        self.started = time.perf_counter()

    def on_step_end(self, step, metrics, images, source_labels, target_batch):
        """After step `step` (its metrics and images, and its distributed batches): the first
        step's time, then at their cadences the scalars, signal and progress line, the images and
        the learning curve."""
        schedule = self.cfg.schedule
        self.overflows += int(metrics.get("loss_scale_overflows", 0))
        if self.interval_start is None:  # leave the tracing step out of the timing
            self.log(f"first step took {time.perf_counter() - self.started:.1f} s (building the step included)")
            self.interval_start, self.interval_steps = time.perf_counter(), 0
        else:
            self.interval_steps += 1
        if self.chief:
            self.signal_window.add(metrics)
        last = step == schedule.max_steps
        log_due = self.chief and (step % schedule.log_every == 0 or last)
        images_due = self.chief and (step % schedule.image_every == 0 or last)
        if log_due or images_due:
            target_batch = distribution.local_batch(self.strategy, target_batch)
        if log_due:
            self.write_scalars(step, metrics, target_batch)
            self.adaptation = self.close_signal_window(target_batch, distribution.local_batch(self.strategy,
                                                                                              source_labels))
            self._write_signal(step, self.adaptation)
            seconds = (time.perf_counter() - self.interval_start) / max(self.interval_steps, 1)
            self.log(self.progress(step, seconds, metrics, self.overflows, self.adaptation))
            self.interval_start, self.interval_steps, self.overflows = time.perf_counter(), 0, 0
        if images_due:
            self._write_images(step, images, target_batch)
        if self.curve is not None and (step % schedule.eval_every == 0 or last):
            evaluation_start = time.perf_counter()
            self.curve.evaluate(self.predict, step, self.writer, self.log)
            self.interval_start += time.perf_counter() - evaluation_start  # not in the s/step

    def on_train_end(self, step):
        """A session that reached max_steps: its HParams end, its last line and (the chief) the
        end-of-run adaptation signal."""
        self.end_session("success", step)
        self.log(f"finished: step {step} of {self.cfg.schedule.max_steps} in "
                 f"{format_duration(time.perf_counter() - self.started)}. Results in {self.out}: {CHECKPOINT_DIR}/, "
                 f"{TENSORBOARD_DIR}/ (tensorboard --logdir {self.out / TENSORBOARD_DIR}), {LOG_FILE}; evaluate with "
                 f"python main.py --mode=evaluate --output_dir={self.out}")
        if self.chief:
            self._report_signal(step)

    def end_session(self, status, step):
        """The HParams session end record (status: "success", "stopped" or "failed")."""
        if self.writer is not None:
            with self.writer.as_default():
                self.summaries.write_session_end(status, step)
            self.writer.flush()

    def close(self):
        """Closes the run's TensorBoard events (before --overwrite's replaced run is put back)."""
        if self.writer is not None:
            self.writer.close()

    # ------------------------------------------------------------------------- the reports
    def write_scalars(self, step, metrics, target_batch):
        """The step's metrics, learning rates, loss scales and the batch Dice of s_B on the target
        batch (when labelled) and on a validation batch (when there are any)."""
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

    def close_signal_window(self, target_batch, source_labels):
        """The adaptation signal of the steps since the last log line. A task whose step computes
        none (the segmenter) gets it from s_B's inference-mode prediction on the logged target batch."""
        if self.signal_window.is_empty():
            self.signal_window.add(adaptation_signal.step_measures(self.predict(target_batch[0]), source_labels))
        return self.signal_window.close(self.class_names)

    def _write_signal(self, step, adaptation):
        with self.writer.as_default(step=step):
            for (tag, description), value in self.summaries.signal_scalars(adaptation).items():
                tf.summary.scalar(tag, value, description=description)

    def progress(self, step, seconds_per_step, metrics, overflows, adaptation=None):
        """The progress line of step `step`."""
        max_steps = self.cfg.schedule.max_steps
        losses = " ".join(f"{short} {float(metrics[key]):.3f}" for short, key in PROGRESS_LOSSES if key in metrics)
        if "inspector_cls" in metrics:
            losses += (f" L_cls {float(metrics['inspector_cls']):.3f} "
                       f"acc_mix {float(metrics['inspector_accuracy_unaligned_mix']):.2f}")
        dice = " ".join(f"{k.replace('_', ' ', 1)} {float(v):.3f}" for k, v in metrics.items() if k.startswith("dice_"))
        signal_note = f" | {adaptation_signal.progress_text(adaptation)}" if adaptation else ""
        overflow_note = f" | {overflows} loss-scale overflow(s) since the last line" if overflows else ""
        return (f"step {step}/{max_steps} | {seconds_per_step:.2f} s/step | "
                f"ETA {format_duration((max_steps - step) * seconds_per_step)} | {losses} | {dice}"
                f"{signal_note}{overflow_note}")

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

    def _report_signal(self, step):
        """Writes RUN/adaptation_signal.json and says what its verdict is."""
        record = adaptation_signal.end_of_run_record(self._final_signal(), step)
        path = self.out / SIGNAL_FILE
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        source_only = self.cfg.kind == "segmenter" and self.cfg.train_domain == "source"
        self.log(adaptation_signal.end_of_run_line(record, path, source_only))
