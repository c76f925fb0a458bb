"""The adaptation signal (issue 34): its measures against numpy, its window averages, the
verdict's rule, and a tiny run whose segmenter predicts background on every target slice ending
with the warning; --eval_every=auto."""
import dataclasses
import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import config_from_argv
from sifa_synthmix.config import EVAL_EVERY_AUTO, auto_eval_every
from sifa_synthmix.data import inputs
from sifa_synthmix.data.layout import CARDIAC_CLASSES
from sifa_synthmix.models import networks
from sifa_synthmix.training import adaptation_signal
from sifa_synthmix.training.adaptation_signal import SignalWindow, failure_reasons, progress_text, step_measures
from sifa_synthmix.training.reporting import RunReporter
from sifa_synthmix.training.task_factory import build_task
from sifa_synthmix.training.tensorboard_summaries import RunSummaries
from sifa_synthmix.training.trainer import Trainer, resolve_eval_every
from tensorboard_events import event_values, read_events

CLASSES = ("background", "one", "two")


def hand_made_batch():
    """(target logits [3, 4, 4, 3], source one-hot labels [2, 4, 4, 3]): target slice 0 predicted
    background everywhere, a source slice without foreground and pixels of no class (label >= 3)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 4, 4, 3)).astype(np.float32)
    logits[0, ..., 0] += 10.0
    labels = np.zeros((2, 4, 4), np.int64)
    labels[1, :2, :3] = 1
    labels[1, 3, :] = 2
    labels[1, 2, 0] = 5  # no class: an all-zero one-hot row
    return logits, tf.one_hot(labels, 3).numpy()


def numpy_measures(logits, onehot):
    predicted = logits.argmax(axis=-1)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    measures = {"target_foreground_slices": np.mean([(p > 0).any() for p in predicted]),
                "source_foreground_slices": np.mean([(o[..., 1:] > 0).any() for o in onehot]),
                "target_entropy": np.mean(-(probabilities * np.log(probabilities)).sum(axis=-1)) / np.log(3)}
    for c in (1, 2):
        measures[f"target_fraction_{c}"] = np.mean(predicted == c)
        measures[f"source_fraction_{c}"] = onehot[..., c].mean()
    return measures


def test_the_step_measures_match_numpy():
    logits, onehot = hand_made_batch()
    on_fake_B = np.array([[0.7], [0.2], [0.5]], np.float32)  # right from 0.5 up: 2 of 3
    on_B = np.array([[0.1], [0.6], [0.4]], np.float32)  # right below 0.5: 2 of 3
    measures = step_measures(tf.constant(logits, tf.bfloat16), onehot, (on_fake_B, on_B))
    expected = {f"signal_{k}": v for k, v in numpy_measures(logits.astype(tf.bfloat16.as_numpy_dtype)
                                                            .astype(np.float32), onehot).items()}
    expected["signal_d_P_accuracy"] = 4 / 6
    assert set(measures) == set(expected)
    assert all(value.dtype == tf.float32 for value in measures.values())
    for key, value in expected.items():
        assert float(measures[key]) == pytest.approx(value, rel=1e-5), key
    assert float(measures["signal_target_foreground_slices"]) == pytest.approx(2 / 3)
    assert float(measures["signal_source_foreground_slices"]) == 0.5
    assert float(measures["signal_source_fraction_1"]) == pytest.approx(6 / 32)
    assert "signal_d_P_accuracy" not in step_measures(logits, onehot)


def test_a_window_averages_the_shares_and_divides_their_means():
    window = SignalWindow()
    for target, source in ((0.2, 0.0), (0.1, 0.3)):  # step 1 has no class 1 in its source batch
        window.add({"seg_loss": 1.0, "signal_target_foreground_slices": 1.0, "signal_source_foreground_slices": 0.5,
                    "signal_target_fraction_1": target, "signal_source_fraction_1": source,
                    "signal_target_fraction_2": 0.1, "signal_source_fraction_2": 0.0, "signal_target_entropy": 0.25})
    signal = window.close(CLASSES)
    assert window.is_empty()
    assert signal["batches"] == 2 and signal["d_P_accuracy"] is None
    assert signal["classes"]["one"] == {"target_fraction": pytest.approx(0.15), "source_fraction": pytest.approx(0.15),
                                        "volume_ratio": pytest.approx(1.0)}
    assert signal["classes"]["two"]["volume_ratio"] is None  # not in any source batch: undefined
    assert progress_text(signal) == "tgt fg 1.00 (src 0.50) vol 1.00/- H 0.25"


def good_signal(**changes):
    signal = {"batches": 10, "target_foreground_slices": 0.6, "source_foreground_slices": 0.7,
              "classes": {"one": {"target_fraction": 0.1, "source_fraction": 0.1, "volume_ratio": 1.0},
                          "two": {"target_fraction": 0.0, "source_fraction": 0.0, "volume_ratio": None}},
              "target_entropy": 0.2, "d_P_accuracy": 0.99}
    return {**signal, **changes}


def test_the_rule_names_each_threshold_broken_and_nothing_else():
    assert failure_reasons(good_signal()) == []  # d_P accuracy decides nothing; an undefined ratio neither
    assert failure_reasons(good_signal(source_foreground_slices=0.0, target_foreground_slices=0.0)) == []
    (reason,) = failure_reasons(good_signal(target_foreground_slices=0.3))
    assert reason.startswith("0.30 of the target slices have any predicted foreground against 0.70")
    (reason,) = failure_reasons(good_signal(target_foreground_slices=0.45))  # 0.64 x the source's share
    assert reason.endswith("(less than 0.7 x)")
    assert failure_reasons(good_signal(target_foreground_slices=0.5)) == []  # 0.71 x
    for ratio in (0.09, 4.5):
        classes = {"one": {"target_fraction": 0.0, "source_fraction": 0.1, "volume_ratio": ratio}}
        (reason,) = failure_reasons(good_signal(classes=classes))
        assert reason.startswith(f"one covers {ratio:.2f} x as many target pixels") and "0.1-4.0" in reason
    assert failure_reasons(good_signal(classes={"one": {"volume_ratio": 0.1}, "two": {"volume_ratio": 4.0}})) == []
    (reason,) = failure_reasons(good_signal(target_entropy=0.6))
    assert "entropy is 0.60 (above 0.5)" in reason
    record = adaptation_signal.end_of_run_record(good_signal(target_entropy=0.6), step=7)
    assert record["verdict"] == "not adapted" and record["step"] == 7 and len(record["reasons"]) == 1
    assert adaptation_signal.end_of_run_line(record, "J", source_only=True).startswith(
        "note: as expected of a source-only run, the adaptation signal of s_B's inference-mode predictions on target "
        "training slices says it did "
        "not adapt: the target predictions' mean normalised entropy is 0.60")
    no_failure = adaptation_signal.end_of_run_record(good_signal(), step=7)
    assert no_failure["verdict"] == "no sign of failure" and not no_failure["reasons"]
    assert adaptation_signal.end_of_run_line(no_failure, "J").endswith(": no sign of failed adaptation (J)")


def test_a_segmenter_run_takes_its_signal_from_the_logged_target_batch(tiny_config):
    """Source only: no signal from its step, so one inference-mode prediction per log line."""
    cfg = tiny_config("--model=segmenter")
    task = build_task(cfg)
    reporter = RunReporter(cfg, cfg.output_dir, task, task.predict_logits, CARDIAC_CLASSES, log=lambda _: None)
    images = tf.random.stateless_uniform([2, 32, 32, 1], seed=[1, 2], minval=-1.0, maxval=1.0)
    labels = tf.one_hot(tf.fill([2, 32, 32], 2), 5)
    signal = reporter.close_signal_window((images, labels), labels)
    assert signal["batches"] == 1 and signal["d_P_accuracy"] is None and signal["source_foreground_slices"] == 1.0
    expected = step_measures(task.predict_logits(images), labels)
    assert signal["target_entropy"] == pytest.approx(float(expected["signal_target_entropy"]))
    assert signal["classes"]["LAC"]["volume_ratio"] == pytest.approx(float(expected["signal_target_fraction_2"]))
    described = RunSummaries(cfg, CARDIAC_CLASSES).signal_scalars(signal)
    assert {"signal/target_entropy", "signal/volume_ratio_LAC"} <= {tag for tag, _ in described}
    assert "signal/volume_ratio_MYO" not in {tag for tag, _ in described}  # no MYO in the source labels


def predicting_background(build_segmenter):
    """A build_segmenter whose logits favour the background by 20: s_B predicts nothing else."""
    def build(cfg, name):
        segmenter = build_segmenter(cfg, name)
        latent = keras.Input(segmenter.inputs[0].shape[1:])
        bias = 20.0 * np.eye(cfg.num_classes, dtype=np.float32)[0]
        return keras.Model(latent, keras.ops.add(segmenter(latent), bias), name=name)
    return build


def test_a_run_predicting_background_on_the_target_ends_with_a_warning(tiny_config, monkeypatch):
    monkeypatch.setattr(networks, "build_segmenter", predicting_background(networks.build_segmenter))
    logs = []
    trainer = Trainer(tiny_config("--max_steps=2", "--eval_every=0", "--image_every=1000"), log=logs.append)
    trainer.run()
    out = trainer.out
    progress = [line for line in logs if line.startswith("step 2/2")]
    # The volume ratio of a class missing from the step's two source slices is undefined: "-".
    assert progress and re.search(r" \| tgt fg 0\.00 \(src [01]\.\d\d\) vol (0\.00|-)(/(0\.00|-)){3} H 0\.00 "
                                  r"dP [01]\.\d\d$", progress[0]), progress
    warning = logs[-1]
    assert warning.startswith("WARNING: adaptation did not happen, by the adaptation signal of s_B's inference-mode "
                              "predictions on target training slices")
    assert "0.00 of the target slices have any predicted foreground" in warning
    assert str(out / "adaptation_signal.json") in warning
    assert (out / "train.log").read_text(encoding="utf-8").rstrip().endswith(warning)
    record = json.loads((out / "adaptation_signal.json").read_text(encoding="utf-8"))
    assert record["verdict"] == "not adapted" and record["step"] == 2
    assert record["signal"]["target_foreground_slices"] == 0.0 and record["signal"]["source_foreground_slices"] > 0.5
    assert record["thresholds"]["volume_ratio_range"] == [0.1, 4.0]
    batches = -(-adaptation_signal.FINAL_SIGNAL_SLICES // 2)  # of 2 slices each
    assert record["signal"]["batches"] == -(-batches // adaptation_signal.FINAL_SIGNAL_CHUNK)
    ratios = {name: values["volume_ratio"] for name, values in record["signal"]["classes"].items()}
    assert set(ratios.values()) - {None} == {0.0}
    values, _ = read_events(out)
    assert sorted(values["signal/target_foreground_slices"]) == [1, 2]  # --log_every=1
    logged = [name for name in ratios if 2 in values.get(f"signal/volume_ratio_{name}", {})]  # defined at step 2
    assert all(float(values[f"signal/volume_ratio_{name}"][2]) == 0.0 for name in logged)
    assert 0.0 <= float(values["signal/d_P_accuracy"][2]) <= 1
    assert "loss/signal_target_entropy" not in values
    described = {value.tag: value.metadata.summary_description for _, value in event_values(out)}
    assert "no target labels used" in described["signal/target_entropy"]


def test_eval_every_auto_is_on_at_checkpoints_when_the_target_has_labelled_volumes(tiny_config, tiny_phantom, tmp_path):
    assert [auto_eval_every(m, s) for m, s in ((20000, 300), (3000, 300), (4, 2), (100, 1))] == [2100, 300, 2, 10]
    cfg = tiny_config()
    assert cfg.schedule.eval_every == EVAL_EVERY_AUTO
    assert [tiny_config(f"--eval_every={n}").schedule.eval_every for n in (0, 25)] == [0, 25]
    with pytest.raises(Exception, match="--eval_every must be 'auto' or a whole number >= 0"):
        config_from_argv("--eval_every=-1")
    resolved = inputs.resolve_data(cfg.data)
    assert resolved.target_val and resolve_eval_every(cfg, resolved) == 2  # the phantom's CT validation volume
    test_only = dataclasses.replace(resolved, target_val=[])
    assert resolve_eval_every(cfg, test_only) == 2  # its labelled CT test volumes
    unlabelled = {"unlabelled": {"ct_test": [p.name.removesuffix(".npz")
                                             for p in (tiny_phantom / "ct" / "test").glob("*.npz")]}}
    assert resolve_eval_every(cfg, dataclasses.replace(test_only, info=unlabelled)) == 0
    off = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, eval_every=0))
    assert resolve_eval_every(off, resolved) == 0


def test_signal_check_tallies_the_verdict_by_band_of_test_dice():
    from benchmarks.signal_check import verdict_tally

    rows = [{"test_dice": dice, "verdict": verdict} for dice, verdict in (
        (4.0, "not adapted"), (13.0, "no sign of failure"), (25.0, "not adapted"), (54.0, "no sign of failure"),
        (100.0, "not adapted"))]
    assert verdict_tally(rows) == ("verdict 'not adapted' on 1 of 2 runs with test Dice 0-20, "
                                   "1 of 1 runs with test Dice 20-40, 1 of 2 runs with test Dice 40-100")
