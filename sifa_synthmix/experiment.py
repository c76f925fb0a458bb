"""--mode=experiment: several variants trained alike, evaluated, and compared side by side.

Every variant gets the same seed, data, sizes and step budget; only what makes it that variant
changes. Each trains in OUTPUT_DIR/<variant>; the comparison goes to OUTPUT_DIR/comparison.
"""
import dataclasses
import pathlib

from sifa_synthmix.data.layout import atomic_write_text
from sifa_synthmix.evaluation.compare import compare_runs
from sifa_synthmix.evaluation.metrics import AVERAGE
from sifa_synthmix.evaluation.methods import method_name
from sifa_synthmix.run_evaluation import evaluate_run
from sifa_synthmix.trainer import Trainer

# variant -> (TrainConfig fields, SynthMixConfig fields)
VARIANTS = {
    "source_only": ({"kind": "segmenter", "train_domain": "source"}, {}),
    "oracle": ({"kind": "segmenter", "train_domain": "target"}, {}),
    "sifa": ({"kind": "sifa"}, {"protocol": "none"}),
    "synthmix": ({"kind": "sifa"}, {"protocol": "synthmix"}),
    "mixup": ({"kind": "sifa"}, {"protocol": "mixup"}),
    "cutmix": ({"kind": "sifa"}, {"protocol": "cutmix"}),
    "model0": ({"kind": "sifa"}, {"protocol": "synthmix", "image_discriminators": False}),
}
# The comparison's first run is the reference of its differences and t-tests.
REFERENCE_ORDER = ("sifa", "synthmix", "mixup", "cutmix", "model0", "source_only", "oracle")


def variant_config(cfg, variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown experiment variant {variant!r}; expected some of {sorted(VARIANTS)}")
    train_fields, mix_fields = VARIANTS[variant]
    return dataclasses.replace(cfg, output_dir=str(pathlib.Path(cfg.output_dir) / variant),
                               synthmix=dataclasses.replace(cfg.synthmix, **mix_fields), **train_fields)


def gap_closed(dice_by_variant):
    """Share of the source-only -> oracle Dice gap each adapted variant closes (needs both ends)."""
    if "source_only" not in dice_by_variant or "oracle" not in dice_by_variant:
        return {}
    low, high = dice_by_variant["source_only"], dice_by_variant["oracle"]
    if high <= low:
        return {}
    return {v: (d - low) / (high - low) for v, d in dice_by_variant.items() if v not in ("source_only", "oracle")}


def run_experiment(cfg, variants, overwrite=False, eval_options=None, log=print):
    """Trains and evaluates each variant, then compares them; returns the comparison text."""
    variants = list(dict.fromkeys(variants))
    for variant in variants:
        variant_config(cfg, variant)  # fail on a bad name before any training
    records = {}
    for variant in variants:
        vcfg = variant_config(cfg, variant)
        log(f"=== {variant}: {method_name(vcfg.to_dict())} -> {vcfg.output_dir}")
        Trainer(vcfg, overwrite=overwrite, log=log).run()
        records[variant] = evaluate_run(vcfg.output_dir, log=log, **(eval_options or {}))
    ordered = sorted(variants, key=REFERENCE_ORDER.index)
    out = pathlib.Path(cfg.output_dir)
    text = compare_runs([out / v for v in ordered], out / "comparison")
    dice = {v: records[v]["summary"][AVERAGE]["dice_mean"] for v in variants}
    closed = gap_closed(dice)
    if closed:
        text += ("\nShare of the source-only -> oracle gap in mean Dice "
                 f"({100 * dice['source_only']:.1f}% -> {100 * dice['oracle']:.1f}%) closed: "
                 + ", ".join(f"{method_name(variant_config(cfg, v).to_dict())} {100 * c:.0f}%"
                             for v, c in closed.items()) + "\n")
    text += (f"\nFigures: {out / 'comparison' / 'qualitative.png'} and {out / 'comparison' / 'dice_bars.png'}\n")
    atomic_write_text(out / "comparison" / "experiment.md", text)
    return text
