"""Paired two-sided t-test of per-volume, per-class Dice of a run against a reference run."""
import numpy as np
from scipy import stats

ALL_CLASSES = "All classes"


def _dice_by_volume_and_class(volumes, class_names):
    return {(v["name"], c): v["classes"][c]["dice"] for v in volumes for c in class_names}


def _ttest(run_values, reference_values):
    if len(run_values) < 2:
        return {"t": float("nan"), "p": float("nan"), "n": len(run_values)}
    with np.errstate(divide="ignore", invalid="ignore"):
        result = stats.ttest_rel(run_values, reference_values)
    return {"t": float(result.statistic), "p": float(result.pvalue), "n": len(run_values)}


def paired_dice_ttest(reference_volumes, run_volumes, class_names):
    """{class: {t, p, n}} per class and pooled over classes (ALL_CLASSES).

    Volumes are the "volumes" lists of two metrics.json records; pairs are matched by volume name
    and class, so volumes present in only one run are left out (n says how many pairs remain).
    t > 0 means the run's Dice is higher than the reference's.
    """
    reference = _dice_by_volume_and_class(reference_volumes, class_names)
    run = _dice_by_volume_and_class(run_volumes, class_names)
    pairs = sorted(reference.keys() & run.keys())
    groups = {c: [p for p in pairs if p[1] == c] for c in class_names}
    groups[ALL_CLASSES] = pairs
    return {group: _ttest([run[p] for p in keys], [reference[p] for p in keys]) for group, keys in groups.items()}
