"""The parts of a run folder and the check that a folder is one. A module of its own so that
evaluation, prediction, export and comparison name them without importing the trainer (which
imports the learning curve, which imports inference)."""
import pathlib

from sifa_synthmix.data.reader import DataError

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
# What evaluation must find unchanged in the data (inputs.data_fingerprint), as at training.
DATA_FINGERPRINT_FILE = "data_fingerprint.json"
# Where --mode=evaluate writes (run_evaluation.py).
EVAL_DIR = "eval"


def require_run_folder(run_dir):
    """`run_dir` as a Path; DataError unless it holds a run's config.json."""
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise DataError(f"{run_dir}: not a run folder (no {CONFIG_FILE})")
    return run_dir
