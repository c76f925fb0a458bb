"""Every command-line flag of main.py, defined once, and their translation into a TrainConfig.

A flag that sets a config field takes its default from the field (config.py), so each default is
written once; --precision, --graph_optimizer and --eval_every default to "auto", which the field
cannot hold: the flag resolves it (resolve_precision, resolve_graph_optimizer, the trainer)."""
import dataclasses
import json
import pathlib

from absl import flags

from sifa_synthmix import cpu_features
from sifa_synthmix.config import (AUTO_EVALUATIONS, EVAL_EVERY_AUTO, FLAG_NAMES, UPDATE_SCHEDULES, ConfigError,
                                  DataConfig, ModelConfig, RuntimeConfig, ScheduleConfig, SynthMixConfig,
                                  TrainConfig)

FLAGS = flags.FLAGS
MODES = ("summary", "train", "evaluate", "compare", "experiment", "import_official", "predict",
         "export")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
GRAPH_OPTIMIZER_SETTINGS = ("auto", "on", "off")
# --precision=auto on a CPU with bfloat16 instructions: mixed_bfloat16 from this slice size up.
# benchmarks.precision_choice measured it faster than float32 at 64 px (demo widths), 128 px and
# 256 px (official widths) on an Intel Xeon with AMX; smaller sizes were not measured.
BFLOAT16_MIN_IMAGE_SIZE = 64
# --graph_optimizer=auto on a CPU: on from this slice size up. benchmarks.precision_choice measured
# it 1.9% faster per mixed_bfloat16 step and 0.5% per float32 step at 256 px (official widths),
# where it merges batch norms with their ReLUs; at 64 and 128 px (demo widths) within the rounds'
# spread, and it adds 4-5 s to the first call at every size.
GRAPH_OPTIMIZER_MIN_IMAGE_SIZE = 256
# The groups of --help, in its order (each flag's group is set where it is defined).
GROUPS = ("command", "data", "model", "training", "evaluation", "prediction", "distribution", "SynthMix")


def define_flags():
    """Defines the flags (once per process; later calls do nothing), each in its group of
    `--help` (absl lists flags by the module that defines them; the group takes its place)."""
    if "mode" in FLAGS:
        return
    group = {"module_name": "command"}
    flags.DEFINE_enum("mode", "train", MODES,
                      "summary: parameter counts as JSON; train: train a run; evaluate: score a run's "
                      "target test volumes; compare: table and figures of evaluated runs; experiment: "
                      "train, evaluate and compare --experiment_variants; import_official: turn an official SIFA "
                      "TF1 checkpoint (--official_checkpoint) into a run folder (--output_dir); predict: label "
                      "maps of new scans (--predict_input) with the run in --output_dir; export: the run's "
                      "target segmenter as a SavedModel (--export_dir).", **group)
    flags.DEFINE_list("experiment_variants", ["source_only", "sifa", "synthmix", "oracle"],
                      "Variants of --mode=experiment: source_only, oracle, cyclegan, sifa, synthmix, mixup, "
                      "cutmix, model0.", **group)
    flags.DEFINE_list("seeds", [],
                      "--mode=experiment: train every variant once per seed, in OUTPUT_DIR/<variant>/seed<N>, "
                      "and report means and spreads over seeds (unset: one run per variant with --seed, in "
                      "OUTPUT_DIR/<variant>). Runs already finished and evaluated are reused.", **group)
    flags.DEFINE_string("official_checkpoint", "",
                        "--mode=import_official: an official SIFA TF1 checkpoint prefix (e.g. DIR/sifa-19999) "
                        "or a folder holding a `checkpoint` file.", **group)
    flags.DEFINE_bool("overwrite", False, "Start afresh in an output_dir that holds a run with other flags.", **group)
    group = {"module_name": "data"}
    flags.DEFINE_string("data_dir", DataConfig.data_dir,
                        "Prepared-data folder (data_prep output or the phantom).", **group)
    flags.DEFINE_enum("source_modality", DataConfig.source_modality, ["mr", "ct"], "Labelled domain A.", **group)
    flags.DEFINE_enum("target_modality", DataConfig.target_modality, ["mr", "ct"], "Unlabelled domain B.", **group)
    flags.DEFINE_string("source_train_list", DataConfig.source_train_list,
                        "Overrides DATA_DIR/datalists: a datalist, glob or .tfrecords.", **group)
    flags.DEFINE_string("target_train_list", DataConfig.target_train_list,
                        "Overrides DATA_DIR/datalists for the target.", **group)
    flags.DEFINE_string("target_val_list", DataConfig.target_val_list,
                        "Target validation records (monitoring only).", **group)
    flags.DEFINE_string("stats_file", DataConfig.stats_file, "Overrides DATA_DIR/stats.json.", **group)
    flags.DEFINE_list("source_range", list(DataConfig.source_range),
                      "Explicit min,max of the source intensities (maps to [-1, 1]).", **group)
    flags.DEFINE_list("target_range", list(DataConfig.target_range),
                      "Explicit min,max of the target intensities.", **group)
    flags.DEFINE_float("random_shift", DataConfig.random_shift,
                       "Largest random shift of each training slice (both domains, image and label), as a "
                       "fraction of the image width; pixels shifted in take the slice's minimum. 0: none, as "
                       "SIFA. Removes the position prior of a fixed framing (docs/own_data.md).", **group)
    flags.DEFINE_bool("prepare_phantom", False,
                      "Generate the embedded phantom into --data_dir first if it holds no dataset.json.", **group)
    flags.DEFINE_integer("phantom_seed", 0, "Seed of the generated phantom.", lower_bound=0, **group)
    flags.DEFINE_enum("phantom", "scanner", ["scanner", "centred"],
                      "--prepare_phantom: scanner = raw scans that look like scanner output (DATA_DIR-raw/), "
                      "prepared through data_prep.folder as a user's scans are; centred = the earlier phantom, "
                      "centred hearts in a fixed field of view, written prepared.", **group)
    group = {"module_name": "model"}
    flags.DEFINE_enum("model", TrainConfig.kind, ["sifa", "cyclegan", "segmenter"],
                      "sifa: SIFA (+ --mix_protocol); cyclegan: the CycleGAN baseline, image-level adaptation "
                      "alone (SIFA's translation, e_B + s_B trained on g_A(A)); segmenter: e_B + s_B alone with "
                      "SIFA's segmentation loss, the 'source only' / 'oracle' reference rows.", **group)
    flags.DEFINE_enum("train_domain", TrainConfig.train_domain, ["source", "target"],
                      "Segmenter only: train on source labels (source only) or target labels (oracle).", **group)
    flags.DEFINE_integer("image_size", ModelConfig.image_size, "Slice height and width.", **group)
    flags.DEFINE_integer("ngf", ModelConfig.ngf, "Generator/decoder base width.", **group)
    flags.DEFINE_integer("ndf", ModelConfig.ndf, "Discriminator base width.", **group)
    flags.DEFINE_integer("encoder_base", ModelConfig.encoder_base, "e_B base width (even).", **group)
    flags.DEFINE_integer("num_classes", ModelConfig.num_classes, "Classes including background.", **group)
    flags.DEFINE_bool("skip", ModelConfig.skip, "Skip connection tanh(image + conv) in g_A and de_B.", **group)
    flags.DEFINE_float("decoder_dropout", ModelConfig.decoder_dropout,
                       "Always-on dropout rate after the convs of de_B's residual blocks, in training and "
                       "inference alike, as the official TF1 graph (its blocks fall back to keep_rate=0.75); "
                       "0 switches it off.", **group)
    group = {"module_name": "training"}
    flags.DEFINE_string("output_dir", TrainConfig.output_dir, "Run folder: checkpoints/, tb/, config.json.", **group)
    flags.DEFINE_integer("max_steps", ScheduleConfig.max_steps, "Training steps.", **group)
    flags.DEFINE_integer("batch_size", TrainConfig.batch_size, "Slices per domain per step.", **group)
    flags.DEFINE_float("base_lr", TrainConfig.base_lr, "Adam learning rate of every update.", **group)
    flags.DEFINE_float("lambda_cycle", TrainConfig.lambda_cycle, "Weight of each cycle-consistency term.", **group)
    flags.DEFINE_integer("pool_size", TrainConfig.pool_size, "Batches held by each fake-image pool.", **group)
    flags.DEFINE_integer("seed", TrainConfig.seed, "Seed of weights, data order, pools and masks.", **group)
    flags.DEFINE_integer("save_every", ScheduleConfig.save_every, "Checkpoint every N steps (and at the end).", **group)
    flags.DEFINE_integer("keep_checkpoints", ScheduleConfig.keep_checkpoints,
                         "Checkpoints kept (official: 40).", **group)
    flags.DEFINE_integer("log_every", ScheduleConfig.log_every,
                         "Scalars, batch Dice and the progress line every N steps.", **group)
    flags.DEFINE_integer("image_every", ScheduleConfig.image_every, "TensorBoard images every N steps.", **group)
    flags.DEFINE_enum("precision", "auto", PRECISIONS,
                      "auto: mixed_float16 when a GPU is present; on a CPU with bfloat16 instructions "
                      f"(AVX512_BF16, AMX) mixed_bfloat16 from {BFLOAT16_MIN_IMAGE_SIZE} px up; else float32.",
                      **group)
    flags.DEFINE_enum("update_schedule", TrainConfig.update_schedule, list(UPDATE_SCHEDULES),
                      "official: SIFA's seven updates per step in the official order, each on the weights the "
                      "previous one left; merged: one forward pass per step feeds the updates of the generators "
                      "and of the segmenter, then the discriminators train on its detached outputs, as "
                      "SIFA-pytorch does (same losses; faster: docs/benchmarks.md). A run resumes only with "
                      "the schedule it started with.", **group)
    flags.DEFINE_bool("jit_compile", RuntimeConfig.jit_compile, "Compile the train step with XLA.", **group)
    flags.DEFINE_enum("graph_optimizer", "auto", GRAPH_OPTIMIZER_SETTINGS,
                      "TensorFlow's graph optimizer (grappler) on the train step. auto: on with a GPU (its "
                      "layout and fusion passes suit cuDNN); on a CPU on from "
                      f"{GRAPH_OPTIMIZER_MIN_IMAGE_SIZE} px up, where its fused kernels save step time, "
                      "off below, where they save none measurable and the first call takes 4-5 s longer.",
                      **group)
    flags.DEFINE_bool("deterministic", RuntimeConfig.deterministic,
                      "Seeded, op-deterministic run whose input pipeline position is checkpointed too, "
                      "so a resumed run continues exactly (the shuffle buffer goes into checkpoints).", **group)
    flags.DEFINE_integer("max_nonfinite", ScheduleConfig.max_nonfinite,
                         "A non-finite loss or gradient skips that update; after this many steps in a row "
                         "with a skipped update the run stops, keeping its last good checkpoint.", **group)
    group = {"module_name": "evaluation"}
    flags.DEFINE_string("checkpoint", "", "Evaluate this checkpoint instead of the run's latest.", **group)
    flags.DEFINE_enum("flip_test_volumes", "auto", ["auto", "true", "false"],
                      "Flip test volumes on axes 0 and 1 before inference (auto: from dataset.json).", **group)
    flags.DEFINE_enum("assd_unit", "voxel", ["voxel", "mm"],
                      "ASSD in voxels (as the paper) or in mm (needs the spacing in dataset.json).", **group)
    flags.DEFINE_integer("eval_batch_size", 16, "Slices per inference batch.", lower_bound=1, **group)
    flags.DEFINE_string("eval_every", "auto",
                        "During training, every N steps and at the end: Dice and ASSD of e_B + s_B on whole "
                        "target validation volumes (else the labelled test volumes) into TensorBoard's eval/ "
                        "and RUN/eval_curve.csv; 0: off; auto: on when the data hold labelled target volumes, "
                        f"every save_every x ceil(max_steps / ({AUTO_EVALUATIONS} x save_every)) steps (at "
                        f"checkpoints; at most {AUTO_EVALUATIONS} evaluations, the one at the end included), else "
                        "off.", **group)
    flags.register_validator("eval_every", _is_eval_every, "--eval_every must be 'auto' or a whole number >= 0")
    flags.DEFINE_bool("write_images", False,
                      "--mode=evaluate: also write each test image and its ground truth as NIfTI "
                      "(eval/images/, eval/ground_truth/), in the predictions' geometry.", **group)
    flags.DEFINE_list("compare_runs", [],
                      "What to compare, the first being the reference: run folders, folders of seed<N> runs "
                      "(one method over seeds) or experiment folders (all their variants).", **group)
    group = {"module_name": "prediction"}
    flags.DEFINE_list("predict_input", [],
                      "--mode=predict: the scans to segment, comma-separated: NIfTI, NRRD or MHA files, globs, "
                      "folders of such files, or folders holding one DICOM series each.", **group)
    flags.DEFINE_string("predictions_dir", "",
                        "--mode=predict: folder to write NAME.nii.gz (labels on each scan's own grid) and the "
                        "colour tables to.", **group)
    flags.DEFINE_bool("save_probabilities", False,
                      "--mode=predict: also write NAME.npz with the per-class softmax ('probabilities', class "
                      "first), as nnU-Net does.", **group)
    flags.DEFINE_enum("predict_slice_axis", "recorded", ["recorded", "axial", "coronal", "sagittal"],
                      "--mode=predict: the slice axis to cut scans along (recorded: the run's data recipe, "
                      "axial when it recorded none).", **group)
    flags.DEFINE_string("predict_spacing", "recorded",
                        "--mode=predict: in-plane spacing in mm to resample scans to, 'native' (none) or "
                        "'recorded' (the run's data recipe; native when it recorded none). The intensity "
                        "range is --target_range when given, else the run's.", **group)
    flags.DEFINE_string("export_dir", "",
                        "--mode=export: absent or empty folder to write the SavedModel of the run's target "
                        "segmenter to.", **group)
    flags.register_validator("predict_spacing", _is_spacing,
                             "--predict_spacing must be 'recorded', 'native' or a positive number of mm")
    group = {"module_name": "distribution"}
    flags.DEFINE_enum("distribution", RuntimeConfig.distribution, ["none", "mirrored", "multi_worker"],
                      "none: one device; mirrored: MirroredStrategy over this machine's GPUs; multi_worker: "
                      "MultiWorkerMirroredStrategy over the machines in TF_CONFIG. --batch_size is the "
                      "global batch, split over the replicas.", **group)
    flags.DEFINE_bool("sync_batch_norm", ModelConfig.sync_batch_norm,
                      "Under several replicas: e_B's batch norm uses the global batch's statistics "
                      "(false: each replica's own).", **group)
    flags.DEFINE_enum("seg_loss_batch", RuntimeConfig.seg_loss_batch, ["global", "replica"],
                      "Under several replicas: the cross-entropy's class weights and the Dice sums are "
                      "taken over the global batch or over each replica's batch.", **group)
    group = {"module_name": "SynthMix"}
    flags.DEFINE_enum("mix_protocol", SynthMixConfig.protocol, ["none", "synthmix", "mixup", "cutmix"],
                      "none: plain SIFA; synthmix: the paper's method; mixup/cutmix: its baselines.", **group)
    flags.DEFINE_integer("synthmix_k", SynthMixConfig.k, "SynthMix mask resolution k (divides image_size).", **group)
    flags.DEFINE_string("synthmix_lambda", SynthMixConfig.lam,
                        "Share of target cells: a number, or 'uniform'.", **group)
    flags.DEFINE_enum("mask_interpolation", SynthMixConfig.interpolation, ["nearest", "bilinear"],
                      "Mask upsampling.", **group)
    flags.DEFINE_float("lambda_inspector", SynthMixConfig.lambda_inspector,
                       "lambda_I, weight of L_adv^mix and L_cls.", **group)
    flags.DEFINE_enum("inspector_loss", SynthMixConfig.inspector_loss, ["bce", "lsgan"],
                      "Loss of the Mixup Inspector.", **group)
    flags.DEFINE_bool("image_discriminators", SynthMixConfig.image_discriminators,
                      "False: the paper's 'Model 0', no d_A/d_B terms; the Inspector alone judges translations.",
                      **group)
    flags.DEFINE_integer("inspector_ndf", SynthMixConfig.inspector_ndf,
                         "Inspector base width: the Mixup Inspector's first layer; the Mixup/CutMix "
                         "PreAct-ResNet-18's first stage (64 there: widths 64-128-256-512).", **group)
    flags.DEFINE_bool("aux_in_adversarial", SynthMixConfig.aux_in_adversarial,
                      "SynthMix: the Mixup Inspector's auxiliary term (its score against mean(M)) also "
                      "enters the generators' L_adv^mix; false: it trains the Inspector only (L_cls). "
                      "The paper does not say which.", **group)


def _is_spacing(value):
    if value in ("recorded", "native"):
        return True
    try:
        return float(value) > 0
    except ValueError:
        return False


def _is_eval_every(value):
    return value == "auto" or (value.isdigit() and value.isascii())


def _eval_every(value):
    return EVAL_EVERY_AUTO if value == "auto" else int(value)


def grouped_help(full=False):
    """The project's flags by group, formatted by absl; `full` adds absl's own flags."""
    modules = list(GROUPS)
    if full:
        modules += [module for module in FLAGS.flags_by_module_dict() if module not in GROUPS]
    return "\n".join(FLAGS.module_help(module) for module in modules)


def _range(values, name):
    if not values:
        return ()
    if len(values) != 2:
        raise ConfigError(f"--{name} takes min,max, got {','.join(values)}")
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise ConfigError(f"--{name}={','.join(values)}: min and max must be numbers") from None


def _has_gpu():
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_precision(precision, image_size, has_gpu=None, bfloat16_flags=None):
    """The precision --precision=auto stands for on this machine (`has_gpu`, `bfloat16_flags`:
    what `_has_gpu` and cpu_features.native_bfloat16 find, unless given)."""
    if precision != "auto":
        return precision
    if _has_gpu() if has_gpu is None else has_gpu:
        return "mixed_float16"
    native = cpu_features.native_bfloat16() if bfloat16_flags is None else bfloat16_flags
    return "mixed_bfloat16" if native and image_size >= BFLOAT16_MIN_IMAGE_SIZE else "float32"


def resolve_graph_optimizer(setting, image_size, has_gpu=None):
    """The setting --graph_optimizer=auto stands for on this machine (`has_gpu`: what `_has_gpu`
    finds, unless given)."""
    if setting != "auto":
        return setting
    if _has_gpu() if has_gpu is None else has_gpu:
        return "on"
    return "on" if image_size >= GRAPH_OPTIMIZER_MIN_IMAGE_SIZE else "off"


# Flags whose value the field takes converted: a function of the parsed flags.
_CONVERTED = {
    "source_range": lambda values: _range(values.source_range, "source_range"),
    "target_range": lambda values: _range(values.target_range, "target_range"),
    "eval_every": lambda values: _eval_every(values.eval_every),
    "precision": lambda values: resolve_precision(values.precision, values.image_size),
    "graph_optimizer": lambda values: resolve_graph_optimizer(values.graph_optimizer, values.image_size),
}


def _from_flags(kind, values):
    """The config dataclass `kind` with every field from the flag of its name (FLAG_NAMES where
    they differ; _CONVERTED where the value changes), its parts likewise."""
    settings = {}
    for field in dataclasses.fields(kind):
        if dataclasses.is_dataclass(field.default):
            settings[field.name] = _from_flags(type(field.default), values)
            continue
        name = FLAG_NAMES.get(field.name, field.name)
        settings[field.name] = _CONVERTED[name](values) if name in _CONVERTED else getattr(values, name)
    return kind(**settings)


def config_from_flags(values=FLAGS):
    """A TrainConfig from parsed flags; TrainConfig and its parts check the ranges (ConfigError)."""
    return _from_flags(TrainConfig, values)


def _with_given_flags(saved, typed, values):
    """`saved` (a config or one of its parts) with each field whose flag was given (on the
    command line or in a flagfile) taken from `typed`."""
    changes = {}
    for field in dataclasses.fields(saved):
        value = getattr(typed, field.name)
        if dataclasses.is_dataclass(value):
            changes[field.name] = _with_given_flags(getattr(saved, field.name), value, values)
            continue
        name = FLAG_NAMES.get(field.name, field.name)
        if name in values and values[name].present:
            changes[field.name] = value
    return dataclasses.replace(saved, **changes)


def train_config(values=FLAGS):
    """The TrainConfig of --mode=train. In an output_dir that holds a run, and without
    --overwrite, that run's config.json stands for the defaults, so that continuing it takes
    only the flags that change (`--output_dir=RUN --max_steps=N`), as nnU-Net's --c continues; the
    trainer refuses given flags that change what is trained (RESUMABLE_SETTINGS may change)."""
    from sifa_synthmix.runs.run_folder import CONFIG_FILE  # pylint: disable=import-outside-toplevel

    typed = config_from_flags(values)
    if values.overwrite:
        return typed
    try:
        saved = TrainConfig.from_dict(json.loads((pathlib.Path(values.output_dir) / CONFIG_FILE).read_text("utf-8")))
    except (OSError, ValueError, TypeError):
        return typed  # no run there, or one the trainer names as unreadable
    return _with_given_flags(saved, typed, values)
