"""Dice and ASSD per foreground class on whole 3D volumes, and their means over volumes.

Empty-case rule (one rule, applied in every mean, recorded in metrics.json):
- a class absent from both prediction and ground truth ("both_empty") scores Dice = 1;
- a class absent from exactly one of them ("empty_prediction", "empty_truth") scores Dice = 0;
- ASSD is undefined whenever either side is empty: it is NaN, left out of every ASSD mean, and
  the number of volumes left out is reported per class.
So Dice means are over all volumes, ASSD means over the volumes where both sides have the class.
The "Avg" of one volume is the mean over its classes (NaN ASSDs left out); the summary "Avg" is
the mean(std) of that per-volume value over volumes (for Dice this equals the mean of the class
means, as in the paper's tables). Standard deviations are population ones (ddof=0, like np.std
in the official script).
"""
import numpy as np
from medpy.metric import binary

OK = "ok"
EMPTY_PREDICTION = "empty_prediction"
EMPTY_TRUTH = "empty_truth"
BOTH_EMPTY = "both_empty"
STATUSES = (OK, EMPTY_PREDICTION, EMPTY_TRUTH, BOTH_EMPTY)
AVERAGE = "Avg"

EMPTY_CASE_RULE = (
    "Dice = 1 when the class is absent from both prediction and ground truth, Dice = 0 when it is "
    "absent from exactly one; ASSD is undefined (NaN) when either is empty and such volumes are "
    "left out of ASSD means (counted in assd_excluded). Avg of a volume = mean over its classes "
    "(NaN ASSDs left out); summaries are mean and population std (ddof=0) over volumes.")


def _status(predicted, true):
    if predicted and true:
        return OK
    if true:
        return EMPTY_PREDICTION
    if predicted:
        return EMPTY_TRUTH
    return BOTH_EMPTY


def crop_to_union(prediction_mask, truth_mask):
    """Both masks cut to the bounding box of their union grown by one voxel (within the volume).

    Dice and ASSD are unchanged: every foreground voxel stays inside, the one-voxel background
    margin keeps the erosion that finds surfaces as it was, and the exact Euclidean distance
    transform gives the same distances between voxels that are all inside the box. medpy's
    distance transforms then run on the box, not the whole volume.
    """
    union = prediction_mask | truth_mask
    box = tuple(slice(max(int(np.min(i)) - 1, 0), int(np.max(i)) + 2) for i in np.nonzero(union))
    return prediction_mask[box], truth_mask[box]


def class_metrics(prediction_mask, truth_mask, spacing=None, missed=0):
    """{dice, assd, status} of one binary class mask pair, following the empty-case rule.

    `missed` ground-truth voxels lie outside the prepared grid (the scan's labels beyond the crop):
    prediction writes background there, so they count as false negatives in the Dice; ASSD sees
    the surfaces inside the grid only."""
    status = _status(bool(prediction_mask.any()), bool(truth_mask.any()) or missed > 0)
    if status != OK:
        return {"dice": 1.0 if status == BOTH_EMPTY else 0.0, "assd": float("nan"), "status": status}
    if not truth_mask.any():  # every true voxel lies outside the grid
        return {"dice": 0.0, "assd": float("nan"), "status": EMPTY_PREDICTION}
    prediction_mask, truth_mask = crop_to_union(prediction_mask, truth_mask)
    dice = float(binary.dc(prediction_mask, truth_mask))
    if missed:
        overlap = np.count_nonzero(prediction_mask & truth_mask)
        dice = 2.0 * overlap / (np.count_nonzero(prediction_mask) + np.count_nonzero(truth_mask) + missed)
    return {"dice": dice, "assd": float(binary.assd(prediction_mask, truth_mask, voxelspacing=spacing)),
            "status": status}


def volume_metrics(prediction, truth, num_classes, spacing=None, missed=None):
    """Class index (1 .. num_classes - 1) -> {dice, assd, status} of one label volume.

    ASSD is in voxel units unless `spacing` (one number per axis) is given, then in its units.
    `missed`: class index -> ground-truth voxels outside the volume's grid (`class_metrics`).
    """
    if prediction.shape != truth.shape:
        raise ValueError(f"prediction {prediction.shape} and ground truth {truth.shape} differ in shape")
    missed = missed or {}
    return {c: class_metrics(prediction == c, truth == c, spacing, missed.get(c, 0)) for c in range(1, num_classes)}


def volume_average(per_class):
    """{dice, assd} of one volume: the mean over its classes, NaN ASSDs left out (NaN if all are)."""
    dice = [m["dice"] for m in per_class.values()]
    assd = [m["assd"] for m in per_class.values() if not np.isnan(m["assd"])]
    return {"dice": float(np.mean(dice)), "assd": float(np.mean(assd)) if assd else float("nan")}


def _mean_std(values):
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    if not values.size:
        return float("nan"), float("nan"), 0
    return float(values.mean()), float(values.std()), int(values.size)


def summarise(per_volume):
    """Mean and std over volumes, per class key and for "Avg".

    per_volume: one {class key: {dice, assd, status}} per volume, all with the same keys. Values
    are grouped by key, so the result is right for any number of volumes.
    """
    if not per_volume:
        raise ValueError("no volumes to summarise")
    keys = list(per_volume[0])
    summary = {}
    for key in keys:
        rows = [volume[key] for volume in per_volume]
        summary[key] = _summary_entry(rows)
        summary[key]["status_counts"] = {s: sum(r["status"] == s for r in rows) for s in STATUSES}
    summary[AVERAGE] = _summary_entry([volume_average(volume) for volume in per_volume])
    return summary


def _summary_entry(rows):
    dice_mean, dice_std, count = _mean_std([r["dice"] for r in rows])
    assd_mean, assd_std, assd_count = _mean_std([r["assd"] for r in rows])
    return {"dice_mean": dice_mean, "dice_std": dice_std, "assd_mean": assd_mean, "assd_std": assd_std,
            "volumes": count, "assd_volumes": assd_count, "assd_excluded": len(rows) - assd_count}
