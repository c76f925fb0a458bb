"""Whether a run adapted to its target domain, told without target labels (issue 34).

Without target labels nothing in a run's log showed a failed adaptation: a run whose segmenter
predicts background on every target slice logs losses like a good run's. These measures of the
target predictions need no target labels:

- target foreground slices: the share of target slices with any pixel predicted as a foreground
  class, shown beside the share of source slices with any labelled foreground;
- volume ratio, per foreground class: the share of target pixels predicted as the class over the
  share of source pixels labelled with it. The source side is the source labels, not s_B's
  predictions on fake_B: those follow the segmenter, so one that lost a class in both domains
  would still look consistent; the labels are the anatomy the target slices should show when
  both domains image the same organs over similar extents (MM-WHS, the phantom);
- target entropy: the mean over target pixels of the softmax entropy / log(classes), 0 for
  certain predictions, 1 for uniform ones;
- d_P accuracy (tasks with the output discriminator d_P): the share of d_P's patch decisions that
  are right, its LSGAN output read as "a prediction on fake_B" from 0.5 up: 0.5 when it cannot
  tell s_B's target predictions from those on translated source images (or gives both the same
  answer, as at the start), 1 when it always can.

The train step computes them in float32 from tensors it has anyway, as `signal_*` metrics; under
a tf.distribute strategy over the global batch. SIFA's and the CycleGAN baseline's steps predict
the target batch with e_B in training mode (its batch statistics), as d_P sees it; evaluation
runs e_B in inference mode (its moving statistics), so a failure of the moving statistics alone
goes unseen here. The segmenter's step predicts no target batch: the trainer predicts the logged
one in inference mode. The trainer averages them over each logging
window (`SignalWindow`; a volume ratio is the ratio of the window's mean shares, so a step whose
source batch lacks a class does not divide by zero), shows them in the progress line and under
TensorBoard's signal/. At the end of a run it takes them once more from s_B's inference-mode
predictions (e_B's moving statistics, as evaluation runs it) on FINAL_SIGNAL_SLICES target
training slices, judges them (`failure_reasons`) and writes RUN/adaptation_signal.json.
"""
import math

import tensorflow as tf

from sifa_synthmix.models.replicas import cross_replica_sum

MEASURE_PREFIX = "signal_"
NOT_ADAPTED, NO_FAILURE_SEEN = "not adapted", "no sign of failure"

# The verdict is taken at the end of a run from s_B's inference-mode predictions on this many
# target training slices (the trainer's _final_signal), as evaluation runs s_B.
FINAL_SIGNAL_SLICES = 400
FINAL_SIGNAL_CHUNK = 16  # target batches predicted in one call (fewer calls than batches)
# The verdict's thresholds tell runs that failed outright (test Dice at the source-only level) from
# the rest; they do not rank half-adapted runs. Set on the scanner-like phantom's runs, 24 without
# and 24 with --random_shift (`python -m benchmarks.signal_check`, docs/phantom_results.md), one
# phantom's runs: a start, not a calibration to rely on.
#
# Target slices with predicted foreground, as a share of source slices with labelled foreground,
# below which s_B is taken to miss the anatomy on the target. The training slices of both domains
# are cut from the same anatomy, so a segmenter that works finds organs in about as many target
# slices as the source labels have: every run over 20 test Dice had 0.79 or more, the failures
# 0.43-0.57; the failure of issue 34 (background everywhere) gives 0.
MIN_FOREGROUND_SLICE_RATIO = 0.7
# Per class, the target / source volume ratio outside which the class is taken to have vanished
# (below) or to flood the slices (above). A class lost on the target gives 0.00-0.09 (every
# source-only run has one); classes that differ in size between the two modalities' subjects go
# lower than organ sizes suggest: the shifted phantom's oracles give 0.47-0.82 for LVC, and SIFA
# runs scoring 52-54 give 0.25-0.37. A floor of 0.4 warned on those; 0.1 is where a class has gone.
VOLUME_RATIO_RANGE = (0.1, 4.0)
# Mean normalised target entropy above which s_B is taken not to recognise the target. An
# untrained s_B gives about 1; a trained one is sure of the background, most of every slice, so
# even a segmenter unsure of every organ stays well below 0.5 unless it is lost on the target.
MAX_TARGET_ENTROPY = 0.5
# d_P accuracy is reported but decides nothing: in SIFA's output space d_P often wins (its
# adversary enters the segmenter's loss with weight 0.1) in runs that adapt, so how high it may
# go in a good run is a matter for that calibration.


def _global_mean(values, axis=None):
    """Mean of `values` over `axis` (all axes when None), over the global batch under a strategy."""
    values = tf.cast(values, tf.float32)
    total = tf.reduce_sum(values, axis=axis)
    count = tf.cast(tf.size(values) // tf.size(total), tf.float32)
    return cross_replica_sum(total) / cross_replica_sum(count)


def _foreground_slice_share(onehot):
    """Share of [N, H, W, C] one-hot slices with any pixel of a class other than 0."""
    return _global_mean(tf.reduce_any(onehot[..., 1:] > 0, axis=[1, 2, 3]))


def step_measures(target_logits, source_onehot, d_P_outputs=None):
    """The signal's measures of one step, as {"signal_<measure>": float32 scalar}.

    target_logits: s_B's [N, H, W, C] logits on target slices; source_onehot: the source labels
    of the same step; d_P_outputs: (d_P on the predictions on fake_B, d_P on those on B), when
    the task has d_P. Per foreground class c the target and source pixel shares come as
    target_fraction_<c> and source_fraction_<c>.
    """
    logits = tf.cast(target_logits, tf.float32)
    num_classes = logits.shape[-1]
    predicted = tf.one_hot(tf.argmax(logits, axis=-1), num_classes)
    source = tf.cast(source_onehot, tf.float32)
    measures = {"target_foreground_slices": _foreground_slice_share(predicted),
                "source_foreground_slices": _foreground_slice_share(source)}
    for domain, onehot in (("target", predicted), ("source", source)):
        fractions = _global_mean(onehot[..., 1:], axis=[0, 1, 2])
        measures.update({f"{domain}_fraction_{c}": fractions[c - 1] for c in range(1, num_classes)})
    entropy = -tf.reduce_sum(tf.nn.softmax(logits) * tf.nn.log_softmax(logits), axis=-1)
    measures["target_entropy"] = _global_mean(entropy) / math.log(num_classes)
    if d_P_outputs is not None:
        on_source, on_target = (tf.reshape(tf.cast(output, tf.float32), [-1]) for output in d_P_outputs)
        measures["d_P_accuracy"] = _global_mean(tf.concat([on_source >= 0.5, on_target < 0.5], axis=0))
    return {MEASURE_PREFIX + name: value for name, value in measures.items()}


def is_measure(metric):
    return metric.startswith(MEASURE_PREFIX)


class SignalWindow:
    """Sums the steps' measures until `close` turns them into the window's signal."""

    def __init__(self):
        self.sums, self.counts = {}, {}

    def add(self, metrics):
        """Adds the measures among a step's metrics (the others are left alone)."""
        for metric, value in metrics.items():
            if is_measure(metric):
                name = metric.removeprefix(MEASURE_PREFIX)
                self.sums[name] = self.sums.get(name, 0.0) + float(value)
                self.counts[name] = self.counts.get(name, 0) + 1

    def is_empty(self):
        return not self.counts

    def close(self, class_names):
        """The window's signal (see `window_signal`); starts the next window."""
        means = {name: total / self.counts[name] for name, total in self.sums.items()}
        batches = max(self.counts.values())
        self.sums, self.counts = {}, {}
        return window_signal(means, class_names, batches)


def window_signal(means, class_names, batches):
    """The signal of a window from its mean measures: the foreground slice shares, per class its
    pixel shares and volume ratio (None when the window's source slices lack the class), the
    target entropy and the d_P accuracy (None without d_P); JSON-ready."""
    classes = {}
    for index, name in enumerate(class_names[1:], start=1):
        target, source = means[f"target_fraction_{index}"], means[f"source_fraction_{index}"]
        classes[name] = {"target_fraction": target, "source_fraction": source,
                         "volume_ratio": target / source if source > 0 else None}
    return {"batches": batches,
            "target_foreground_slices": means["target_foreground_slices"],
            "source_foreground_slices": means["source_foreground_slices"],
            "classes": classes,
            "target_entropy": means["target_entropy"],
            "d_P_accuracy": means.get("d_P_accuracy")}


def failure_reasons(signal):
    """Why a window's signal says adaptation did not happen, one sentence per rule broken; []
    when none is. A measure the window leaves undefined (no source foreground) decides nothing."""
    reasons = []
    target, source = signal["target_foreground_slices"], signal["source_foreground_slices"]
    if target < MIN_FOREGROUND_SLICE_RATIO * source:
        reasons.append(f"{target:.2f} of the target slices have any predicted foreground against {source:.2f} of "
                       f"the source slices with labelled foreground (less than {MIN_FOREGROUND_SLICE_RATIO} x)")
    low, high = VOLUME_RATIO_RANGE
    for name, values in signal["classes"].items():
        ratio = values["volume_ratio"]
        if ratio is not None and not low <= ratio <= high:
            reasons.append(f"{name} covers {ratio:.2f} x as many target pixels as source ones (outside {low}-{high})")
    if signal["target_entropy"] > MAX_TARGET_ENTROPY:
        reasons.append(f"the target predictions' mean normalised entropy is {signal['target_entropy']:.2f} "
                       f"(above {MAX_TARGET_ENTROPY}): s_B is unsure on most target pixels")
    return reasons


def _number(value):
    return "-" if value is None else f"{value:.2f}"


def progress_text(signal):
    """The signal in the progress line: target foreground slices (source's), the volume ratios in
    class order, the target entropy and the d_P accuracy."""
    ratios = "/".join(_number(values["volume_ratio"]) for values in signal["classes"].values())
    text = (f"tgt fg {signal['target_foreground_slices']:.2f} (src {signal['source_foreground_slices']:.2f}) "
            f"vol {ratios} H {signal['target_entropy']:.2f}")
    if signal["d_P_accuracy"] is not None:
        text += f" dP {signal['d_P_accuracy']:.2f}"
    return text


def end_of_run_record(signal, step):
    """What RUN/adaptation_signal.json holds: the last window's signal, the thresholds, the
    verdict and its reasons."""
    reasons = failure_reasons(signal)
    return {"step": step, "signal": signal, "verdict": NOT_ADAPTED if reasons else NO_FAILURE_SEEN,
            "reasons": reasons,
            "thresholds": {"min_foreground_slice_ratio": MIN_FOREGROUND_SLICE_RATIO,
                           "volume_ratio_range": list(VOLUME_RATIO_RANGE), "max_target_entropy": MAX_TARGET_ENTROPY}}


def end_of_run_line(record, path, source_only=False):
    """The line the end of a run prints about the verdict (`path`: where the record is): a warning
    when it says the run did not adapt, a note in a source-only run, which is not meant to."""
    window = "s_B's inference-mode predictions on target training slices"
    if not record["reasons"]:
        return f"adaptation signal of {window} (no target labels used): no sign of failed adaptation ({path})"
    reasons = "; ".join(record["reasons"])
    if source_only:
        return (f"note: as expected of a source-only run, the adaptation signal of {window} says it did not "
                f"adapt: {reasons} ({path})")
    return (f"WARNING: adaptation did not happen, by the adaptation signal of {window} (no target labels used): "
            f"{reasons} ({path}). Look at the target predictions (TensorBoard masks/) before using this run.")
