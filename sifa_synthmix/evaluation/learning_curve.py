"""Target Dice and ASSD on whole volumes during training (--eval_every): the learning curve.

Every --eval_every steps and at --max_steps, e_B + s_B (the trainer's traced prediction, in the
run's precision) segment whole target volumes, scored like --mode=evaluate (per class and Avg,
mean over volumes, ASSD in voxels). Which volumes: the target validation volumes when there
are any with labels (their training records stacked back into volumes: the labelled slices and
a margin), else the target test volumes with labels, which the user chose. The log line and the
TensorBoard tags name them (eval/val_dice_mean, eval/test_dice_MYO, ...), and every evaluation
appends its rows to RUN/eval_curve.csv: step, volumes, class, dice, assd.
"""
import csv
import io
import pathlib
import time

import numpy as np
import tensorflow as tf

from sifa_synthmix.data import inputs, layout, reader, records
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.evaluation import metrics
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.prediction.inference import predict_volume
from sifa_synthmix.runs.run_folder import CURVE_FILE

COLUMNS = ("step", "volumes", "class", "dice", "assd")


def record_volume(path):
    """(image, labels) H x W x N of a record file: the middle slice of each 3-slice record, in order."""
    slices = [records.decode_example_numpy(serialized) for serialized in reader.read_records(str(path))]
    image = np.stack([image[:, :, 1] for image, _ in slices], axis=2)
    labels = np.stack([label[:, :, 1] for _, label in slices], axis=2)
    return image, np.rint(labels).astype(np.int16)


def curve_volumes(cfg, resolved, log=print):
    """("val" or "test", [(name, image, labels)]) the curve is scored on; a DataError when the
    target has neither labelled validation nor labelled test volumes."""
    if resolved.target_val:
        return "val", [(layout.volume_name(p), *record_volume(p)) for p in resolved.target_val]
    paths = inputs.labelled_test_volumes(cfg.data.data_dir, resolved.info, cfg.data.target_modality, log)
    if not paths:
        raise DataError(f"{cfg.data.data_dir}: --eval_every needs target volumes with labels: no "
                               f"{cfg.data.target_modality.upper()} validation records or test volumes found")
    return "test", [(layout.volume_name(p), *layout.read_test_volume(p)) for p in paths]


def read_curve(run_dir):
    """The rows of RUN/eval_curve.csv (step as int, dice and assd as float), [] when absent."""
    path = pathlib.Path(run_dir) / CURVE_FILE
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        return [{**row, "step": int(row["step"]), "dice": float(row["dice"]), "assd": float(row["assd"])}
                for row in csv.DictReader(handle)]


def write_curve(run_dir, rows):
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(pathlib.Path(run_dir) / CURVE_FILE, text.getvalue())


class LearningCurve:
    """Scores the target segmenter on fixed whole volumes at given steps and records the curve."""

    def __init__(self, run_dir, kind, volumes, intensity_range, class_names, batch_size):
        self.run_dir = pathlib.Path(run_dir)
        self.kind, self.volumes = kind, volumes
        self.intensity_range, self.class_names, self.batch_size = intensity_range, list(class_names), batch_size

    def keep_until(self, step):
        """Drops recorded rows after `step`: a run resumed from an earlier checkpoint evaluates again."""
        rows = read_curve(self.run_dir)
        if any(row["step"] > step for row in rows):
            write_curve(self.run_dir, [row for row in rows if row["step"] <= step])

    def evaluate(self, predict_logits, step, writer, log):
        """Scores every volume, writes the eval/ scalars at `step` and the curve rows; returns the
        summary ({class name or Avg: {dice_mean, assd_mean, ...}})."""
        start = time.perf_counter()
        per_volume = []
        for _, image, labels in self.volumes:
            prediction = predict_volume(predict_logits, image, self.intensity_range, self.batch_size)
            scores = metrics.volume_metrics(prediction, labels, len(self.class_names))
            per_volume.append({self.class_names[c]: values for c, values in scores.items()})
        summary = metrics.summarise(per_volume)
        with writer.as_default(step=step):
            for key, values in summary.items():
                name = "mean" if key == metrics.AVERAGE else key.replace(" ", "_")
                what = "the mean over classes" if key == metrics.AVERAGE else key
                for metric in ("dice", "assd"):
                    tf.summary.scalar(f"eval/{self.kind}_{metric}_{name}", values[f"{metric}_mean"],
                                      description=f"Target {self.kind} {metric.upper()} of {what} during training "
                                                  f"(--eval_every), mean over {len(self.volumes)} volumes"
                                                  f"{'; ASSD in voxels' if metric == 'assd' else ''}.")
        rows = read_curve(self.run_dir)
        rows += [{"step": step, "volumes": self.kind, "class": key, "dice": values["dice_mean"],
                  "assd": values["assd_mean"]} for key, values in summary.items()]
        write_curve(self.run_dir, rows)
        average = summary[metrics.AVERAGE]
        log(f"step {step}: target {self.kind} Dice {100 * average['dice_mean']:.1f}%, ASSD "
            f"{average['assd_mean']:.2f} voxels on {len(self.volumes)} whole {self.kind} volumes "
            f"({time.perf_counter() - start:.1f} s)")
        return summary
