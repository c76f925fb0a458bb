"""Training scalars of runs read back from their TensorBoard events, as a table over steps with
mean and spread over seeds: how a quantity TensorBoard plots per run (the Mixup Inspector's
accuracy, a loss) moved over training across several runs.

    python -m sifa_synthmix.evaluation.training_scalars --runs=EXP/synthmix \
        --tags=inspector/accuracy_S_mix,inspector/accuracy_T_mix --every=500 [--csv=OUT.csv]

Each --runs entry is a run folder (with tb/) or a folder of run folders (an experiment's
variant: seed1234/, seed1235/, ...), pooled as seeds. A row averages each run's values in a step
range [start, end), then gives the mean and the sample standard deviation over runs (as
--mode=compare does over seeds).
"""
import argparse
import math
import pathlib
import sys

import numpy as np

from sifa_synthmix.tensorflow_start import import_tensorflow

tf = import_tensorflow()  # before the modules below import it: its start-up noise filtered out

from sifa_synthmix.evaluation.result_files import write_csv  # pylint: disable=wrong-import-position
from sifa_synthmix.runs.run_folder import TENSORBOARD_DIR  # pylint: disable=wrong-import-position

EVENTS_GLOB = "events.out.tfevents.*"


def event_values(run_dir):
    """(event, summary value) of every value in a run's event files, oldest file first."""
    tf.get_logger().setLevel("ERROR")  # summary_iterator's deprecation notice
    for path in sorted((pathlib.Path(run_dir) / TENSORBOARD_DIR).glob(EVENTS_GLOB)):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                yield event, value


def read_scalars(run_dir, tags):
    """{tag: {step: value}} of the scalar `tags` in a run's events (a step written again after a
    resume keeps its last value)."""
    found = {tag: {} for tag in tags}
    for event, value in event_values(run_dir):
        if value.tag in found:
            found[value.tag][event.step] = float(tf.make_ndarray(value.tensor))
    return found


def run_folders(path):
    """The run folders a --runs entry names: itself when it holds tb/, else its subfolders that do."""
    path = pathlib.Path(path)
    if (path / TENSORBOARD_DIR).is_dir():
        return [path]
    runs = sorted(p for p in path.iterdir() if (p / TENSORBOARD_DIR).is_dir()) if path.is_dir() else []
    if not runs:
        raise ValueError(f"{path}: neither a run folder (with {TENSORBOARD_DIR}/) nor a folder of run folders")
    return runs


def scalar_table(runs, tags, every):
    """Rows (start, end, {tag: (mean, sample std, runs with values)}) over step ranges of `every`
    steps; a range where no run has a value is NaN."""
    per_run = [read_scalars(run, tags) for run in runs]
    for tag in tags:
        if not any(scalars[tag] for scalars in per_run):
            known = sorted({value.tag for run in runs for _, value in event_values(run)
                            if value.metadata.plugin_data.plugin_name == "scalars"})
            raise ValueError(f"no run has the scalar {tag!r}; the runs have {', '.join(known) or 'none'}")
    last = max((step for scalars in per_run for values in scalars.values() for step in values), default=-1)
    rows = []
    for start in range(0, last + 1, every):
        cells = {}
        for tag in tags:
            means = [np.mean([v for s, v in scalars[tag].items() if start <= s < start + every])
                     for scalars in per_run if any(start <= s < start + every for s in scalars[tag])]
            spread = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0 if means else math.nan
            cells[tag] = (float(np.mean(means)) if means else math.nan, spread, len(means))
        rows.append((start, start + every, cells))
    return rows


def markdown(rows, tags):
    lines = ["| steps | " + " | ".join(tags) + " |", "|---|" + "---|" * len(tags)]
    for start, end, cells in rows:
        shown = [f"{mean:.3f}({std:.3f}, n={n})" if n else "-" for mean, std, n in (cells[t] for t in tags)]
        lines.append(f"| {start}-{end - 1} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m sifa_synthmix.evaluation.training_scalars",
                                     description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--runs", required=True, type=lambda text: text.split(","),
                        help="run folders, or folders of run folders (seeds), comma-separated; pooled")
    parser.add_argument("--tags", required=True, type=lambda text: text.split(","),
                        help="TensorBoard scalar tags, comma-separated, e.g. inspector/accuracy_S_mix")
    parser.add_argument("--every", type=int, default=500, help="steps per row")
    parser.add_argument("--csv", help="also write the rows here: start, end, tag, mean, std, runs")
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error("--every must be at least 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    try:
        runs = [run for entry in args.runs for run in run_folders(entry)]
        rows = scalar_table(runs, args.tags, args.every)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(f"{len(runs)} run(s): {', '.join(str(r) for r in runs)}")
    print(markdown(rows, args.tags))
    if args.csv:
        write_csv(args.csv, ["start", "end", "tag", "mean", "std", "runs"],
                  [[start, end, tag, *cells[tag]] for start, end, cells in rows for tag in args.tags])


if __name__ == "__main__":
    main()
