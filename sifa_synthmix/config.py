"""Plain configuration objects; built from flags in `flags.py`, or directly in tests.

Each default and each range rule lives here once: every flag of a field takes its default from
it (flags.py), and a rule's message names the command-line flag, so the same check serves main.py
and programmatic use.
"""
import dataclasses
import errno
import math
import os

from sifa_synthmix.errors import ToolkitError

# Config fields whose command-line flag has another name.
FLAG_NAMES = {"protocol": "mix_protocol", "k": "synthmix_k", "lam": "synthmix_lambda",
              "interpolation": "mask_interpolation", "kind": "model"}
# Fields that hold paths (or comma-separated lists of paths and globs).
DATA_PATH_FIELDS = ("data_dir", "source_train_list", "target_train_list", "target_val_list", "stats_file")
# --update_schedule: the order of a SIFA step's updates (sifa_synthmix/training/task.py).
UPDATE_SCHEDULES = ("official", "merged")
# ScheduleConfig.eval_every for --eval_every=auto: the trainer decides from the data (auto_eval_every).
EVAL_EVERY_AUTO = -1
# --eval_every=auto: about this many learning-curve evaluations per run. At the paper's scale one
# evaluation of two 128-slice volumes took 82 s against 14.4 s per step (docs/benchmarks.md), so
# ten in 20,000 steps cost under 0.3% of the training time.
AUTO_EVALUATIONS = 10


class ConfigError(ToolkitError, ValueError):
    """A setting out of range, or one a config does not know; the message names the flag."""


def flat_settings(values, prefix=""):
    """A nested settings dict (TrainConfig.to_dict(), or a config.json of either form) as
    {"model.image_size": 256, "max_steps": 20000, ...}: the settings by the names resuming
    compares, HParams show and refusals name, the same before and after the split of TrainConfig
    (the fields of its schedule and runtime go by their bare names, BARE_GROUPS)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_settings(value, "" if not prefix and key in BARE_GROUPS else f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def auto_eval_every(max_steps, save_every):
    """The steps between learning-curve evaluations under --eval_every=auto, when the data hold
    labelled target volumes: a multiple of save_every, so a checkpoint is saved at every evaluated
    step (to evaluate in full), and at most AUTO_EVALUATIONS evaluations, the one at max_steps included."""
    return save_every * math.ceil(max_steps / (AUTO_EVALUATIONS * save_every))


def _require_at_least(config, low, *names):
    for name in names:
        value = getattr(config, name)
        if not (value >= low and math.isfinite(value)):  # NaN fails every comparison
            raise ConfigError(f"--{FLAG_NAMES.get(name, name)} must be a finite number, at least {low}, got {value}")


def absolute_path_spec(spec):
    """A path, or comma-separated paths and globs, made absolute (symlinks resolved); "" stays ""."""
    items = [item.strip() for item in str(spec).split(",") if item.strip()]
    return ",".join(os.path.realpath(os.path.expanduser(item)) for item in items)


def not_a_folder_reason(path, flag):
    """Why `path`, given as `flag`, cannot be a folder: it is a file, or a symbolic link loop (in
    it or on its way); None when it is a folder or simply does not exist yet."""
    if os.path.isfile(path):
        return f"{flag} is a file, not a folder"
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return f"{flag} is a symbolic link loop"
    return None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the SIFA sub-networks. Defaults are the official ones (43,347,441 parameters)."""

    image_size: int = 256
    ngf: int = 32  # generator / decoder base width
    ndf: int = 64  # discriminator base width
    encoder_base: int = 16  # e_B base width ("fb" in the official code)
    num_classes: int = 5
    skip: bool = True  # tanh(image + conv) at the end of g_A and de_B
    # The official code's de_B residual blocks take the block function's default keep rate 0.75,
    # so their convs have always-on dropout (rate 0.25), in training and inference alike.
    decoder_dropout: float = 0.25
    # Under a tf.distribute strategy with several replicas: e_B's batch norm statistics over the
    # global batch (True, as one device with that batch) or over each replica's batch.
    sync_batch_norm: bool = True

    def __post_init__(self):
        if self.image_size < 8 or self.image_size % 8:
            raise ConfigError(f"--image_size must be a multiple of 8 (e_B pools three times), got {self.image_size}")
        _require_at_least(self, 1, "ngf", "ndf", "encoder_base", "num_classes")
        if self.encoder_base % 2:
            # res_ds shortcuts zero-pad (C_out - C_in) / 2 channels on each side.
            raise ConfigError(f"--encoder_base must be even, got {self.encoder_base}")
        if not 0.0 <= self.decoder_dropout < 1.0:
            raise ConfigError(f"--decoder_dropout must be in [0, 1), got {self.decoder_dropout}")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the training data is. `data_dir` is a prepared-data folder (see data/layout.py);
    explicit lists and intensity ranges override what is found there."""

    data_dir: str = "data/mmwhs"
    source_modality: str = "mr"
    target_modality: str = "ct"
    source_train_list: str = ""
    target_train_list: str = ""
    target_val_list: str = ""
    stats_file: str = ""
    source_range: tuple = ()
    target_range: tuple = ()
    # Largest random shift of a training slice (both domains), a fraction of its width; 0: none (SIFA's).
    random_shift: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.random_shift < 0.5:
            raise ValueError(f"--random_shift must be in [0, 0.5), got {self.random_shift}")

    def max_shift_pixels(self, image_size):
        return int(round(self.random_shift * image_size))


def require_power_of_two_cells(image_size, k):
    """SynthMix cells of image_size / k pixels: the Mixup Inspector halves each cell down to one
    value, so that ratio must be a power of two of at least 2."""
    ratio = image_size // k
    if image_size % k or ratio < 2 or ratio & (ratio - 1):
        raise ConfigError(f"--synthmix_k={k}: image_size / k must be a power of two >= 2, got {image_size} / {k}")


def _as_float(text):
    try:
        return float(text)
    except ValueError:
        return math.nan  # fails every range check


@dataclasses.dataclass(frozen=True)
class SynthMixConfig:
    """The SynthMix add-on (docs: ../shared/docs/synthmix.md). protocol "none" is plain SIFA."""

    protocol: str = "none"  # none | synthmix | mixup | cutmix
    k: int = 8
    lam: str = "uniform"  # a number in [0, 1], or "uniform" (per sample from U(0, 1))
    interpolation: str = "nearest"
    lambda_inspector: float = 0.1
    inspector_loss: str = "bce"  # bce | lsgan
    image_discriminators: bool = True  # False: the paper's "Model 0", no d_A/d_B adversarial terms
    inspector_ndf: int = 64
    # SynthMix: the Inspector's auxiliary (mean of M) term also enters the generators' L_adv^mix
    # (True), or only the Inspector's L_cls (False). The paper leaves it open.
    aux_in_adversarial: bool = True

    def __post_init__(self):
        if self.protocol not in ("none", "synthmix", "mixup", "cutmix"):
            raise ConfigError(f"unknown mix protocol {self.protocol!r}")
        if self.inspector_loss not in ("bce", "lsgan"):
            raise ConfigError(f"unknown inspector loss {self.inspector_loss!r}")
        if self.interpolation not in ("nearest", "bilinear"):
            raise ConfigError(f"unknown mask interpolation {self.interpolation!r}")
        if self.protocol == "none" and not self.image_discriminators:
            raise ConfigError("--image_discriminators=false (Model 0) needs a mixing protocol; "
                             "plain SIFA keeps d_A and d_B")
        if self.lam != "uniform" and not 0.0 <= _as_float(self.lam) <= 1.0:
            raise ConfigError(f"--synthmix_lambda must be 'uniform' or a number in [0, 1], got {self.lam!r}")
        _require_at_least(self, 1, "k", "inspector_ndf")
        _require_at_least(self, 0.0, "lambda_inspector")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long a run trains and how often it saves, reports and evaluates. None of it changes what
    is trained: a resumed run may change any of it (run_folder.RESUMABLE_SETTINGS)."""

    max_steps: int = 20000
    save_every: int = 300
    keep_checkpoints: int = 40
    log_every: int = 10
    image_every: int = 300
    # Whole-volume target Dice every N steps and at the end (0: off; EVAL_EVERY_AUTO: the trainer decides).
    eval_every: int = 0
    max_nonfinite: int = 10  # stop after this many steps in a row with a skipped (non-finite) update

    def __post_init__(self):
        _require_at_least(self, 1, "max_steps", "save_every", "keep_checkpoints", "log_every", "image_every",
                          "max_nonfinite")
        if self.eval_every != EVAL_EVERY_AUTO:
            _require_at_least(self, 0, "eval_every")


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """How a run computes: precision, compilation, determinism and devices. Of these a resumed run
    may change the distribution and the graph optimizer (run_folder.RESUMABLE_SETTINGS)."""

    precision: str = "float32"
    jit_compile: bool = False
    graph_optimizer: str = "off"  # on | off: TensorFlow's grappler on the train step (flag: auto by device)
    deterministic: bool = False
    distribution: str = "none"  # none | mirrored | multi_worker (sifa_synthmix/training/distribution.py)
    # Under several replicas: the cross-entropy's class weights and the Dice sums over the global
    # batch ("global", as one device with that batch) or over each replica's batch ("replica").
    seg_loss_batch: str = "global"

    def __post_init__(self):
        if self.distribution not in ("none", "mirrored", "multi_worker"):
            raise ConfigError(f"unknown distribution {self.distribution!r}")
        if self.seg_loss_batch not in ("global", "replica"):
            raise ConfigError(f"seg_loss_batch must be global or replica, got {self.seg_loss_batch!r}")
        if self.graph_optimizer not in ("on", "off"):
            raise ConfigError(f"--graph_optimizer must be on or off here, got {self.graph_optimizer!r}")
        if self.deterministic and self.jit_compile:
            raise ConfigError("--deterministic cannot be combined with --jit_compile: XLA has no deterministic "
                             "gradient of e_B's max pooling")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run, split as tensorflow/models splits its ExperimentConfig: what is trained
    (the model, the data, SynthMix and the task's own settings below), how long and how often
    (schedule) and how it computes (runtime). Defaults are SIFA's official schedule."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    synthmix: SynthMixConfig = SynthMixConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    kind: str = "sifa"  # sifa: SIFA (+ mixing); cyclegan: image-level adaptation; segmenter: e_B + s_B alone
    train_domain: str = "source"  # segmenter only: source ("source only") or target ("oracle")
    output_dir: str = "runs/sifa"
    batch_size: int = 8
    base_lr: float = 2e-4
    lambda_cycle: float = 10.0
    pool_size: int = 50
    seed: int = 1234
    # official: SIFA's seven updates in order, each on the weights the last one left; merged: one
    # forward pass per step feeds the generators' and the segmenter's updates (task.py).
    update_schedule: str = "official"

    def __post_init__(self):
        if self.kind == "cyclegan" and self.synthmix.protocol != "none":
            raise ConfigError("--model=cyclegan is image-level adaptation alone; it takes no --mix_protocol "
                             f"(got {self.synthmix.protocol})")
        if self.update_schedule not in UPDATE_SCHEDULES:
            raise ConfigError(f"--update_schedule must be one of {', '.join(UPDATE_SCHEDULES)}, "
                             f"got {self.update_schedule!r}")
        _require_at_least(self, 1, "batch_size", "pool_size")
        _require_at_least(self, 0.0, "lambda_cycle")
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ConfigError(f"--base_lr must be positive and finite, got {self.base_lr}")
        require_power_of_two_cells(self.model.image_size, self.synthmix.k)

    def with_absolute_paths(self):
        """The same run with its data paths and output_dir absolute, so that config.json means the
        same from any working folder."""
        data = dataclasses.replace(self.data, **{name: absolute_path_spec(getattr(self.data, name))
                                                 for name in DATA_PATH_FIELDS})
        return dataclasses.replace(self, data=data, output_dir=absolute_path_spec(self.output_dir))

    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values):
        """The config of a `to_dict()` (config.json), also one written before the split (its
        schedule and runtime fields at the top); ConfigError naming a setting it does not know."""
        values = _known_settings(cls, _grouped(values))
        for key, kind in SETTING_GROUPS.items():
            if key in values:
                fields = _known_settings(kind, values[key], f"{key}.")
                values[key] = kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
        return cls(**values)


# The parts of a TrainConfig, by field name.
SETTING_GROUPS = {"model": ModelConfig, "data": DataConfig, "synthmix": SynthMixConfig, "schedule": ScheduleConfig,
                  "runtime": RuntimeConfig}
# Parts whose fields config.json held at its top level before the split (issue 35): their setting
# names stay bare (flat_settings), and from_dict groups them when it finds them at the top.
BARE_GROUPS = ("schedule", "runtime")


def _grouped(values):
    """A config.json dict with the fields of BARE_GROUPS that stand at its top level (as written
    before the split) moved into their part; anything else as it is."""
    if not isinstance(values, dict):
        return values
    values = dict(values)
    for group in BARE_GROUPS:
        names = [field.name for field in dataclasses.fields(SETTING_GROUPS[group]) if field.name in values]
        if names and isinstance(values.get(group, {}), dict):
            values[group] = {**{name: values.pop(name) for name in names}, **values.get(group, {})}
    return values


def _known_settings(kind, values, prefix=""):
    """`values` as a dict for the dataclass `kind`; ConfigError for anything else or an unknown key."""
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'the config'} must be a JSON object, got {type(values).__name__}")
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(kind)})
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(prefix + key for key in unknown)}")
    return dict(values)
