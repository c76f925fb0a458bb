"""Which label-free measures tell a run that adapted from one that did not (issue 34, point 5).

For each finished run: its target segmenter (inference mode, as evaluated) predicts the target's
training slices, and the label-free measures of sifa_synthmix/training/adaptation_signal.py are taken over
all of them against the source's training labels, beside two measures of where the classes lie
(`layout_mismatch`: how differently the classes border each other; `centroid_offset`: how far
each class's mean position moves), and the run's test Dice (RUN/eval/metrics.json, which does use
target labels: it is what the measures are judged against). Nothing here trains.

    python -m benchmarks.signal_check --runs=runs/scan64/*/seed*,runs/abl/*/seed* [--slices=400]
"""
import argparse
import glob
import json
import pathlib

import numpy as np

CLASSES = 5


def record_slices(data_dir, modality, limit, rng):
    """(images, labels) of up to `limit` middle slices of a modality's training records."""
    from sifa_synthmix.data import layout, reader, records  # pylint: disable=import-outside-toplevel

    paths = reader.resolve_record_paths(str(layout.PreparedLayout(data_dir).datalist(modality, "train")))
    pairs = [records.decode_example_numpy(r) for path in paths for r in reader.read_records(path)]
    chosen = rng.choice(len(pairs), size=min(limit, len(pairs)), replace=False)
    images = np.stack([pairs[i][0][:, :, 1] for i in chosen])
    labels = np.stack([pairs[i][1][:, :, 1] for i in chosen]).astype(np.int64)
    return images, labels


def adjacency(labels):
    """Row-normalised counts of 4-neighbour pairs of different classes: how each class borders the others."""
    counts = np.zeros((CLASSES, CLASSES))
    for a, b in ((labels[:, 1:, :], labels[:, :-1, :]), (labels[:, :, 1:], labels[:, :, :-1])):
        differ = a != b
        np.add.at(counts, (a[differ], b[differ]), 1)
        np.add.at(counts, (b[differ], a[differ]), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def layout_mismatch(predicted, source_labels):
    """Mean over foreground classes of half the L1 distance between the target's and the source's
    adjacency rows: 0 when the classes border each other alike, 1 when never alike."""
    target, source = adjacency(predicted), adjacency(source_labels)
    return float(np.mean(0.5 * np.abs(target[1:] - source[1:]).sum(axis=1)))


def centroid_offset(predicted, source_labels):
    """Mean over foreground classes of the distance (in image widths) between the class's mean
    position on the target predictions and on the source labels (nan for a class never predicted)."""
    size = predicted.shape[1]
    offsets = []
    for c in range(1, CLASSES):
        positions = [np.argwhere(labels == c)[:, 1:] for labels in (predicted, source_labels)]
        if not all(len(p) for p in positions):
            offsets.append(np.nan)
            continue
        offsets.append(float(np.linalg.norm(positions[0].mean(0) - positions[1].mean(0))) / size)
    return float(np.nanmean(offsets)) if not np.all(np.isnan(offsets)) else float("nan")


def run_row(run, slices, seed):
    """The measures and the test Dice of one run."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.prediction import inference  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.runs.run_folder import (  # pylint: disable=import-outside-toplevel
        EVAL_DIR, METRICS_FILE, load_run_config)
    from sifa_synthmix.training import adaptation_signal  # pylint: disable=import-outside-toplevel

    cfg = load_run_config(run)
    rng = np.random.default_rng(seed)
    target_images, _ = record_slices(cfg.data.data_dir, cfg.data.target_modality, slices, rng)
    _, source_labels = record_slices(cfg.data.data_dir, cfg.data.source_modality, slices, rng)
    predict_logits, _ = inference.restore_target_segmenter(run, cfg, log=lambda _: None)
    low, high = inference.run_data(run, cfg).target_range
    unit = 2.0 * (target_images - low) / (high - low) - 1.0
    logits = np.concatenate([predict_logits(tf.constant(unit[k:k + 32, :, :, None], tf.float32)).numpy()
                             for k in range(0, len(unit), 32)])
    measures = {k.removeprefix("signal_"): float(v) for k, v in adaptation_signal.step_measures(
        logits, tf.one_hot(source_labels, CLASSES)).items()}
    signal = adaptation_signal.window_signal(measures, ["background"] + [str(c) for c in range(1, CLASSES)], 1)
    ratios = [v["volume_ratio"] for v in signal["classes"].values() if v["volume_ratio"] is not None]
    predicted = np.argmax(logits, axis=-1)
    dice = json.loads((pathlib.Path(run) / EVAL_DIR / METRICS_FILE).read_text())["summary"]["Avg"]["dice_mean"]
    return {"run": str(run), "test_dice": 100 * dice, "fg_ratio": signal["target_foreground_slices"] / max(
                signal["source_foreground_slices"], 1e-9),
            "volume_ratio_min": min(ratios), "volume_ratio_max": max(ratios), "entropy": signal["target_entropy"],
            "layout_mismatch": layout_mismatch(predicted, source_labels),
            "centroid_offset": centroid_offset(predicted, source_labels),
            "verdict": adaptation_signal.NOT_ADAPTED if adaptation_signal.failure_reasons(signal)
            else adaptation_signal.NO_FAILURE_SEEN}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", required=True, help="comma-separated run folders or globs")
    parser.add_argument("--slices", type=int, default=400, help="target and source training slices per run")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from sifa_synthmix.runs.run_folder import EVAL_DIR, METRICS_FILE  # pylint: disable=import-outside-toplevel

    runs = sorted({p for spec in args.runs.split(",") for p in glob.glob(spec)
                   if (pathlib.Path(p) / EVAL_DIR / METRICS_FILE).is_file()})
    rows = [run_row(run, args.slices, args.seed) for run in runs]
    columns = list(rows[0])
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in sorted(rows, key=lambda r: r["test_dice"]):
        print("| " + " | ".join(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()) + " |")
    dice = np.array([r["test_dice"] for r in rows])
    for column in columns[2:-1]:
        values = np.array([r[column] for r in rows])
        keep = np.isfinite(values)
        if keep.sum() > 2:
            print(f"{column}: Pearson r with test Dice {np.corrcoef(values[keep], dice[keep])[0, 1]:+.2f} "
                  f"over {keep.sum()} runs")
    print(verdict_tally(rows))


def verdict_tally(rows, bands=((0, 20), (20, 40), (40, 101))):
    """How often the end-of-run verdict says "not adapted" in each band of test Dice."""
    from sifa_synthmix.training.adaptation_signal import NOT_ADAPTED  # pylint: disable=import-outside-toplevel

    parts = []
    for low, high in bands:
        band = [r for r in rows if low <= r["test_dice"] < high]
        flagged = sum(r["verdict"] == NOT_ADAPTED for r in band)
        parts.append(f"{flagged} of {len(band)} runs with test Dice {low}-{min(high, 100)}")
    return "verdict 'not adapted' on " + ", ".join(parts)


if __name__ == "__main__":
    main()
