"""Side-by-side comparison of evaluated methods. A method is one evaluated run (RUN/eval/metrics.json,
written by report.py), or several runs of it that differ only in their seed:

    comparison.md / .csv / .json  the paper's Table 1 layout over all methods (a single run: mean(std)
                                  over volumes; several seeds: mean(std) over seeds of each seed's mean
                                  over volumes), each method's difference to the first, and paired
                                  tests of its Dice against the first (significance.py)
    qualitative.png               image, ground truth and each method's prediction (its first seed) on
                                  slices that together show every class present in the test set
    dice_bars.png                 mean Dice per class and Avg, one bar per method, one dot per seed
    dice_curves.png               mean Dice against the training step per method (mean and band over
                                  seeds), when the runs recorded learning curves (--eval_every)
    dice_curves.csv               its numbers: method, step, mean and std over runs (also a table in
                                  comparison.md)

The markdown starts with a warning for each way the runs are unlike: a run evaluated before its
max_steps (unfinished), and runs trained for other step counts, on other data or with other seeds.
"""
import dataclasses
import json
import pathlib
import re

import numpy as np

from sifa_synthmix.config import flat_settings
from sifa_synthmix.data.layout import read_test_volume
from sifa_synthmix.data.reader import to_unit_range
from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.evaluation import figures, result_files, table
from sifa_synthmix.evaluation.learning_curve import read_curve
from sifa_synthmix.evaluation.methods import method_names
from sifa_synthmix.evaluation.metrics import AVERAGE
from sifa_synthmix.evaluation.report import read_metrics
from sifa_synthmix.evaluation.significance import paired_dice_tests, seed_ttest
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.prediction import label_files
from sifa_synthmix.runs import checkpoint_files
from sifa_synthmix.runs.run_folder import CHECKPOINT_DIR, CONFIG_FILE, EVAL_DIR, METRICS_FILE

EXPERIMENT_FILE = "experiment.json"
METRICS = ("dice", "assd")
_SEED_FOLDER = re.compile(r"seed(\d+)")
_DEPENDENCE_NOTE = ("(seed, volume) pairs are not independent (a seed's volumes share one trained model, and each "
                    "volume recurs in every seed), so read their p-values as descriptive; the test over seeds "
                    "treats each training run as one observation.")


def evaluated_step(record, run_dir):
    """The step of the checkpoint a metrics.json record evaluated (recorded by evaluation; for
    older evaluations, the run's latest checkpoint), or None."""
    if record.get("step") is not None:
        return int(record["step"])
    if record.get("checkpoint"):
        return checkpoint_files.step_of(record["checkpoint"])
    newest = checkpoint_files.newest_first(pathlib.Path(run_dir) / CHECKPOINT_DIR)
    return checkpoint_files.step_of(newest[0]) if newest else None


def seed_folder(variant_dir, seed):
    return pathlib.Path(variant_dir) / f"seed{seed}"


def experiment_run_folders(root, variants, seeds):
    """An experiment's run folders per variant: [ROOT/<variant>], or ROOT/<variant>/seed<N> per seed."""
    root = pathlib.Path(root)
    return [[seed_folder(root / v, s) for s in seeds] if seeds else [root / v] for v in variants]


def experiment_in_parts(root, variants, seeds):
    """The variants and seeds ROOT/experiment.json is to list after an experiment of `variants`
    and `seeds` into ROOT. An experiment run in parts (the same variants with other seeds, or the
    same seeds with other variants) lists every part's runs, so that --mode=compare of ROOT
    compares them all; after any other change it lists this experiment's runs alone."""
    path = pathlib.Path(root) / EXPERIMENT_FILE
    if not path.is_file():
        return list(variants), list(seeds or [])
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        listed_variants, listed_seeds = list(manifest["variants"]), [int(s) for s in manifest["seeds"]]
    except (ValueError, KeyError, TypeError) as error:
        raise ComparisonError(f"{path}: not an experiment manifest ({error}); remove it and run the experiment "
                              "again to list only its runs") from None
    seeds = list(seeds or [])
    if set(listed_variants) == set(variants) and listed_seeds and seeds:
        return list(variants), sorted(set(listed_seeds) | set(seeds))
    if set(listed_seeds) == set(seeds):
        return listed_variants + [v for v in variants if v not in listed_variants], seeds
    return list(variants), seeds


def write_experiment_file(root, variants, seeds):
    """ROOT/experiment.json: the variants (the first is the reference) and seeds of an experiment,
    so that --mode=compare can take ROOT itself."""
    atomic_write_text(pathlib.Path(root) / EXPERIMENT_FILE,
                      json.dumps({"variants": list(variants), "seeds": list(seeds or [])}, indent=2) + "\n")


def method_folders(path):
    """The run folders a --compare_runs entry stands for, one list per method: a run folder (one
    method, one run), a folder of seed<N> runs (one method, one run per seed) or an experiment
    folder with experiment.json (its variants)."""
    path = pathlib.Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: the run folder does not exist")
    if (path / CONFIG_FILE).is_file() or (path / EVAL_DIR).is_dir():
        return [[path]]
    if (path / EXPERIMENT_FILE).is_file():
        manifest = json.loads((path / EXPERIMENT_FILE).read_text(encoding="utf-8"))
        return experiment_run_folders(path, manifest["variants"], manifest["seeds"])
    seeds = sorted((p for p in path.glob("seed*") if _SEED_FOLDER.fullmatch(p.name) and p.is_dir()),
                   key=lambda p: int(p.name[len("seed"):]))
    if seeds:
        return [seeds]
    raise FileNotFoundError(f"{path}: not a run folder ({CONFIG_FILE}), a folder of seed<N> runs or an "
                            f"experiment folder ({EXPERIMENT_FILE})")


class ComparisonError(ToolkitError, ValueError):
    """Runs that cannot share one comparison table."""


@dataclasses.dataclass
class EvaluatedRun:
    folder: pathlib.Path
    config: dict  # the run's config.json, or None
    record: dict  # its eval/metrics.json

    @property
    def volumes(self):
        return {v["name"]: v for v in self.record["volumes"]}

    @property
    def seed(self):
        return self.config.get("seed") if self.config else None

    def evaluated_step(self):
        return evaluated_step(self.record, self.folder)


@dataclasses.dataclass
class Method:
    name: str
    runs: list  # EvaluatedRun per seed

    @property
    def seeded(self):
        return len(self.runs) > 1

    def label(self, run):
        return f"{self.name} (seed {run.seed})" if self.seeded else self.name

    def per_seed(self, column, metric="dice"):
        """Each run's mean over volumes."""
        return [run.record["summary"][column][f"{metric}_mean"] for run in self.runs]

    def summary(self, columns):
        """{column: {dice_mean, dice_std, assd_mean, assd_std}}: over volumes for a single run,
        else over seeds of each seed's mean (sample std, ddof=1)."""
        if not self.seeded:
            return self.runs[0].record["summary"]
        summary = {}
        for column in columns:
            summary[column] = {"seeds": len(self.runs)}
            for metric in METRICS:
                values = np.asarray(self.per_seed(column, metric), np.float64)
                values = values[~np.isnan(values)]
                summary[column][f"{metric}_mean"] = float(values.mean()) if values.size else float("nan")
                summary[column][f"{metric}_std"] = float(values.std(ddof=1)) if values.size > 1 else float("nan")
        return summary


def _read_config(folder):
    path = folder / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _group_label(folders):
    """A method's folder name: the run's, or for seed<N> runs their parent's (the variant)."""
    folder = folders[0]
    return folder.parent.name if _SEED_FOLDER.fullmatch(folder.name) else folder.name


def _load_methods(groups, names=None):
    """The evaluated methods, named from their first run's config (or `names`); every run must
    share the classes and the ASSD unit."""
    groups = [[pathlib.Path(f) for f in group] for group in groups]
    if not groups or not all(groups):
        raise ComparisonError("no runs to compare")
    for folder in (f for group in groups for f in group):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the run folder does not exist")
        if not (folder / EVAL_DIR / METRICS_FILE).is_file():
            raise FileNotFoundError(f"{folder}: no {EVAL_DIR}/{METRICS_FILE}; train and evaluate the run first "
                                    "(--mode=evaluate, or rerun the experiment)")
    runs = [[EvaluatedRun(f, _read_config(f), read_metrics(f / EVAL_DIR)) for f in group] for group in groups]
    if names is None:
        names = method_names([group[0].config for group in runs], [_group_label(g) for g in groups])
    if len(names) != len(groups) or len(set(names)) != len(names):
        raise ComparisonError(f"need one distinct name per method, got {list(names)} for {len(groups)} methods")
    flat = [run for group in runs for run in group]
    for key in ("class_names", "assd_unit"):
        values = {json.dumps(r.record[key]) for r in flat}
        if len(values) > 1:
            raise ComparisonError(f"the runs differ in {key} ({', '.join(sorted(values))}); they cannot share a table")
    return [Method(name, group) for name, group in zip(names, runs)]


# --------------------------------------------------------------------------------- warnings

def _per_method(methods, value):
    """"name v1, v2; name v3" of value(run) over each method's runs with a config."""
    parts = []
    for method in methods:
        values = list(dict.fromkeys(str(value(r)) for r in method.runs if r.config))
        if values:
            parts.append(f"{method.name} {', '.join(values)}")
    return "; ".join(parts)


def _distinct(methods, value):
    return {json.dumps(value(r), sort_keys=True) for m in methods for r in m.runs if r.config}


def comparison_warnings(methods):
    """One line per way the runs are unlike: unfinished runs, and other steps, data or seeds."""
    warnings = []
    for method in methods:
        for run in method.runs:
            step, max_steps = run.evaluated_step(), flat_settings(run.config or {}).get("max_steps")
            if step is not None and max_steps is not None and step < max_steps:
                warnings.append(f"{method.label(run)} ({run.folder}) was evaluated at step {step} of its "
                                f"{max_steps}: an unfinished run.")

    def steps(run):
        return run.evaluated_step() or flat_settings(run.config).get("max_steps")

    if len(_distinct(methods, steps)) > 1:
        warnings.append(f"The runs were trained for different numbers of steps ({_per_method(methods, steps)}).")
    data_fields = sorted({k for m in methods for r in m.runs if r.config for k in r.config.get("data", {})})
    differing = [k for k in data_fields if len(_distinct(methods, lambda r, k=k: r.config.get("data", {}).get(k))) > 1]
    if differing:
        details = "; ".join(f"{k}: {_per_method(methods, lambda r, k=k: r.config.get('data', {}).get(k))}"
                            for k in differing)
        warnings.append(f"The runs were trained on different data ({details}).")
    seed_sets = {tuple(r.seed for r in m.runs) for m in methods if all(r.config for r in m.runs)}
    if len(seed_sets) > 1:
        warnings.append(f"The methods' seeds differ ({_per_method(methods, lambda r: r.seed)}): differences include "
                        "seed-to-seed noise, and paired tests use the seeds both sides have.")
    return warnings


# ----------------------------------------------------------------------------------- tables

def _differences(methods, summaries, columns):
    """Later method -> column -> {dice, assd}: its mean minus the first method's mean."""
    reference = summaries[methods[0].name]
    return {m.name: {c: {k: summaries[m.name][c][f"{k}_mean"] - reference[c][f"{k}_mean"] for k in METRICS}
                     for c in columns} for m in methods[1:]}


def _tests(methods, class_names):
    """Per later method: paired tests over (seed, volume) pairs and, with seeds on both sides,
    the t-test over seeds of the per-seed average Dice."""
    reference = methods[0]
    tests = {}
    for method in methods[1:]:
        pair_by_seed = reference.seeded or method.seeded
        entry = {"volume_pairs": paired_dice_tests([(r.seed, r.record["volumes"]) for r in reference.runs],
                                                   [(r.seed, r.record["volumes"]) for r in method.runs],
                                                   class_names, pair_by_seed)}
        if reference.seeded and method.seeded:
            entry["seeds_by_class"] = {
                column: seed_ttest({r.seed: v for r, v in zip(reference.runs, reference.per_seed(column))},
                                   {r.seed: v for r, v in zip(method.runs, method.per_seed(column))})
                for column in [*class_names, AVERAGE]}
            entry["seeds"] = entry["seeds_by_class"][AVERAGE]
        tests[method.name] = entry
    return tests


def _cell_meaning(methods):
    counts = ", ".join(f"{m.name}: {len(m.runs)} seeds x {len(m.runs[0].volumes)} volumes" if m.seeded
                       else f"{m.name}: {len(m.runs[0].volumes)} volumes" for m in methods)
    over_seeds = "mean(std) over seeds of each seed's mean over volumes, sample std"
    if all(m.seeded for m in methods):
        return f"{over_seeds} ({counts})"
    if any(m.seeded for m in methods):
        return f"Rows of several seeds: {over_seeds}; rows of one run: mean(std) over volumes ({counts})"
    return f"mean(std) over volumes ({counts})"


def _notes(methods, tests):
    first = methods[0].runs[0]
    notes = [f"{_cell_meaning(methods)}; Dice in %, ASSD in {first.record['assd_unit']}; "
             f"differences are means minus {methods[0].name}'s."]
    shared = [run.volumes.keys() for m in methods for run in m.runs]
    if any(v != shared[0] for v in shared):
        notes.append("The runs were evaluated on different volume sets; tests use the shared volumes only.")
    for method in methods:
        for run in method.runs:
            excluded = {c: s["assd_excluded"] for c, s in run.record["summary"].items()
                        if c != AVERAGE and s["assd_excluded"]}
            if excluded:
                notes.append(f"{method.label(run)}: ASSD undefined (empty prediction or truth) and left out for "
                             + ", ".join(f"{n} volume(s) of {c}" for c, n in excluded.items()) + ".")
    undefined = sorted({t["note"] for entry in tests.values()
                        for t in [*entry["volume_pairs"].values(), *entry.get("seeds_by_class", {}).values()] if t["note"]})
    if undefined:
        notes.append(f"n/a in a test: {'; '.join(undefined)}.")
    if any("seeds" in entry for entry in tests.values()):
        notes.append(_DEPENDENCE_NOTE)
    notes.append(f"Empty-case rule: {first.record['empty_case_rule']}")
    return "\n".join(f"- {n}" for n in notes) + "\n"


def _statistic(value, name, p, n):
    if np.isnan(p):
        return f"n/a, n={n}"
    return f"{name}={value:.2f}, p={p:.3g}, n={n}"


def _test_markdown(reference, tests, test_columns):
    pairs = "(seed, volume) pairs" if any("seeds" in e for e in tests.values()) else "per-volume pairs"
    blocks = [(f"Paired two-sided t-test of Dice vs {reference} ({pairs}; Avg: each volume's mean over classes)",
               [(name, [_statistic(e["volume_pairs"][c]["t"], "t", e["volume_pairs"][c]["p"],
                                   e["volume_pairs"][c]["n"]) for c in test_columns]) for name, e in tests.items()]),
              (f"Wilcoxon signed-rank test of the same pairs vs {reference}",
               [(name, [_statistic(e["volume_pairs"][c]["w"], "W", e["volume_pairs"][c]["w_p"],
                                   e["volume_pairs"][c]["n"]) for c in test_columns]) for name, e in tests.items()])]
    text = table.markdown_table(test_columns, blocks)
    seeded = {name: e["seeds_by_class"] for name, e in tests.items() if "seeds_by_class" in e}
    if seeded:
        text += "\n" + table.markdown_table(test_columns, [
            (f"Paired two-sided t-test over seeds of each seed's Dice vs {reference}",
             [(name, [_statistic(by_class[c]["t"], "t", by_class[c]["p"], by_class[c]["n"]) for c in test_columns])
              for name, by_class in seeded.items()]),
            (f"Difference over seeds vs {reference}, Dice points: mean [95% confidence interval]",
             [(name, [_interval(by_class[c]) for c in test_columns]) for name, by_class in seeded.items()])])
    return text


def _interval(test):
    low, high = (100 * v for v in test["ci95"])
    if np.isnan(low):
        return f"{100 * test['difference']:+.1f} [n/a]"
    return f"{100 * test['difference']:+.1f} [{low:+.1f}, {high:+.1f}]"


def _per_seed_markdown(methods, unit):
    """Each seed's average Dice and ASSD of the methods run with several seeds: the values behind
    their mean(std) cells."""
    seeded = [m for m in methods if m.seeded]
    if not seeded:
        return ""
    seeds = list(dict.fromkeys(r.seed for m in seeded for r in m.runs))
    columns = [f"seed {s}" for s in seeds]
    blocks = [(f"Avg {table.block_title(metric, unit)} per seed",
               table.value_rows([(m.name, {f"seed {r.seed}": v for r, v in zip(m.runs, m.per_seed(AVERAGE, metric))})
                                 for m in seeded], columns, metric))
              for metric in METRICS]
    return "\n" + table.markdown_table(columns, blocks)


def _comparison_markdown(methods, summaries, columns, differences, tests, warnings):
    """Warnings, the comparison table, its notes and the test tables, as markdown."""
    reference = methods[0].name
    unit = methods[0].runs[0].record["assd_unit"]
    named_summaries = [(m.name, summaries[m.name]) for m in methods]
    blocks = []
    for metric in METRICS:
        blocks.append((table.block_title(metric, unit), table.metric_rows(named_summaries, columns, metric)))
        if differences:
            named = [(name, {c: d[c][metric] for c in columns}) for name, d in differences.items()]
            blocks.append((table.difference_title(metric, reference, unit),
                           table.signed_rows(named, columns, metric)))
    text = "".join(f"**Warning:** {w}\n" for w in warnings) + ("\n" if warnings else "")
    text += table.markdown_table(columns, blocks) + "\n" + _notes(methods, tests) + _per_seed_markdown(methods, unit)
    if tests:
        text += "\n" + _test_markdown(reference, tests, columns)
    return text


def _csv_rows(methods, summaries, columns, differences, tests):
    rows = []
    for method in methods:
        summary, difference = summaries[method.name], differences.get(method.name, {})
        test = tests.get(method.name, {})
        for column in columns:
            stats = summary[column]
            pairs = test.get("volume_pairs", {}).get(column, {})
            seeds = test.get("seeds_by_class", {}).get(column, {})
            ci95 = seeds.get("ci95", [None, None])
            rows.append([method.name, len(method.runs), column, stats["dice_mean"], stats["dice_std"],
                         difference.get(column, {}).get("dice"), stats["assd_mean"], stats["assd_std"],
                         difference.get(column, {}).get("assd"), pairs.get("t"), pairs.get("p"), pairs.get("n"),
                         pairs.get("w"), pairs.get("w_p"), seeds.get("t"), seeds.get("p"), seeds.get("n"), *ci95])
    return rows


# ---------------------------------------------------------------------------------- figures

def _class_presence(path, num_classes):
    """(classes x slices presence, foreground pixels per slice) of a test volume's labels."""
    _, truth = read_test_volume(path)
    presence = np.stack([(truth == c).any(axis=(0, 1)) for c in range(1, num_classes)])
    return presence, (truth > 0).sum(axis=(0, 1))


def slices_showing_every_class(volume_paths, num_classes, min_rows):
    """(volume index, slice) pairs, chosen greedily: each adds the most classes not yet shown (ties:
    the larger foreground) until every class present in the volumes is shown; then, up to
    min_rows, the largest-foreground slice of each volume not yet shown."""
    presence, foreground = zip(*(_class_presence(p, num_classes) for p in volume_paths))
    missing = set(np.flatnonzero(np.any([p.any(axis=1) for p in presence], axis=0)))
    chosen = []
    while missing:
        best = max(((v, z) for v in range(len(presence)) for z in range(presence[v].shape[1])),
                   key=lambda vz: (len(missing & set(np.flatnonzero(presence[vz[0]][:, vz[1]]))),
                                   foreground[vz[0]][vz[1]]))
        chosen.append(best)
        missing -= set(np.flatnonzero(presence[best[0]][:, best[1]]))
    for v in range(len(volume_paths)):
        if len(chosen) >= min_rows:
            break
        if v not in {c[0] for c in chosen}:
            chosen.append((v, int(np.argmax(foreground[v]))))
    return [(v, int(z)) for v, z in chosen]


def _as_network_saw(slice_, flip):
    """A slice in the orientation the network saw (the stored test volumes may be flipped)."""
    return np.flip(slice_, (0, 1)) if flip else slice_


def _qualitative_figure(methods, class_names, min_rows):
    """The grid on slices of the volumes every method's first run shares that together show every
    class present in them; the same slices for every method."""
    runs = [m.runs[0] for m in methods]
    first = runs[0].record
    shared = [v for v in first["volumes"] if all(v["name"] in r.volumes for r in runs)]
    images, label_sets, titles = [], [], []
    for volume_index, index in slices_showing_every_class([v["path"] for v in shared], len(class_names), min_rows):
        volume = shared[volume_index]
        image, truth = read_test_volume(volume["path"])
        predictions = [label_files.read_label_volume(r.folder / EVAL_DIR / r.volumes[volume["name"]]["prediction"])
                       for r in runs]
        images.append(_as_network_saw(to_unit_range(image[:, :, index], first["intensity_range"]), first["flip"]))
        label_sets.append([_as_network_saw(labels[:, :, index], first["flip"]) for labels in (truth, *predictions)])
        titles.append(f"{volume['name']} z={index}")
    return figures.qualitative_grid(np.stack(images), np.stack(label_sets), titles,
                                    [m.label(r) for m, r in zip(methods, runs)], class_names)


def _error_bar_caption(methods):
    seeded = [m.name for m in methods if m.seeded]
    single = [m.name for m in methods if not m.seeded]
    parts = []
    if seeded:
        parts.append(f"{', '.join(seeded)}: bar = mean over seeds, error bar = +-1 sample std over seeds, "
                     "dots = each seed's mean over volumes")
    if single:
        parts.append(f"{', '.join(single)}: bar = mean over volumes, error bar = +-1 std over volumes")
    return "; ".join(parts)


# ------------------------------------------------------------------------------------- main

def compare_methods(groups, out_dir, names=None, figure_rows=3):
    """Compares evaluated methods (each a list of run folders, one per seed) against the first;
    writes the files listed in the module docstring to `out_dir` and returns the markdown
    (warnings, table, notes, tests) for printing."""
    methods = _load_methods(groups, names)
    class_names = methods[0].runs[0].record["class_names"]
    columns = table.table_columns(class_names)
    summaries = {m.name: m.summary(columns) for m in methods}
    differences = _differences(methods, summaries, columns)
    tests = _tests(methods, class_names[1:])
    warnings = comparison_warnings(methods)
    markdown = _comparison_markdown(methods, summaries, columns, differences, tests, warnings)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown += _write_curves(methods, out_dir)
    atomic_write_text(out_dir / "comparison.md", markdown)
    result_files.write_csv(out_dir / "comparison.csv",
                           ["method", "runs", "class", "dice_mean", "dice_std", "dice_difference", "assd_mean",
                            "assd_std", "assd_difference", "t", "p", "n", "w", "w_p", "seed_t", "seed_p",
                            "seed_n", "seed_ci95_low", "seed_ci95_high"],
                           _csv_rows(methods, summaries, columns, differences, tests))
    per_seed = {m.name: {c: m.per_seed(c) for c in columns} for m in methods if m.seeded}
    result_files.write_json(out_dir / "comparison.json", {
        "reference": methods[0].name,
        "methods": [{"name": m.name, "runs": [{"folder": str(r.folder), "seed": r.seed,
                                               "evaluated_step": r.evaluated_step()} for r in m.runs]}
                    for m in methods],
        "class_names": class_names, "columns": columns, "assd_unit": methods[0].runs[0].record["assd_unit"],
        "summaries": summaries, "per_seed_dice": per_seed, "differences": differences, "dice_tests": tests,
        "warnings": warnings,
    })
    result_files.write_figure(out_dir / "qualitative.png", _qualitative_figure(methods, class_names, figure_rows))
    result_files.write_figure(out_dir / "dice_bars.png",
                              figures.dice_bars([(m.name, summaries[m.name]) for m in methods], columns,
                                                _error_bar_caption(methods), dots=per_seed))
    return markdown


def _write_curves(methods, out_dir):
    """dice_curves.png and .csv from the runs' eval_curve.csv (methods whose runs all have one);
    returns their paragraph and table for the markdown, or "" when no method has curves."""
    curves, kinds = {}, set()
    for method in methods:
        runs = []
        for run in method.runs:
            rows = [row for row in read_curve(run.folder) if row["class"] == AVERAGE]
            kinds.update(row["volumes"] for row in rows)
            runs.append({row["step"]: row["dice"] for row in rows})
        if all(runs):
            curves[method.name] = runs
    if not curves:
        return ""
    volumes = " and ".join(sorted(kinds))
    result_files.write_figure(out_dir / "dice_curves.png",
                              figures.dice_curves(curves, f"target {volumes} Dice, mean over classes (%)"))
    statistics = {name: figures.curve_statistics(runs) for name, runs in curves.items()}
    rows = [[name, step, mean, None if spreads is None else spreads[i], len(curves[name])]
            for name, (steps, means, spreads) in statistics.items()
            for i, (step, mean) in enumerate(zip(steps, means))]
    result_files.write_csv(out_dir / "dice_curves.csv", ["method", "step", "dice_mean", "dice_std", "runs"], rows)
    return (f"\nLearning curves (target {volumes} volumes, --eval_every): {out_dir / 'dice_curves.png'} and "
            f"dice_curves.csv, for {', '.join(curves)}. Mean Dice over classes (%), mean(std) over runs:\n\n"
            + _curve_table(statistics) + "\n")


def _curve_table(statistics):
    """Markdown: a row per step, a column per method, mean(std) Dice (the mean alone for one run);
    "-" where a method did not evaluate at that step."""
    cells = {}
    for name, (steps, means, spreads) in statistics.items():
        spreads = [None] * len(steps) if spreads is None else spreads
        cells[name] = {step: f"{mean:.1f}" + ("" if spread is None else f"({spread:.1f})")
                       for step, mean, spread in zip(steps, means, spreads)}
    lines = ["| step | " + " | ".join(statistics) + " |", "|---|" + "---|" * len(statistics)]
    lines += [f"| {step} | " + " | ".join(cells[name].get(step, "-") for name in statistics) + " |"
              for step in sorted({step for by_step in cells.values() for step in by_step})]
    return "\n".join(lines)


def compare_runs(paths, out_dir, names=None, figure_rows=3):
    """compare_methods over --compare_runs entries: run folders, folders of seed<N> runs or
    experiment folders (see method_folders)."""
    groups = [group for path in paths for group in method_folders(path)]
    return compare_methods(groups, out_dir, names, figure_rows)
