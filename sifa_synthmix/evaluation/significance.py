"""Paired two-sided tests of a method's Dice against a reference method's.

Pairs are (seed, volume): the same test volume scored by both methods' runs of the same seed
(or, when both methods are single runs, by the two runs whatever their seeds). Per class the
pair holds that class's Dice; "Avg" holds each volume's mean over its classes, so the classes of
one volume, which are not independent, count once. Each pair set gets the paired t-test
(scipy.stats.ttest_rel) and the Wilcoxon signed-rank test (scipy.stats.wilcoxon, zero
differences dropped). With several seeds on both sides, `seed_ttest` also tests the per-seed
average Dice, one pair per seed: the training run as the unit, which the (seed, volume) pairs,
sharing a model within a seed and a volume across seeds, are not.
"""
import numpy as np
from scipy import stats

from sifa_synthmix.evaluation.metrics import AVERAGE

NAN = float("nan")


def paired_tests(values, reference_values):
    """{n, difference, ci95, t, p, w, w_p, note}: the mean difference of values minus
    reference_values with its 95% t confidence interval [low, high], the paired t-test and the
    Wilcoxon signed-rank test; t > 0 when the values are higher. Undefined cases give NaN and say
    why in `note`: fewer than two pairs, all differences zero, or (t-test and interval) differences
    that do not vary."""
    values, reference_values = np.asarray(values, np.float64), np.asarray(reference_values, np.float64)
    differences = values - reference_values
    result = {"n": int(differences.size), "difference": float(np.mean(differences)) if differences.size else NAN,
              "ci95": [NAN, NAN], "t": NAN, "p": NAN, "w": NAN, "w_p": NAN, "note": ""}
    if differences.size < 2:
        result["note"] = "fewer than 2 pairs"
        return result
    if not np.any(differences):
        result["note"] = "all differences are zero"
        return result
    wilcoxon = stats.wilcoxon(values, reference_values)
    result.update(w=float(wilcoxon.statistic), w_p=float(wilcoxon.pvalue))
    if np.std(differences) <= 1e-12 * max(1.0, abs(float(np.mean(differences)))):
        result["note"] = "the differences do not vary (t undefined)"
        return result
    ttest = stats.ttest_rel(values, reference_values)
    interval = ttest.confidence_interval(0.95)
    result.update(t=float(ttest.statistic), p=float(ttest.pvalue), ci95=[float(interval.low), float(interval.high)])
    return result


def _dice_by_pair(runs, class_names, pair_by_seed):
    """{(seed or None, volume, class or AVERAGE): Dice} over (seed, volumes) runs."""
    values = {}
    for seed, volumes in runs:
        key = seed if pair_by_seed else None
        for volume in volumes:
            for name in class_names:
                values[(key, volume["name"], name)] = volume["classes"][name]["dice"]
            values[(key, volume["name"], AVERAGE)] = volume["avg"]["dice"]
    return values


def paired_dice_tests(reference_runs, runs, class_names, pair_by_seed=True):
    """{class or AVERAGE: paired_tests(...)} of per-volume Dice over (seed, volume) pairs.

    reference_runs, runs: (seed, metrics.json "volumes" list) per run. Pairs are matched by
    seed (when pair_by_seed) and volume name; unmatched ones are left out (n says how many
    remain)."""
    reference = _dice_by_pair(reference_runs, class_names, pair_by_seed)
    other = _dice_by_pair(runs, class_names, pair_by_seed)
    shared = sorted(reference.keys() & other.keys(), key=str)
    results = {}
    for column in [*class_names, AVERAGE]:
        keys = [k for k in shared if k[2] == column]
        results[column] = paired_tests([other[k] for k in keys], [reference[k] for k in keys])
    return results


def seed_ttest(reference_by_seed, by_seed):
    """paired_tests of per-seed Dice ({seed: value}) over the seeds both methods have."""
    seeds = sorted(reference_by_seed.keys() & by_seed.keys())
    return paired_tests([by_seed[s] for s in seeds], [reference_by_seed[s] for s in seeds])
