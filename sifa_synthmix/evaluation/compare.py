"""Side-by-side comparison of evaluated runs (each RUN/eval/metrics.json, written by report.py):

    comparison.md / .csv / .json  the paper's Table 1 layout over all runs, each run's difference
                                  to the first run, and a paired t-test of Dice against it
    qualitative.png               image, ground truth and each run's prediction on the same slices
    dice_bars.png                 mean Dice per class and Avg, one bar per run
"""
import dataclasses
import json
import pathlib

import numpy as np

from sifa_synthmix.data.layout import atomic_write_text, read_test_volume
from sifa_synthmix.data.reader import to_unit_range
from sifa_synthmix.evaluation import figures, label_files, result_files, table
from sifa_synthmix.evaluation.methods import method_names
from sifa_synthmix.evaluation.metrics import AVERAGE
from sifa_synthmix.evaluation.report import read_metrics
from sifa_synthmix.evaluation.significance import ALL_CLASSES, paired_dice_ttest

EVAL_DIR = "eval"
CONFIG_FILE = "config.json"
METRICS = ("dice", "assd")


@dataclasses.dataclass
class EvaluatedRun:
    folder: pathlib.Path
    name: str
    record: dict  # the run's metrics.json

    @property
    def volumes(self):
        return {v["name"]: v for v in self.record["volumes"]}


def _read_config(folder):
    path = folder / CONFIG_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _load_runs(run_dirs, names=None):
    """The evaluated runs, named from their configs (or `names`); they must share classes and units."""
    folders = [pathlib.Path(d) for d in run_dirs]
    if not folders:
        raise ValueError("no runs to compare")
    for folder in folders:
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: the run folder does not exist")
        if not (folder / EVAL_DIR / "metrics.json").is_file():
            raise FileNotFoundError(f"{folder}: no {EVAL_DIR}/metrics.json; evaluate the run first (--mode=evaluate)")
    if names is None:
        names = method_names([_read_config(f) for f in folders], [f.name for f in folders])
    if len(names) != len(folders) or len(set(names)) != len(names):
        raise ValueError(f"need one distinct name per run, got {list(names)} for {len(folders)} runs")
    runs = [EvaluatedRun(f, n, read_metrics(f / EVAL_DIR)) for f, n in zip(folders, names)]
    for key in ("class_names", "assd_unit"):
        values = {json.dumps(r.record[key]) for r in runs}
        if len(values) > 1:
            raise ValueError(f"the runs differ in {key} ({', '.join(sorted(values))}); they cannot share a table")
    return runs


def _differences(runs, columns):
    """Later run -> column -> {dice, assd}: its mean minus the first run's mean."""
    reference = runs[0].record["summary"]
    return {r.name: {c: {m: r.record["summary"][c][m + "_mean"] - reference[c][m + "_mean"] for m in METRICS}
                     for c in columns} for r in runs[1:]}


def _notes(runs):
    first = runs[0]
    notes = [f"mean(std) over volumes ({', '.join(f'{r.name}: {len(r.volumes)}' for r in runs)}); "
             f"Dice in %, ASSD in {first.record['assd_unit']}; differences are means minus {first.name}'s."]
    if any(r.volumes.keys() != first.volumes.keys() for r in runs):
        notes.append("The runs were evaluated on different volume sets; t-tests use the shared volumes only.")
    for run in runs:
        excluded = {c: s["assd_excluded"] for c, s in run.record["summary"].items() if c != AVERAGE and s["assd_excluded"]}
        if excluded:
            notes.append(f"{run.name}: ASSD undefined (empty prediction or truth) and left out for "
                         + ", ".join(f"{n} volume(s) of {c}" for c, n in excluded.items()) + ".")
    notes.append(f"Empty-case rule: {first.record['empty_case_rule']}")
    return "\n".join(f"- {n}" for n in notes) + "\n"


def _comparison_markdown(runs, columns, differences, ttests):
    """The comparison table, its notes and the t-test table, as markdown."""
    reference = runs[0].name
    unit = runs[0].record["assd_unit"]
    named_summaries = [(r.name, r.record["summary"]) for r in runs]
    blocks = []
    for metric in METRICS:
        blocks.append((table.block_title(metric, unit), table.metric_rows(named_summaries, columns, metric)))
        if differences:
            named = [(name, {c: d[c][metric] for c in columns}) for name, d in differences.items()]
            blocks.append((table.difference_title(metric, reference, unit),
                           table.signed_rows(named, columns, metric)))
    text = table.markdown_table(columns, blocks) + "\n" + _notes(runs)
    if ttests:
        test_columns = columns[:-1] + [ALL_CLASSES]
        rows = [(name, [f"t={t[c]['t']:.2f}, p={t[c]['p']:.3g}, n={t[c]['n']}" for c in test_columns])
                for name, t in ttests.items()]
        text += ("\n" + table.markdown_table(test_columns, [(f"Paired two-sided t-test of per-volume Dice vs "
                                                             f"{reference}", rows)]))
    return text


def _csv_rows(runs, columns, differences, ttests):
    rows = []
    for run in runs:
        summary, difference, ttest = (run.record["summary"], differences.get(run.name, {}),
                                      ttests.get(run.name, {}))
        for column in columns:
            stats = summary[column]
            test = ttest.get(column, {})
            rows.append([run.name, str(run.folder), column, stats["dice_mean"], stats["dice_std"],
                         difference.get(column, {}).get("dice"), stats["assd_mean"], stats["assd_std"],
                         difference.get(column, {}).get("assd"), test.get("t"), test.get("p"), test.get("n")])
        if ttest:
            pooled = ttest[ALL_CLASSES]
            rows.append([run.name, str(run.folder), ALL_CLASSES] + [None] * 6 + [pooled["t"], pooled["p"], pooled["n"]])
    return rows


def _largest_foreground_slice(labels):
    return int(np.argmax((labels > 0).sum(axis=(0, 1))))


def _as_network_saw(slice_, flip):
    """A slice in the orientation the network saw (the stored test volumes may be flipped)."""
    return np.flip(slice_, (0, 1)) if flip else slice_


def _qualitative_figure(runs, class_names, max_rows):
    """The grid on the slice with the largest ground-truth foreground of each of the first
    `max_rows` volumes shared by all runs; the same slices for every run."""
    first = runs[0].record
    shared = [v for v in first["volumes"] if all(v["name"] in r.volumes for r in runs)][:max_rows]
    images, label_sets, titles = [], [], []
    for volume in shared:
        image, truth = read_test_volume(volume["path"])
        index = _largest_foreground_slice(truth)
        predictions = [label_files.read_label_volume(r.folder / EVAL_DIR / r.volumes[volume["name"]]["prediction"])
                       for r in runs]
        images.append(_as_network_saw(to_unit_range(image[:, :, index], first["intensity_range"]), first["flip"]))
        label_sets.append([_as_network_saw(labels[:, :, index], first["flip"]) for labels in (truth, *predictions)])
        titles.append(f"{volume['name']} z={index}")
    return figures.qualitative_grid(np.stack(images), np.stack(label_sets), titles, [r.name for r in runs],
                                    class_names)


def compare_runs(run_dirs, out_dir, names=None, figure_rows=3):
    """Compares evaluated runs against the first one; writes the files listed in the module
    docstring to `out_dir` and returns the markdown (table, notes, t-tests) for printing."""
    runs = _load_runs(run_dirs, names)
    class_names = runs[0].record["class_names"]
    columns = table.table_columns(class_names)
    differences = _differences(runs, columns)
    ttests = {r.name: paired_dice_ttest(runs[0].record["volumes"], r.record["volumes"], class_names[1:])
              for r in runs[1:]}
    markdown = _comparison_markdown(runs, columns, differences, ttests)
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "comparison.md", markdown)
    result_files.write_csv(out_dir / "comparison.csv",
                           ["method", "run", "class", "dice_mean", "dice_std", "dice_difference", "assd_mean",
                            "assd_std", "assd_difference", "t", "p", "n"],
                           _csv_rows(runs, columns, differences, ttests))
    result_files.write_json(out_dir / "comparison.json", {
        "reference": runs[0].name,
        "runs": [{"name": r.name, "folder": str(r.folder)} for r in runs],
        "class_names": class_names, "columns": columns, "assd_unit": runs[0].record["assd_unit"],
        "summaries": {r.name: r.record["summary"] for r in runs},
        "differences": differences, "dice_ttests": ttests,
    })
    result_files.write_figure(out_dir / "qualitative.png", _qualitative_figure(runs, class_names, figure_rows))
    result_files.write_figure(out_dir / "dice_bars.png",
                              figures.dice_bars([(r.name, r.record["summary"]) for r in runs], columns))
    return markdown
