"""Official SIFA TF1 checkpoints: their variables mapped onto the nine networks and the two
optimizers, and `--mode=import_official`, which turns one into a run folder that training
(`--mode=train` resumes it) and evaluation use unchanged.

Official names follow the TF1 variable scopes of the official model.py / layers.py:

    Model/<scope>/<block>/Conv/{weights,biases}                conv (tf.contrib.layers.conv2d)
    Model/<scope>/<block>/Conv2d_transpose/{weights,biases}    transposed conv
    Model/e_B/d1/c1/{weights,biases}                           dilated conv (dilate_conv2d)
    Model/<scope>/<block>/instance_norm/InstanceNorm/{gamma,beta}
    Model/e_B/<block>/batch_norm/BatchNorm/{gamma,beta,moving_mean,moving_variance}
    <variable>/Adam, <variable>/Adam_1                         Adam's first and second moments
    beta1_power, beta2_power (optimizer_gan), beta1_power_1, beta2_power_1 (optimizer_seg)

Keras layer names are the block paths with "/" replaced by "_" (networks.py), so the mapping
is computed from the layers, not listed.
"""
import json
import math
import pathlib
import re
import typing

import keras
import numpy as np
import tensorflow as tf

from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.files import atomic_write_text, staged_folder
from sifa_synthmix.models.layers import AlwaysOnDropout, FusedBatchNorm, InstanceNorm, UnaddedBiasConv2D
from sifa_synthmix.models.networks import SIFANetworks
from sifa_synthmix.runs.run_folder import (CHECKPOINT_DIR, IMPORT_RECORD, checkpoint_manager, run_checkpoint,
                                           step_variable, write_run_config)
from sifa_synthmix.tensorflow_paths import for_tensorflow
from sifa_synthmix.training.task import UPDATE_SCOPES
from sifa_synthmix.training.task_factory import build_task

MOMENTS = ("Adam", "Adam_1")  # TF1 Adam's slot names: first and second moment
_SLOT_SUFFIXES = tuple(f"/{moment}" for moment in MOMENTS)
# Bias-correction powers of the official optimizers; optimizer_gan is created first.
BETA_POWERS = {"gan": ("beta1_power", "beta2_power"), "seg": ("beta1_power_1", "beta2_power_1")}
# The size flags a checkpoint reveals: flag -> official variable whose last axis is its value.
SIZE_FLAGS = {"ngf": "Model/g_A/c1/Conv/weights", "ndf": "Model/d_B/c1/Conv/weights",
              "encoder_base": "Model/e_B/c1/Conv/weights", "num_classes": "Model/s_B/c8/Conv/weights"}
_CONV_WEIGHTS = {"kernel": "weights", "bias": "biases"}
# (Keras layer class, suffix of its layer name, official scope inside the block, weight names);
# UnaddedBiasConv2D comes before Conv2D, of which it is a subclass.
_LAYER_KINDS = (
    (InstanceNorm, "_instance_norm", "instance_norm/InstanceNorm/", {}),
    (FusedBatchNorm, "_batch_norm", "batch_norm/BatchNorm/", {}),
    (keras.layers.BatchNormalization, "_batch_norm", "batch_norm/BatchNorm/", {}),
    (keras.layers.Conv2DTranspose, "", "Conv2d_transpose/", _CONV_WEIGHTS),
    (UnaddedBiasConv2D, "", "", _CONV_WEIGHTS),
    (keras.layers.Conv2D, "", "Conv/", _CONV_WEIGHTS),
)
_LISTED = 10  # names an error line lists before "and N more"


class OfficialCheckpointError(ToolkitError):
    """An official checkpoint that cannot be imported exactly; the message names the file."""


class MappedVariable(typing.NamedTuple):
    """A variable of one of the nine networks and its official name."""

    scope: str
    name: str  # the official TF1 name
    variable: keras.Variable
    unadded_bias: bool  # a dilated conv's bias, which the official graph never adds


def official_name(scope, layer, variable):
    """The TF1 name of a Keras variable of network `scope`, e.g. Model/e_B/r1/c1/Conv/weights."""
    for kind, suffix, op_scope, names in _LAYER_KINDS:
        if isinstance(layer, kind):
            block = layer.name.removesuffix(suffix).replace("_", "/")
            return f"Model/{scope}/{block}/{op_scope}{names.get(variable.name, variable.name)}"
    raise TypeError(f"{scope}/{layer.name}: no official counterpart for a {type(layer).__name__} layer")


def network_variables(networks):
    """Every variable of the nine networks (batch-norm moving statistics included) with its TF1 name;
    de_B's dropout random streams, which TF1 kept outside the checkpoint, are left as they are."""
    return [MappedVariable(scope, official_name(scope, layer, v), v,
                           isinstance(layer, UnaddedBiasConv2D) and v is layer.bias)
            for scope in SIFANetworks.SCOPES
            for layer in getattr(networks, scope).layers if not isinstance(layer, AlwaysOnDropout)
            for v in layer.weights]


def _listing(names):
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def _checkpoint_prefix(path):
    """The checkpoint prefix of PATH: a prefix, one of its files, or a folder with a `checkpoint` file."""
    path = pathlib.Path(path)
    if path.is_dir():
        state = tf.train.get_checkpoint_state(str(path))
        if state is None:
            raise OfficialCheckpointError(f"{path}: no `checkpoint` file in this folder; pass the checkpoint "
                                          "prefix instead (e.g. FOLDER/sifa-19999)")
        # The file may hold the paths of the machine that trained it: look beside it.
        return str(path / pathlib.Path(state.model_checkpoint_path).name)
    return re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", str(path))


class OfficialCheckpoint:
    """A TF1 checkpoint written by the official SIFA code: prefix, shapes, tensors, file-name step."""

    def __init__(self, path):
        self.prefix = _checkpoint_prefix(path)
        if not pathlib.Path(self.prefix + ".index").is_file():
            raise OfficialCheckpointError(f"{path}: not a TF1 checkpoint (no {self.prefix}.index)")
        try:
            self._reader = tf.train.load_checkpoint(for_tensorflow(self.prefix))
        except (tf.errors.OpError, ValueError) as error:
            detail = str(error).strip().splitlines()[0]
            raise OfficialCheckpointError(f"{self.prefix}: not a readable TF1 checkpoint ({detail})") from None
        self.shapes = self._reader.get_variable_to_shape_map()
        if "_CHECKPOINTABLE_OBJECT_GRAPH" in self.shapes:
            raise OfficialCheckpointError(f"{self.prefix}: a TF2 object-based checkpoint (like a run's checkpoints/"
                                          "ckpt-N), not a TF1 one; --mode=train and evaluate read those directly")
        if not self.model_variables():
            raise OfficialCheckpointError(f"{self.prefix}: a TF1 checkpoint without official SIFA variables "
                                          "(Model/...)")
        match = re.search(r"-(\d+)$", self.prefix)
        self.file_step = int(match.group(1)) if match else None  # saver.save(..., global_step=N) -> PREFIX-N

    def model_variables(self):
        """Names of the official network variables (Adam slots left out)."""
        return sorted(n for n in self.shapes if n.startswith("Model/") and not n.endswith(_SLOT_SUFFIXES))

    def tensor(self, name):
        return self._reader.get_tensor(name)


def _shape_hint(checkpoint, cfg):
    """Which size flags the checkpoint was built with, where they differ from `cfg` (a ModelConfig)."""
    hints = []
    for flag, name in SIZE_FLAGS.items():
        shape = checkpoint.shapes.get(name)
        if shape and shape[-1] != getattr(cfg, flag):
            hints.append(f"--{flag}={shape[-1]} expected from {name} {shape}")
    return "; ".join(hints) or "no size flag explains it, the checkpoint is not of this architecture"


def check_network_variables(checkpoint, mapped, cfg):
    """Raises unless the checkpoint fills every mapped variable exactly and holds no other network
    variable; `cfg` is the ModelConfig the networks were built with."""
    names = {m.name for m in mapped}
    missing = [m.name for m in mapped if m.name not in checkpoint.shapes]
    unused = [name for name in checkpoint.model_variables() if name not in names]
    if missing or unused:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing from the checkpoint (Keras variables left unfilled): "
                         f"{_listing(missing)}")
        if unused:
            parts.append(f"{len(unused)} official variables with no place in these networks: {_listing(unused)}")
        raise OfficialCheckpointError(f"{checkpoint.prefix}: does not match the SIFA networks: {'; '.join(parts)}")
    mismatched = [(m.name, checkpoint.shapes[m.name], list(m.variable.shape)) for m in mapped
                  if checkpoint.shapes[m.name] != list(m.variable.shape)]
    if mismatched:
        name, theirs, ours = mismatched[0]
        more = f" (and {len(mismatched) - 1} more variables)" if len(mismatched) > 1 else ""
        raise OfficialCheckpointError(f"{checkpoint.prefix}: {name} is {theirs} in the checkpoint but {ours} in these "
                                      f"networks{more}: {_shape_hint(checkpoint, cfg)}")
    for m in mapped:
        if m.unadded_bias and np.any(checkpoint.tensor(m.name) != 0):
            raise OfficialCheckpointError(
                f"{checkpoint.prefix}: {m.name} is not zero (max |b| {np.abs(checkpoint.tensor(m.name)).max():.3g}); "
                "the official graph never adds a dilated conv's bias, so it cannot be imported exactly")


def load_networks(checkpoint, networks):
    """Checks, then fills the nine networks (and e_B's moving statistics) from the checkpoint."""
    mapped = network_variables(networks)
    check_network_variables(checkpoint, mapped, networks.config)
    for m in mapped:
        m.variable.assign(checkpoint.tensor(m.name))
    return mapped


def _adam(task, key):
    """The task's Adam for "gan" or "seg", reached through any loss-scale wrapper."""
    optimizer = task.seg_optimizer if key == "seg" else task.gan_optimizer
    return getattr(optimizer, "inner_optimizer", optimizer)


def _optimizer_key(scope):
    return "seg" if scope in UPDATE_SCOPES["seg"] else "gan"


def _expected_optimizer_state(mapped):
    """Names of the TF1 optimizer state the networks need. A dilated conv's bias may lack its
    slots: TF1 makes them only for variables with a gradient, and its moments stay 0 anyway."""
    slots = [f"{m.name}/{moment}" for m in mapped if m.variable.trainable and not m.unadded_bias for moment in MOMENTS]
    return slots + [name for powers in BETA_POWERS.values() for name in powers]


def check_optimizer_state(checkpoint, mapped):
    """True when the checkpoint holds the two optimizers' state, False when it holds none of it;
    raises when it holds part of it."""
    expected = _expected_optimizer_state(mapped)
    if not any(name in checkpoint.shapes for name in expected):
        return False
    missing = [name for name in expected if name not in checkpoint.shapes]
    if missing:
        raise OfficialCheckpointError(f"{checkpoint.prefix}: incomplete optimizer state, {len(missing)} missing: "
                                      f"{_listing(missing)}")
    return True


def updates_from_powers(checkpoint, key, adam):
    """The updates TF1 Adam had applied: it starts each power at beta and multiplies it by beta
    per update, so power = beta^(n + 1). None once both float32 powers have underflowed."""
    counts = {}
    for name, beta in zip(BETA_POWERS[key], (adam.beta_1, adam.beta_2)):
        power = float(checkpoint.tensor(name))
        if power >= np.finfo(np.float32).tiny:
            counts[name] = round(math.log(power) / math.log(np.float32(beta))) - 1
    if len(set(counts.values())) > 1:
        raise OfficialCheckpointError(f"{checkpoint.prefix}: {' and '.join(f'{k} ({v})' for k, v in counts.items())} "
                                      f"imply different update counts: not Adam with beta1 {adam.beta_1}, beta2 "
                                      f"{adam.beta_2} as SIFA's {key} optimizer")
    return next(iter(counts.values()), None)


def adam_moments(adam, variable):
    """A built Keras Adam's first and second moment of `variable`, where Adam.update_step reads
    them (Keras has no public accessor)."""
    index = adam._get_variable_index(variable)  # pylint: disable=protected-access
    return adam._momentums[index], adam._velocities[index]  # pylint: disable=protected-access


def load_optimizers(checkpoint, mapped, task, seg_updates, gan_updates):
    """Fills both optimizers' moments from the TF1 slots and sets their iteration counts."""
    for m in (m for m in mapped if m.variable.trainable):
        for moment, slot in zip(adam_moments(_adam(task, _optimizer_key(m.scope)), m.variable), MOMENTS):
            name = f"{m.name}/{slot}"
            moment.assign(checkpoint.tensor(name) if name in checkpoint.shapes
                          else np.zeros(m.variable.shape, np.float32))
    # Keras uses iterations + 1 as Adam's t, as TF1 uses beta^(n + 1) after n updates.
    _adam(task, "seg").iterations.assign(seg_updates)
    _adam(task, "gan").iterations.assign(gan_updates)


def _check_config(cfg):
    if cfg.kind != "sifa" or cfg.synthmix.protocol != "none":
        raise OfficialCheckpointError(f"--mode=import_official imports plain SIFA (--model=sifa --mix_protocol=none), "
                                      f"not --model={cfg.kind} --mix_protocol={cfg.synthmix.protocol}")
    if cfg.runtime.deterministic:
        raise OfficialCheckpointError("--deterministic: an official checkpoint holds no input-pipeline position; "
                                      "import without it")
    out = pathlib.Path(cfg.output_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OfficialCheckpointError(f"{out}: not empty; --mode=import_official writes a new run folder")


def steps_and_updates(checkpoint, task):
    """(run step, seg updates, gan updates, notes) of a checkpoint with optimizer state.

    The run continues from the file-name step; each optimizer from the count its beta powers
    imply. A power that has underflowed (the GAN optimizer's beta2 after ~14,500 official
    steps, 87,000 updates) no longer tells the count; but beyond 17,321 updates Adam's bias
    correction is exactly 1 in float32, so any count as large serves: the seg count (or the
    step) times the GAN updates per step.
    """
    seg_updates = updates_from_powers(checkpoint, "seg", _adam(task, "seg"))
    gan_updates = updates_from_powers(checkpoint, "gan", _adam(task, "gan"))
    step = checkpoint.file_step
    notes = []
    if step is None:
        step = seg_updates or 0
    elif seg_updates is not None and seg_updates != step:
        official = (" (the official main.py names a checkpoint after its 0-based step index)"
                    if seg_updates == step + 1 else "")
        notes.append(f"note: the file name says step {step} but the seg optimizer's beta powers say {seg_updates} "
                     f"updates{official}; the run continues from step {step}, each optimizer from its own count")
    if seg_updates is None:
        seg_updates = step
    if gan_updates is None:
        gan_updates = seg_updates * sum(1 for update in task.update_order if update != "seg")
    return step, seg_updates, gan_updates, notes


def import_official(cfg, path, log=print):
    """Imports the official checkpoint at PATH into the run folder cfg.output_dir.

    Everything is checked before anything is written; the folder (config.json, checkpoints/
    with the task's full checkpoint at the TF1 global step, official_import.json) appears
    whole or not at all. Returns the import record.
    """
    _check_config(cfg)
    checkpoint = OfficialCheckpoint(path)
    task = build_task(cfg)
    mapped = load_networks(checkpoint, task.networks)
    has_optimizer_state = check_optimizer_state(checkpoint, mapped)
    if has_optimizer_state:
        step, seg_updates, gan_updates, notes = steps_and_updates(checkpoint, task)
        load_optimizers(checkpoint, mapped, task, seg_updates, gan_updates)
        state = f"optimizer state imported (gan {gan_updates} updates, seg {seg_updates})"
    else:
        step, seg_updates, gan_updates, notes = checkpoint.file_step or 0, 0, 0, []
        state = "no Adam slots or beta powers in the checkpoint: the optimizer state starts fresh"
    record = {"official_checkpoint": str(pathlib.Path(checkpoint.prefix).resolve()), "tf1_global_step": step,
              "optimizer_state": "imported" if has_optimizer_state else "fresh",
              "gan_updates": gan_updates, "seg_updates": seg_updates}
    with staged_folder(cfg.output_dir) as staging:
        write_run_config(cfg, staging)
        manager = checkpoint_manager(run_checkpoint(task, step_variable(step)), staging / CHECKPOINT_DIR, cfg)
        manager.save(checkpoint_number=step)
        atomic_write_text(staging / IMPORT_RECORD, json.dumps(record, indent=2) + "\n")
    log(f"imported {len(mapped)} variables of {checkpoint.prefix} into {cfg.output_dir} at step {step}; {state}")
    for note in notes:
        log(note)
    return record


def read_import_record(run_dir):
    """The import record of a run folder made by --mode=import_official, else None."""
    path = pathlib.Path(run_dir) / IMPORT_RECORD
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
