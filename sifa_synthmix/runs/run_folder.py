"""A run folder: the name of every file and folder in it, its config.json and data fingerprint,
its checkpoints, and the checks and moves that keep the run in it safe (starting, resuming,
--overwrite's replacement). One module, so that training, evaluation, prediction, export,
comparison and the import of official checkpoints name the same parts without importing the
trainer.

    RUN/config.json             the flags the run is trained, resumed and evaluated with
    RUN/data_fingerprint.json   what the data were at training (class names, slice size, ranges), sealed
    RUN/checkpoints/            ckpt-STEP.index and .data-* (checkpoint_files.py)
    RUN/tb/                     TensorBoard events (tensorboard_summaries.py)
    RUN/train.log               every line the trainer printed, across resumes (run_log.py)
    RUN/train.lock, eval.lock   held while the run is trained, evaluated (run_lock.py)
    RUN/eval_curve.csv          the learning curve (--eval_every)
    RUN/adaptation_signal.json  the end-of-run adaptation signal (adaptation_signal.py)
    RUN/official_import.json    what --mode=import_official imported (official_checkpoint.py)
    RUN/eval/                   --mode=evaluate: metrics.json, metrics.csv, table.md, predictions/,
                                with --write_images images/ and ground_truth/
    RUN/replaced_run/           while --overwrite replaces a run: the run it replaces
"""
import hashlib
import json
import os
import pathlib
import shutil

import tensorflow as tf

from sifa_synthmix.config import DATA_PATH_FIELDS, TrainConfig, absolute_path_spec, flat_settings, not_a_folder_reason
from sifa_synthmix.data.reader import DataError
from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.files import atomic_write_text
from sifa_synthmix.runs import checkpoint_files
from sifa_synthmix.tensorflow_paths import for_tensorflow

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# What evaluation must find unchanged in the data (inputs.data_fingerprint), as at training.
DATA_FINGERPRINT_FILE = "data_fingerprint.json"
TENSORBOARD_DIR = "tb"
LOG_FILE = "train.log"
LOCK_FILE = "train.lock"  # held by the trainer
EVAL_LOCK_FILE = "eval.lock"  # held by --mode=evaluate
CURVE_FILE = "eval_curve.csv"
SIGNAL_FILE = "adaptation_signal.json"
IMPORT_RECORD = "official_import.json"
# Where --mode=evaluate writes (run_evaluation.py), and what it writes there.
EVAL_DIR = "eval"
METRICS_FILE = "metrics.json"
METRICS_TABLE_FILE = "metrics.csv"
TABLE_FILE = "table.md"
PREDICTIONS_DIR = "predictions"
IMAGES_DIR = "images"
GROUND_TRUTH_DIR = "ground_truth"
# The fingerprint's entry holding the digest of its other entries (`sealed_fingerprint`).
FINGERPRINT_SEAL = "sha256"
# Where --overwrite keeps the run it replaces until the new run saves a checkpoint, and what it moves there.
REPLACED_DIR = "replaced_run"
REPLACED_PARTS = (CONFIG_FILE, DATA_FINGERPRINT_FILE, CHECKPOINT_DIR, TENSORBOARD_DIR, EVAL_DIR, SIGNAL_FILE)
# Settings a resumed run may change: they do not change what is trained.
RESUMABLE_SETTINGS = ("max_steps", "save_every", "keep_checkpoints", "log_every", "image_every", "max_nonfinite",
                      "distribution", "graph_optimizer", "eval_every")
# Settings added after runs had been trained, with the value such a run's config.json stands for.
# update_schedule is not resumable: a run resumes only with the schedule it started with.
LATER_SETTINGS = {"update_schedule": "official", "data.random_shift": 0.0}


class RunFolderError(ToolkitError):
    """A folder that is not a run folder, one whose config.json or data fingerprint cannot be used
    (unreadable, or edited since training), or one holding a run this one must not overwrite."""


def require_run_folder(run_dir):
    """`run_dir` as a Path; RunFolderError unless it holds a run's config.json, naming the runs in it
    when it holds some (an experiment's OUT/VARIANT/ and OUT/VARIANT/seedN/)."""
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        runs = sorted(str(path.parent) for pattern in (f"*/{CONFIG_FILE}", f"*/*/{CONFIG_FILE}")
                      for path in run_dir.glob(pattern))
        inside = (f"; it holds the runs {', '.join(runs)}: pass one as --output_dir (an experiment's folder: "
                  "--mode=compare --compare_runs compares them)" if runs else "")
        raise RunFolderError(f"{run_dir}: not a run folder (no {CONFIG_FILE}){inside}")
    return run_dir


def _digest(fingerprint):
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode("utf-8")).hexdigest()


def sealed_fingerprint(fingerprint):
    """The fingerprint to write, with the digest of its entries: a hand edit (class names swapped,
    a range changed) would otherwise be used as it is by every prediction, export and evaluation."""
    fingerprint = json.loads(json.dumps(fingerprint))  # the values as they will read back
    return {**fingerprint, FINGERPRINT_SEAL: _digest(fingerprint)}


def read_fingerprint(run_dir):
    """RUN/data_fingerprint.json without its seal ({} when absent; fingerprints written before the
    seal are taken as they are). RunFolderError when it is not a JSON object, or was edited since the
    trainer wrote it."""
    path = pathlib.Path(run_dir) / DATA_FINGERPRINT_FILE
    if not path.is_file():
        return {}
    try:
        fingerprint = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: not valid JSON ({error}); restore it from a copy of the run") from None
    if not isinstance(fingerprint, dict):
        raise RunFolderError(f"{path}: not a JSON object of the data's class names, slice size and intensity ranges "
                        f"(got {type(fingerprint).__name__}); restore it from a copy of the run")
    seal = fingerprint.pop(FINGERPRINT_SEAL, None)
    if seal is not None and seal != _digest(fingerprint):
        raise RunFolderError(f"{path}: edited after training (its entries no longer match its {FINGERPRINT_SEAL}); "
                        "the class names, slice size and intensity ranges there may not be the run's: restore "
                        "it from a copy of the run")
    return fingerprint


def check_config_against_fingerprint(run_dir, model, fingerprint):
    """RunFolderError when RUN/config.json's model flags (`model`, a ModelConfig) contradict what the
    fingerprint recorded of the data the run was trained on (training refuses both mismatches):
    an edited image_size would crop new scans to a size the model never saw, an edited
    num_classes would name classes the model does not predict."""
    run_dir = pathlib.Path(run_dir)
    recorded_size = fingerprint.get("image_size")
    if recorded_size is not None and int(recorded_size) != model.image_size:
        raise RunFolderError(f"{run_dir / CONFIG_FILE}: image_size is {model.image_size}, but the run was trained on "
                        f"{recorded_size} x {recorded_size} slices ({run_dir / DATA_FINGERPRINT_FILE}); "
                        f"{CONFIG_FILE} was edited: put back \"image_size\": {recorded_size}")
    names = fingerprint.get("class_names")
    if names and len(names) != model.num_classes:
        raise RunFolderError(f"{run_dir / CONFIG_FILE}: num_classes is {model.num_classes}, but the run was trained on "
                        f"{len(names)} classes {names} ({run_dir / DATA_FINGERPRINT_FILE}); {CONFIG_FILE} was "
                        f"edited: put back \"num_classes\": {len(names)}")


def _comparable_settings(config_dict):
    """A config's flattened settings as compared between runs: its paths resolved, without
    output_dir (a run folder is the folder its config.json lives in, wherever it was moved), and
    LATER_SETTINGS filled in where it was written before they existed."""
    flat = dict(LATER_SETTINGS, **flat_settings(json.loads(json.dumps(config_dict))))
    flat.pop("output_dir", None)
    for name in DATA_PATH_FIELDS:
        if isinstance(flat.get(f"data.{name}"), str):
            flat[f"data.{name}"] = absolute_path_spec(flat[f"data.{name}"])
    return flat


def _check_writable(out):
    reason = not_a_folder_reason(out, "--output_dir")
    if reason:
        raise RunFolderError(f"{out}: {reason}")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(f"{existing}: not writable, so --output_dir={out} cannot be written")


def has_checkpoint(out):
    return bool(checkpoint_files.newest_first(pathlib.Path(out) / CHECKPOINT_DIR))


def check_run_folder(cfg, overwrite=False):
    """What starting `cfg` does to its output folder, decided before anything is written.

    Returns "new" (no run there), "resume" (a run with the same flags), "retry" (a run with
    other flags that never saved a checkpoint) or "replace" (other flags and overwrite: its
    checkpoints and events go). Raises RunFolderError for a folder it must not touch.
    """
    out = pathlib.Path(cfg.output_dir)
    _check_writable(out)
    saved_path = out / CONFIG_FILE
    if not saved_path.is_file():
        return "new"
    try:
        old = _comparable_settings(json.loads(saved_path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, AttributeError) as error:
        raise RunFolderError(f"{saved_path}: not a run's config ({error}); move it away or choose another "
                             "--output_dir") from None
    new = _comparable_settings(cfg.to_dict())
    differing = sorted(k for k in set(old) | set(new) if k not in RESUMABLE_SETTINGS and old.get(k) != new.get(k))
    if not differing:
        return "resume"
    if not has_checkpoint(out):
        return "retry"
    if overwrite:
        return "replace"
    details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in differing)
    raise RunFolderError(f"{out} holds a run with other flags ({details}); "
                         "pass --overwrite to replace it or choose another --output_dir")


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def restore_replaced(out, log=print):
    """Puts back the run that --overwrite moved to OUT/replaced_run, dropping what the new run
    wrote in its place (it saved no checkpoint). Does nothing when there is none."""
    aside = out / REPLACED_DIR
    if not aside.is_dir():
        return
    for part in REPLACED_PARTS:
        _remove(out / part)
        if (aside / part).exists():
            os.replace(aside / part, out / part)
    aside.rmdir()
    log(f"{out}: put back the run that --overwrite was replacing (the new run saved no checkpoint)")


def discard_replaced(out):
    """Deletes the run --overwrite replaced, once the new run has saved a checkpoint."""
    shutil.rmtree(out / REPLACED_DIR, ignore_errors=True)


def _finish_interrupted_replacement(out, log):
    """A trainer killed while replacing a run: the new run is kept if it saved a checkpoint,
    else the old one is put back."""
    if not (out / REPLACED_DIR).is_dir():
        return
    if has_checkpoint(out):
        discard_replaced(out)
    else:
        restore_replaced(out, log)


def prepare_run_folder(cfg, overwrite=False, log=print):
    """Creates OUTPUT_DIR and saves the run's flags there (paths made absolute), as
    check_run_folder decides; returns the folder.

    A replaced run (plan "replace") is moved to OUT/replaced_run, not deleted: the trainer
    deletes it after the new run's first checkpoint and puts it back if the new run fails before.
    """
    cfg = cfg.with_absolute_paths()
    out = pathlib.Path(cfg.output_dir)
    _finish_interrupted_replacement(out, log)
    plan = check_run_folder(cfg, overwrite)
    if plan == "replace":
        log(f"--overwrite: the run with other flags in {out} (its checkpoints, events and evaluation) is moved "
            f"to {out / REPLACED_DIR}, deleted once this run saves a checkpoint, put back if it fails before")
        (out / REPLACED_DIR).mkdir()
        for part in REPLACED_PARTS:
            if (out / part).exists():
                os.replace(out / part, out / REPLACED_DIR / part)
    elif plan == "retry":
        log(f"{out} held a run with other flags that never saved a checkpoint; starting afresh")
    out.mkdir(parents=True, exist_ok=True)
    write_run_config(cfg, out)
    return out


def write_run_config(cfg, folder):
    """Writes FOLDER/config.json: the flags a run is trained, resumed and evaluated with."""
    atomic_write_text(pathlib.Path(folder) / CONFIG_FILE, json.dumps(cfg.to_dict(), indent=2) + "\n")


def load_run_config(run_dir):
    """The TrainConfig a run folder was trained with; RunFolderError naming config.json when it
    is not JSON or not a run's settings (a key unknown, a value out of range)."""
    path = pathlib.Path(run_dir) / CONFIG_FILE
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path}: not valid JSON ({error}); restore it from a copy of the run") from None
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{path}: not a run's config ({error}); restore it from a copy of the run") from None


def check_data_fingerprint(run_dir, cfg, now, action, log=print):
    """Refuses data that differ from those the run was trained on (DataError naming them), on the
    entries both the run's data_fingerprint.json and `now` hold: `inputs.data_fingerprint` when a
    run resumes, `inputs.data_facts` (what the data folder tells without its training records)
    when it is evaluated. action: what is refused, "evaluate" or "resume"."""
    saved = read_fingerprint(run_dir)
    if not saved:
        log(f"note: {run_dir} has no {DATA_FINGERPRINT_FILE} (trained before it was recorded); "
            f"not checking that {cfg.data.data_dir} holds the data it was trained on")
        return
    now = json.loads(json.dumps(now))
    differing = [f"{key}: {saved[key]} at training, {now[key]} now"
                 for key in sorted(set(saved) & set(now)) if saved[key] != now[key]]
    if differing:
        raise DataError(f"{cfg.data.data_dir}: not the data {run_dir} was trained on ({'; '.join(differing)}); "
                        f"refusing to {action}")


def step_variable(value=0):
    """The run's step counter, saved in every checkpoint (the trainer's, not the replicas')."""
    return tf.Variable(value, dtype=tf.int64, trainable=False, name="step")


def run_checkpoint(task, step, **extra_items):
    """The tf.train.Checkpoint of a run: the task's items, the step and any extra items."""
    return tf.train.Checkpoint(**task.checkpoint_items(), step=step, **extra_items)


def checkpoint_manager(checkpoint, directory, cfg, log=print):
    """Keeps cfg.schedule.keep_checkpoints checkpoints in `directory` (created); save with checkpoint_number=step.
    Its paths are `for_tensorflow` aliases: pass them through `for_people` to show them."""
    pathlib.Path(directory).mkdir(parents=True, exist_ok=True)
    checkpoint_files.repair_state(directory, log)
    return tf.train.CheckpointManager(checkpoint, for_tensorflow(directory, folder=True),
                                      max_to_keep=cfg.schedule.keep_checkpoints)
