"""--mode=experiment: several variants trained alike, evaluated, and compared side by side.

Every variant gets the same seeds, data, sizes and step budget; only what makes it that variant
changes. Without seeds each variant trains once, with the run's --seed, in OUTPUT_DIR/<variant>;
with seeds (--seeds=1234,1235,...) once per seed, in OUTPUT_DIR/<variant>/seed<N>. A run already
trained to max_steps with the same flags and evaluated with the same settings is reused; an
unfinished one resumes. A signal (SIGINT, SIGTERM) during training stops the whole experiment
with that run saved: the same command resumes it. The comparison goes to OUTPUT_DIR/comparison,
and OUTPUT_DIR/experiment.json lets --mode=compare take OUTPUT_DIR itself.
"""
import dataclasses
import pathlib
import time

import numpy as np

from sifa_synthmix.config import ConfigError
from sifa_synthmix.data import inputs
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.errors import TrainingStopped
from sifa_synthmix.evaluation.compare import (compare_methods, evaluated_step, experiment_in_parts,
                                              experiment_run_folders, write_experiment_file)
from sifa_synthmix.evaluation.methods import method_name
from sifa_synthmix.evaluation.metrics import AVERAGE
from sifa_synthmix.evaluation.report import read_metrics
from sifa_synthmix.evaluation.run_evaluation import evaluate_run
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.runs.run_folder import CONFIG_FILE, EVAL_DIR, METRICS_FILE, check_run_folder
from sifa_synthmix.training.trainer import Trainer

# variant -> (TrainConfig fields, SynthMixConfig fields)
VARIANTS = {
    "source_only": ({"kind": "segmenter", "train_domain": "source"}, {}),
    "oracle": ({"kind": "segmenter", "train_domain": "target"}, {}),
    "cyclegan": ({"kind": "cyclegan"}, {"protocol": "none"}),
    "sifa": ({"kind": "sifa"}, {"protocol": "none"}),
    "synthmix": ({"kind": "sifa"}, {"protocol": "synthmix"}),
    "mixup": ({"kind": "sifa"}, {"protocol": "mixup"}),
    "cutmix": ({"kind": "sifa"}, {"protocol": "cutmix"}),
    "model0": ({"kind": "sifa"}, {"protocol": "synthmix", "image_discriminators": False}),
}
# The comparison's first variant is the reference of its differences and tests.
REFERENCE_ORDER = ("sifa", "synthmix", "cyclegan", "mixup", "cutmix", "model0", "source_only", "oracle")


def variant_config(cfg, variant, seed=None):
    """The TrainConfig of one variant: in OUTPUT_DIR/<variant>, or with a seed OUTPUT_DIR/<variant>/seed<N>."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown experiment variant {variant!r}; expected some of {sorted(VARIANTS)}")
    train_fields, mix_fields = VARIANTS[variant]
    [[output_dir]] = experiment_run_folders(cfg.output_dir, [variant], [] if seed is None else [seed])
    seed_field = {} if seed is None else {"seed": seed}
    return dataclasses.replace(cfg, output_dir=str(output_dir), synthmix=dataclasses.replace(cfg.synthmix, **mix_fields),
                               **train_fields, **seed_field)


def gap_closed(dice_by_variant):
    """Share of the source-only -> oracle Dice gap each adapted variant closes (needs both ends)."""
    if "source_only" not in dice_by_variant or "oracle" not in dice_by_variant:
        return {}
    low, high = dice_by_variant["source_only"], dice_by_variant["oracle"]
    if high <= low:
        return {}
    return {v: (d - low) / (high - low) for v, d in dice_by_variant.items() if v not in ("source_only", "oracle")}


def finished_record(cfg, eval_options):
    """The evaluation record of cfg's run if it can be reused: a run with the same flags, evaluated
    at its max_steps checkpoint with the same evaluation settings; else None."""
    run_dir = pathlib.Path(cfg.output_dir)
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / EVAL_DIR / METRICS_FILE).is_file():
        return None
    record = read_metrics(run_dir / EVAL_DIR)
    flip = eval_options.get("flip")
    if (check_run_folder(cfg, overwrite=True) != "resume" or eval_options.get("checkpoint")
            or evaluated_step(record, run_dir) != cfg.schedule.max_steps
            or record["assd_unit"] != eval_options.get("assd_unit", "voxel")
            or (flip is not None and record["flip"] != flip)):
        return None
    return record


def check_experiment_labels(cfg, variants, log):
    """Refuses, before anything trains, what the data's labels cannot give: every variant is
    scored on labelled target test volumes, and the oracle trains on target labels."""
    try:
        resolved = inputs.resolve_data(cfg.data)
    except DataError:
        return  # missing or bad data: the first run's trainer names the problem
    inputs.labelled_test_volumes(cfg.data.data_dir, resolved.info, cfg.data.target_modality, log)
    for variant in variants:
        inputs.check_labels(variant_config(cfg, variant), resolved)


def _run_label(variant, seed):
    return variant if seed is None else f"{variant} (seed {seed})"


def train_and_evaluate(cfg, variant, seed, overwrite, eval_options, log):
    """One run of the experiment: reused when finished, else trained (or resumed) and evaluated."""
    record = finished_record(cfg, eval_options)
    label = _run_label(variant, seed)
    if record is not None:
        log(f"=== {label}: trained to step {cfg.schedule.max_steps} and evaluated, reused ({cfg.output_dir})")
        return record
    log(f"=== {label}: {method_name(cfg.to_dict())} -> {cfg.output_dir}")
    start = time.perf_counter()
    try:
        Trainer(cfg, overwrite=overwrite, log=log).run()
    except TrainingStopped as stopped:
        raise TrainingStopped(stopped.exit_code - 128, (
            f"{stopped}; the experiment stopped in {label} (of {cfg.schedule.max_steps} steps): run the same command "
            "again to resume it (finished runs are reused)")) from None
    record = evaluate_run(cfg.output_dir, log=log, **eval_options)
    log(f"=== {label}: trained and evaluated in {time.perf_counter() - start:.0f} s")
    return record


def run_experiment(cfg, variants, overwrite=False, eval_options=None, log=print, seeds=None):
    """Trains and evaluates each variant (once, or once per seed), then compares them with the
    runs of the experiment's earlier parts in the same folder (`experiment_in_parts`); returns the
    comparison text. Raises TrainingStopped, naming the run, when a signal stops one."""
    variants = list(dict.fromkeys(variants))
    seeds = list(dict.fromkeys(seeds or []))
    eval_options = eval_options or {}
    for variant in variants:
        variant_config(cfg, variant)  # fail on a bad name or missing labels before any training
    check_experiment_labels(cfg, variants, log)
    for variant, seed in [(variant, seed) for variant in variants for seed in (seeds or [None])]:
        train_and_evaluate(variant_config(cfg, variant, seed), variant, seed, overwrite, eval_options, log)
    out = pathlib.Path(cfg.output_dir)
    variants, seeds = experiment_in_parts(out, variants, seeds)  # with the runs of earlier parts
    ordered = sorted(variants, key=REFERENCE_ORDER.index)
    write_experiment_file(out, ordered, seeds)
    folders = experiment_run_folders(out, ordered, seeds)
    text = compare_methods(folders, out / "comparison")
    dice = {v: float(np.mean([read_metrics(run / EVAL_DIR)["summary"][AVERAGE]["dice_mean"] for run in runs]))
            for v, runs in zip(ordered, folders)}
    closed = gap_closed(dice)
    if closed:
        text += ("\nShare of the source-only -> oracle gap in mean Dice "
                 f"({100 * dice['source_only']:.1f}% -> {100 * dice['oracle']:.1f}%"
                 f"{', means over seeds' if seeds else ''}) closed: "
                 + ", ".join(f"{method_name(variant_config(cfg, v).to_dict())} {100 * c:.0f}%"
                             for v, c in closed.items()) + "\n")
    text += (f"\nFigures: {out / 'comparison' / 'qualitative.png'} and {out / 'comparison' / 'dice_bars.png'}\n")
    atomic_write_text(out / "comparison" / "experiment.md", text)
    return text
