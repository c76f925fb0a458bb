"""The Inspector test (issue 37, point 1): does SIFA's translation leave local traces that a
patch-level Mixup Inspector finds?

SynthMix helps only where a translated patch can be told from a real patch of the modality it
imitates (the paper's Fig. 1). For each finished SIFA run, with or without
--mix_protocol=synthmix, the run's g_A, e_B and de_B are restored from its newest checkpoint and
stay frozen. A fresh probe Inspector (the product's, with the run's k and --inspector_ndf, or
--k) is trained the way a SynthMix run trains its own, by the task's update_inspector: Adam on
lambda_I * L_cls over real source A, real target B and an unaligned mix of the two with a fresh
mask, for --probe_steps batches. Then, on --eval_batches batches of held-out volumes (the last
quarter of each domain's training volumes, at least one, never shown to the probe), with a fresh
mask M per batch from another seed, it measures the per-cell accuracy against M (logits
thresholded at 0) on

    unaligned  M * B + (1 - M) * A          real cells only
    S_mix      M * fake_B + (1 - M) * A     fake_B = g_A(A), read as target where M = 1
    T_mix      M * B + (1 - M) * fake_A     fake_A = de_B(e_B(B)), read as source where M = 0
    A, B       each real modality alone (answer all 0, all 1)

and L_adv^mix on S_mix and T_mix (the loss the generators minimise) beside its floor: with the
auxiliary share term, the mean binary entropy of mean(M) over the same masks. The three mixes of a
batch share M, so trace_S = unaligned - S_mix and trace_T = unaligned - T_mix are paired: positive
when translated cells are told from the modality they imitate more often than real cells are
misread. A SynthMix run's own Inspector is measured on the same images (own_* columns; masks of
its own k, same seed). Rows per run, then mean(std) over the runs of each variant folder (the
parent of seed<N> runs). The probe learns from real images only, so on the same data and --seed
every run gets the same probe: a fixed yardstick, and the runs differ only in their translations.

The translations are those the training step computes (networks.target_to_source), not inference
mode: e_B normalises each batch with its own statistics (training mode) and de_B's dropout is on.
Everything runs in the precision evaluation uses (the run's where this machine computes it
natively, else float32).

    python -m benchmarks.inspector_test --runs=runs/scan64/sifa,runs/scan64/synthmix \\
        [--probe_steps=300] [--eval_batches=50] [--k=K] [--seed=0] [--csv=OUT.csv] \\
        [--blend=F] [--checkerboard=F]

Two controls spoil the translations on purpose, to measure what the probe can find (issue 37,
point 4): --blend=F pulls each translation back toward the image it was made from by the share F
(fake_B = (1 - F) g_A(A) + F A: a translation that leaves F of the source's appearance), and
--checkerboard=F adds F times a +1/-1 pattern on alternate pixels (the highest spatial frequency,
the artefact transposed convolutions leave) to both translations, in the [-1, 1] intensity units.

--runs: comma-separated globs of run folders, folders of seed<N> runs or experiment folders;
runs that are not SIFA runs (source only, oracle, CycleGAN) are left out.
"""
import argparse
import dataclasses
import functools
import glob
import itertools
import pathlib
import re
import sys

import numpy as np

from sifa_synthmix.tensorflow_start import import_tensorflow

tf = import_tensorflow()

# pylint: disable=wrong-import-position
import keras

from benchmarks.machine import describe_machine
from sifa_synthmix.data import inputs
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.prediction import inference
from sifa_synthmix.evaluation.compare import method_folders
from sifa_synthmix.evaluation.result_files import write_csv
from sifa_synthmix.models.synthmix import mixing
from sifa_synthmix.models.synthmix.inspector import build_mixup_inspector
from sifa_synthmix.models.synthmix.masks import SynthMixMask
from sifa_synthmix.models.networks import target_to_source
from sifa_synthmix.runs.run_folder import load_run_config
from sifa_synthmix.training.task import run_stacked
from sifa_synthmix.training.task_factory import build_task

KINDS = ("unaligned", "S_mix", "T_mix", "A", "B")
MEASURES = (*KINDS, "trace_S", "trace_T", "adv_S_mix", "adv_T_mix", "floor")
COLUMNS = ("run", "step", "k", "blend", "checkerboard", "L_cls", *MEASURES, *(f"own_{m}" for m in MEASURES))
TRANSLATORS = ("g_A", "e_B", "de_B")


def held_out_split(paths):
    """(probe's volumes, held-out volumes) of one domain's training record files: the last
    quarter is held out, at least one volume."""
    if len(paths) < 2:
        raise DataError(f"{len(paths)} training volume(s) in a domain; the Inspector test holds one out "
                        "and trains the probe on the others")
    cut = len(paths) - max(1, len(paths) // 4)
    return paths[:cut], paths[cut:]


def image_pairs(cfg, resolved, source_paths, target_paths):
    """Endless (source images, target images) batches of these record files, from the training
    pipeline with cfg's seed and batch size."""
    chosen = dataclasses.replace(resolved, source_train=source_paths, target_train=target_paths, target_val=[])
    source, target, _ = inputs.build_training_datasets(cfg, chosen)
    return ((a, b) for (a, _), (b, _) in zip(source, target))


def probe_config(cfg, seed, k=None):
    """The run's config as the probe's task: SynthMix with the run's mixing settings (k: --k),
    this test's seed, input order fixed, evaluation's precision."""
    mix = dataclasses.replace(cfg.synthmix, protocol="synthmix", k=k or cfg.synthmix.k)
    runtime = dataclasses.replace(cfg.runtime, deterministic=True, jit_compile=False,
                                  precision=inference.inference_precision(cfg.runtime.precision))
    return dataclasses.replace(cfg, synthmix=mix, seed=seed, runtime=runtime)


def train_probe(task, pairs, steps):
    """`steps` updates of task.inspector by the task's own Inspector update on batches of `pairs`;
    returns L_cls of each."""

    @tf.function
    def step(source, target):
        ctx = task.new_context(source, None, target)
        task.update_inspector(ctx)
        return ctx["metrics"]["inspector_cls"]

    return np.array([float(step(a, b)) for a, b in itertools.islice(pairs, steps)])


def checkerboard_pattern(image_size):
    """[1, H, W, 1] of +1 and -1 on alternate pixels."""
    return tf.constant((np.indices((image_size, image_size)).sum(axis=0) % 2 * 2 - 1.0)[None, :, :, None])


def translations(networks, source, target, blend=0.0, checkerboard=0.0):
    """(fake_B, fake_A) as the training step computes them, spoilt by the controls (module
    docstring) when blend or checkerboard is not 0."""
    spoilt = []
    for fake, original in ((networks.g_A(source), source), (target_to_source(networks, target), target)):
        fake = (1.0 - blend) * fake + blend * tf.cast(original, fake.dtype)
        spoilt.append(fake + tf.cast(checkerboard * checkerboard_pattern(fake.shape[1]), fake.dtype))
    return tuple(spoilt)


def mean_binary_entropy(shares):
    """Mean of -s ln s - (1 - s) ln(1 - s) over `shares` (0 at s = 0 or 1), in nats."""
    s = np.clip(np.asarray(shares, np.float64), 1e-12, 1 - 1e-12)
    return float(np.mean(-(s * np.log(s) + (1 - s) * np.log1p(-s))))


def adversarial_floor(mix_cfg, masks_k):
    """The least L_adv^mix can be on masks [N, k, k, 1]: the cross-entropy of the auxiliary score
    against the soft target mean(M) is at least its entropy; every other term can reach 0."""
    if mix_cfg.inspector_loss != "bce" or not mix_cfg.aux_in_adversarial:
        return 0.0
    return mean_binary_entropy(masks_k.mean(axis=(1, 2, 3)))


def evaluate(task, inspector, mask_layer, batches):
    """MEASURES of `inspector` over `batches` of (A, B, fake_B, fake_A), a fresh mask per batch;
    accuracy and loss as the task computes them."""

    @tf.function
    def batch_values(a, b, fake_b, fake_a):
        mask_k, mask = mask_layer(a)
        images = (mixing.mix(b, a, mask), mixing.mix(fake_b, a, mask), mixing.mix(b, fake_a, mask), a, b)
        answers = (mask_k, mask_k, mask_k, tf.zeros_like(mask_k), tf.ones_like(mask_k))
        outputs = dict(zip(KINDS, run_stacked(inspector, list(images))))
        values = {kind: task.accuracy(outputs[kind], answer) for kind, answer in zip(KINDS, answers)}
        for kind in ("S_mix", "T_mix"):
            values[f"adv_{kind}"] = task.inspector_loss(outputs[kind], mask_k,
                                                        with_aux=task.mix_cfg.aux_in_adversarial)
        return values, mask_k

    per_batch, masks = zip(*(batch_values(*batch) for batch in batches))
    values = {name: float(np.mean([v[name] for v in per_batch])) for name in per_batch[0]}
    values["trace_S"] = values["unaligned"] - values["S_mix"]
    values["trace_T"] = values["unaligned"] - values["T_mix"]
    values["floor"] = adversarial_floor(task.mix_cfg, np.concatenate(masks))
    return {name: values[name] for name in MEASURES}


def eval_masks(mix_cfg, k, image_size, seed):
    return SynthMixMask(k, image_size, lam=mix_cfg.lam, interpolation=mix_cfg.interpolation, seed=seed)


def run_row(run, probe_steps, eval_batches, seed, k=None, blend=0.0, checkerboard=0.0):
    """The Inspector test of one run: a row of COLUMNS."""
    cfg = load_run_config(run)
    probe_cfg = probe_config(cfg, seed, k)
    size = cfg.model.image_size
    keras.backend.clear_session()  # the previous run's networks go
    keras.utils.set_random_seed(seed)
    task = build_task(probe_cfg)
    networks = {scope: getattr(task.networks, scope) for scope in TRANSLATORS}
    own = cfg.synthmix.protocol == "synthmix"
    if own:
        networks["inspector"] = build_mixup_inspector(size, cfg.synthmix.k, ndf=cfg.synthmix.inspector_ndf)
    restored = inference.restore_networks(run, cfg, networks, use="to test")
    resolved = inputs.resolve_data(cfg.data)
    (source_probe, source_held), (target_probe, target_held) = map(
        held_out_split, (resolved.source_train, resolved.target_train))
    losses = train_probe(task, image_pairs(probe_cfg, resolved, source_probe, target_probe), probe_steps)
    translate = tf.function(functools.partial(translations, task.networks, blend=blend, checkerboard=checkerboard))
    held_out = image_pairs(dataclasses.replace(probe_cfg, seed=seed + 1), resolved, source_held, target_held)
    batches = [(a, b, *translate(a, b)) for a, b in itertools.islice(held_out, eval_batches)]
    probe_k = probe_cfg.synthmix.k
    row = {"run": str(run), "step": restored.step, "k": probe_k, "blend": blend, "checkerboard": checkerboard,
           "L_cls": float(np.mean(losses[-max(1, len(losses) // 10):])),
           **evaluate(task, task.inspector, eval_masks(cfg.synthmix, probe_k, size, seed + 1), batches)}
    own_values = (evaluate(task, networks["inspector"], eval_masks(cfg.synthmix, cfg.synthmix.k, size, seed + 1),
                           batches) if own else dict.fromkeys(MEASURES, float("nan")))
    return {**row, **{f"own_{name}": value for name, value in own_values.items()}}


def sifa_runs(specs):
    """The SIFA run folders that comma-separated globs name (folders of seed<N> runs and
    experiment folders stand for their runs), and how many other runs they named."""
    runs = [run for spec in specs.split(",") for path in sorted(glob.glob(spec))
            for group in method_folders(path) for run in group]
    sifa = [run for run in runs if load_run_config(run).kind == "sifa"]
    return sifa, len(runs) - len(sifa)


def variant_of(run):
    """A seed<N> run's parent folder (its experiment variant), else the run itself."""
    run = pathlib.Path(run)
    return str(run.parent) if re.fullmatch(r"seed\d+", run.name) else str(run)


def cell(value):
    if isinstance(value, float):
        return "-" if np.isnan(value) else f"{value:.3f}"
    return str(value)


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows])


def summary(rows):
    """Per variant: its run count and mean(sample std) over its runs of every column from L_cls
    on (the mean alone for one run)."""
    measured = COLUMNS[COLUMNS.index("L_cls"):]
    lines = []
    for variant, group in itertools.groupby(sorted(rows, key=lambda r: variant_of(r["run"])),
                                            key=lambda r: variant_of(r["run"])):
        values = np.array([[r[c] for c in measured] for r in group], dtype=np.float64)
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else [None] * len(measured)
        lines.append([variant, len(values), *(cell(float(m)) + ("" if s is None or np.isnan(m) else f"({s:.3f})")
                                              for m, s in zip(values.mean(axis=0), spread))])
    return markdown(["variant", "runs", *measured], lines)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inspector_test",
                                     description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--runs", required=True,
                        help="comma-separated globs: run folders, folders of seed<N> runs, experiment folders")
    parser.add_argument("--probe_steps", type=int, default=300, help="updates of the probe Inspector")
    parser.add_argument("--eval_batches", type=int, default=50, help="held-out batches measured")
    parser.add_argument("--k", type=int, help="the probe's cells per side (default: the run's --synthmix_k)")
    parser.add_argument("--seed", type=int, default=0, help="probe weights, masks and batch order")
    parser.add_argument("--csv", help="also write the rows here")
    parser.add_argument("--blend", type=float, default=0.0,
                        help="control: share of the original image left in each translation, 0-1")
    parser.add_argument("--checkerboard", type=float, default=0.0,
                        help="control: amplitude of a checkerboard added to each translation, 0-1")
    args = parser.parse_args(argv)
    if args.probe_steps < 1 or args.eval_batches < 1:
        parser.error("--probe_steps and --eval_batches must be at least 1")
    if not (0 <= args.blend <= 1 and 0 <= args.checkerboard <= 1):
        parser.error("--blend and --checkerboard must be between 0 and 1")
    tf.get_logger().setLevel("ERROR")  # every run traces its own functions: no retracing warnings
    machine = describe_machine()
    print(f"command: python -m benchmarks.inspector_test {' '.join(argv)}")
    print(f"machine: {machine['cpu_model']}, {machine['cpus']} CPUs, TensorFlow {machine['tensorflow']}")
    try:
        runs, others = sifa_runs(args.runs)
        if not runs:
            raise DataError(f"--runs={args.runs}: no SIFA run folders")
        if others:
            print(f"left out {others} run(s) that are not SIFA runs")
        rows = [run_row(run, args.probe_steps, args.eval_batches, args.seed, args.k, args.blend, args.checkerboard)
                for run in runs]
    except (FileNotFoundError, ValueError, ToolkitError) as error:
        sys.exit(f"error: {error}")
    print(markdown(COLUMNS, [[row[c] for c in COLUMNS] for row in rows]))
    print(summary(rows))
    if args.csv:
        write_csv(args.csv, list(COLUMNS), [[row[c] for c in COLUMNS] for row in rows])
    return rows


if __name__ == "__main__":
    main()
