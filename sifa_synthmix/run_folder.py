"""The parts of a run folder, the check that a folder is one, and the reading of its data
fingerprint. A module of its own so that evaluation, prediction, export and comparison name them
without importing the trainer (which imports the learning curve, which imports inference)."""
import hashlib
import json
import pathlib

from sifa_synthmix.data.reader import DataError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# What evaluation must find unchanged in the data (inputs.data_fingerprint), as at training.
DATA_FINGERPRINT_FILE = "data_fingerprint.json"
# Where --mode=evaluate writes (run_evaluation.py).
EVAL_DIR = "eval"
# The fingerprint's entry holding the digest of its other entries (`sealed_fingerprint`).
FINGERPRINT_SEAL = "sha256"


def require_run_folder(run_dir):
    """`run_dir` as a Path; DataError unless it holds a run's config.json, naming the runs in it
    when it holds some (an experiment's OUT/VARIANT/ and OUT/VARIANT/seedN/)."""
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        runs = sorted(str(path.parent) for pattern in (f"*/{CONFIG_FILE}", f"*/*/{CONFIG_FILE}")
                      for path in run_dir.glob(pattern))
        inside = (f"; it holds the runs {', '.join(runs)}: pass one as --output_dir (an experiment's folder: "
                  "--mode=compare --compare_runs compares them)" if runs else "")
        raise DataError(f"{run_dir}: not a run folder (no {CONFIG_FILE}){inside}")
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
    seal are taken as they are). DataError when it is not a JSON object, or was edited since the
    trainer wrote it."""
    path = pathlib.Path(run_dir) / DATA_FINGERPRINT_FILE
    if not path.is_file():
        return {}
    try:
        fingerprint = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error}); restore it from a copy of the run") from None
    if not isinstance(fingerprint, dict):
        raise DataError(f"{path}: not a JSON object of the data's class names, slice size and intensity ranges "
                        f"(got {type(fingerprint).__name__}); restore it from a copy of the run")
    seal = fingerprint.pop(FINGERPRINT_SEAL, None)
    if seal is not None and seal != _digest(fingerprint):
        raise DataError(f"{path}: edited after training (its entries no longer match its {FINGERPRINT_SEAL}); "
                        "the class names, slice size and intensity ranges there may not be the run's: restore "
                        "it from a copy of the run")
    return fingerprint


def check_config_against_fingerprint(run_dir, model, fingerprint):
    """DataError when RUN/config.json's model flags (`model`, a ModelConfig) contradict what the
    fingerprint recorded of the data the run was trained on (training refuses both mismatches):
    an edited image_size would crop new scans to a size the model never saw, an edited
    num_classes would name classes the model does not predict."""
    run_dir = pathlib.Path(run_dir)
    recorded_size = fingerprint.get("image_size")
    if recorded_size is not None and int(recorded_size) != model.image_size:
        raise DataError(f"{run_dir / CONFIG_FILE}: image_size is {model.image_size}, but the run was trained on "
                        f"{recorded_size} x {recorded_size} slices ({run_dir / DATA_FINGERPRINT_FILE}); "
                        f"{CONFIG_FILE} was edited: put back \"image_size\": {recorded_size}")
    names = fingerprint.get("class_names")
    if names and len(names) != model.num_classes:
        raise DataError(f"{run_dir / CONFIG_FILE}: num_classes is {model.num_classes}, but the run was trained on "
                        f"{len(names)} classes {names} ({run_dir / DATA_FINGERPRINT_FILE}); {CONFIG_FILE} was "
                        f"edited: put back \"num_classes\": {len(names)}")
