"""Command line of the toolkit: python main.py --flagfile=configs/mr2ct.flags [--mode=...]."""
import json
import sys

from absl import app
from absl import logging

from sifa_synthmix import flags as flags_lib

flags_lib.define_flags()
FLAGS = flags_lib.FLAGS


def run_summary(cfg):
    """Prints one JSON line: trainable parameters per scope, plus "total"."""
    from sifa_synthmix.task_factory import build_task  # pylint: disable=import-outside-toplevel

    print(json.dumps(build_task(cfg).parameter_counts()))


def run_train(cfg):
    from data_prep import phantom  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.trainer import Trainer  # pylint: disable=import-outside-toplevel

    if FLAGS.prepare_phantom:
        phantom.ensure_phantom(cfg.data.data_dir, image_size=cfg.model.image_size, seed=FLAGS.phantom_seed)
    Trainer(cfg, overwrite=FLAGS.overwrite).run()


MODES = {"summary": run_summary, "train": run_train}


def main(argv):
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from sifa_synthmix.data.reader import DataError  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.trainer import RunFolderError  # pylint: disable=import-outside-toplevel

    try:
        cfg = flags_lib.config_from_flags(FLAGS)
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    try:
        MODES[FLAGS.mode](cfg)
    except (DataError, RunFolderError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    app.run(main)
