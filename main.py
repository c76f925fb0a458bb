"""Command line of the toolkit: python main.py --flagfile=configs/mr2ct.flags [--mode=...]."""
import json
import pathlib
import sys
import time

from absl import app
from absl import flags
from absl import logging

from sifa_synthmix import flags as flags_lib
from sifa_synthmix.command_errors import error_text, fail, refused_by_the_system, signals_end_the_command
from sifa_synthmix.errors import ToolkitError, TrainingStopped
from sifa_synthmix.tensorflow_start import import_tensorflow

flags_lib.define_flags()
FLAGS = flags_lib.FLAGS


def run_summary(cfg):
    """Prints one JSON line: trainable parameters per scope, plus "total"; for a run imported
    from an official checkpoint, also that checkpoint and its TF1 global step."""
    from sifa_synthmix.training.official_checkpoint import read_import_record  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.training.task_factory import build_task  # pylint: disable=import-outside-toplevel

    summary = build_task(cfg).parameter_counts()
    record = read_import_record(cfg.output_dir)
    if record:
        summary.update(official_checkpoint=record["official_checkpoint"], tf1_global_step=record["tf1_global_step"])
    print(json.dumps(summary))


def prepare_data(cfg):
    """--prepare_phantom: the demo's phantom into --data_dir, unless it is there."""
    if not FLAGS.prepare_phantom:
        return
    from data_prep import demo_data  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.data.reader import DataError  # pylint: disable=import-outside-toplevel

    try:
        demo_data.ensure_phantom(cfg.data.data_dir, image_size=cfg.model.image_size, seed=FLAGS.phantom_seed,
                                 kind=FLAGS.phantom)
    except ValueError as error:
        raise DataError(f"{error}; --noprepare_phantom trains on it as it is") from None


def run_train(cfg):
    from sifa_synthmix.training import distribution  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.training.trainer import Trainer  # pylint: disable=import-outside-toplevel

    distribution.build_strategy(cfg.runtime.distribution)  # before other TensorFlow work (multi_worker)
    prepare_data(cfg)
    Trainer(cfg, overwrite=FLAGS.overwrite).run()


def eval_options():
    flip = {"auto": None, "true": True, "false": False}[FLAGS.flip_test_volumes]
    return {"checkpoint": FLAGS.checkpoint or None, "flip": flip, "assd_unit": FLAGS.assd_unit,
            "batch_size": FLAGS.eval_batch_size, "write_images": FLAGS.write_images}


def run_evaluate(cfg):
    from sifa_synthmix.evaluation.report import run_table  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.evaluation.run_evaluation import evaluate_run  # pylint: disable=import-outside-toplevel

    print(run_table(evaluate_run(cfg.output_dir, **eval_options())))


def run_compare(cfg):
    from sifa_synthmix.evaluation.compare import compare_runs  # pylint: disable=import-outside-toplevel

    if not FLAGS.compare_runs:
        fail("--mode=compare needs --compare_runs=DIR1,DIR2[,...]")
    out = pathlib.Path(cfg.output_dir) / "comparison"
    print(compare_runs(FLAGS.compare_runs, out))
    print(f"written to {out}")


def experiment_seeds():
    """--seeds as integers (empty: one run per variant with --seed)."""
    try:
        return [int(seed) for seed in FLAGS.seeds]
    except ValueError:
        return fail(f"--seeds takes integers, got {','.join(FLAGS.seeds)}")


def run_experiment(cfg):
    from sifa_synthmix.experiment import run_experiment as experiment  # pylint: disable=import-outside-toplevel

    seeds = experiment_seeds()
    prepare_data(cfg)
    start = time.perf_counter()
    text = experiment(cfg, FLAGS.experiment_variants, overwrite=FLAGS.overwrite, eval_options=eval_options(),
                      seeds=seeds)
    print(text)
    print(f"experiment wall time: {time.perf_counter() - start:.0f} s")


def run_import_official(cfg):
    from sifa_synthmix.training.official_checkpoint import import_official  # pylint: disable=import-outside-toplevel

    if not FLAGS.official_checkpoint:
        fail("--mode=import_official needs --official_checkpoint=PATH (a TF1 checkpoint prefix or its folder)")
    import_official(cfg, FLAGS.official_checkpoint)


def run_predict(cfg):
    from sifa_synthmix.prediction.scan_prediction import predict_run  # pylint: disable=import-outside-toplevel

    failed = predict_run(cfg.output_dir, FLAGS.predict_input, FLAGS.predictions_dir,
                         checkpoint=FLAGS.checkpoint or None, batch_size=FLAGS.eval_batch_size,
                         save_probabilities=FLAGS.save_probabilities, slice_axis=FLAGS.predict_slice_axis,
                         spacing=FLAGS.predict_spacing, target_range=cfg.data.target_range or None,
                         command=sys.argv)
    if failed:  # each already named on its `error:` line
        sys.exit(2)


def run_export(cfg):
    from sifa_synthmix.prediction.export import export_run  # pylint: disable=import-outside-toplevel

    export_run(cfg.output_dir, FLAGS.export_dir, checkpoint=FLAGS.checkpoint or None)


MODES = {"summary": run_summary, "train": run_train, "evaluate": run_evaluate, "compare": run_compare,
         "experiment": run_experiment, "import_official": run_import_official, "predict": run_predict,
         "export": run_export}


HELP_FLAGS = {"help": False, "h": False, "?": False, "helpshort": False, "helpfull": True}


def flagfiles_first(argv):
    """argv with every --flagfile moved ahead of the other flags, keeping their order.

    absl applies flags in the order given, a flagfile's where the flagfile stands; so a flag typed
    on the command line then wins over a flagfile's, whichever was typed first."""
    arguments, rest = list(argv[1:]), []
    if "--" in arguments:
        rest = arguments[arguments.index("--"):]
        arguments = arguments[:arguments.index("--")]
    flagfiles, typed = [], []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument.startswith("-") and argument.lstrip("-").split("=", 1)[0] == "flagfile":
            takes_next = "=" not in argument and index + 1 < len(arguments)
            flagfiles.extend(arguments[index:index + 1 + takes_next])
            index += takes_next
        else:
            typed.append(argument)
        index += 1
    return [argv[0], *flagfiles, *typed, *rest]


def _typed_flag(arguments, index):
    """(name, value as parsed, next index) of the flag typed at arguments[index]; name None for
    anything else (a value, an unknown flag, --flagfile)."""
    name, has_value, value = arguments[index].lstrip("-").partition("=")
    if not arguments[index].startswith("-") or name == "flagfile":
        return None, None, index + 1
    if name not in FLAGS and name.startswith("no") and name[2:] in FLAGS and FLAGS[name[2:]].boolean:
        return name[2:], False, index + 1
    if name not in FLAGS:
        return None, None, index + 1
    if not has_value:
        if FLAGS[name].boolean:
            return name, True, index + 1
        if index + 1 >= len(arguments):
            return None, None, index + 1
        value, index = arguments[index + 1], index + 1
    try:
        return name, FLAGS[name].parser.parse(value), index + 1
    except (ValueError, flags.Error):
        return name, value, index + 1


def flags_given_twice(argv):
    """The first flag typed more than once on the command line with different values, as
    (name, first value, second value), or None: absl would take the last in silence."""
    arguments = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    seen, index = {}, 0
    while index < len(arguments):
        name, value, index = _typed_flag(arguments, index)
        if name is None:
            continue
        if name in seen and seen[name] != value:
            return name, seen[name], value
        seen.setdefault(name, value)
    return None


def print_help(full):
    print(f"{__doc__}\nFlags typed on the command line win over those of --flagfile.\n{flags_lib.grouped_help(full)}")
    if not full:
        print("\nTry --helpfull for absl's own flags too.")


def parse_flags(argv):
    """absl's parser, but flags typed on the command line win over --flagfile's, --help lists
    the project's flags by group, and a bad flag or value is one error line and exit code 2."""
    for argument in argv[1:]:
        if argument == "--":
            break
        name = argument.lstrip("-")
        if argument.startswith("-") and name in HELP_FLAGS:
            print_help(full=HELP_FLAGS[name])
            sys.exit(0)
    twice = flags_given_twice(argv)
    if twice:
        fail(f"--{twice[0]} is given twice with different values ({twice[1]!r}, then {twice[2]!r}); give it once")
    try:
        return FLAGS(flagfiles_first(argv))
    except flags.Error as error:
        fail(str(error).removeprefix("ERROR:: "))


def main(argv):
    import_tensorflow()  # before anything else imports it: its start-up noise filtered out
    # Outside the training loop (which stops gracefully), SIGINT and SIGTERM end the command.
    with signals_end_the_command():
        run_command(argv)


def run_command(argv):
    """Runs --mode. Every error of the toolkit (a ToolkitError: a bad setting, bad data, a run
    folder it must not touch, ...) and whatever the system refuses (a full or read-only disk) ends
    it with one `error:` line; a stop by SIGINT or SIGTERM, with one line and 128 + the signal."""
    logging.set_verbosity(logging.WARNING)
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        cfg = flags_lib.train_config(FLAGS) if FLAGS.mode == "train" else flags_lib.config_from_flags(FLAGS)
        MODES[FLAGS.mode](cfg)
    except ToolkitError as error:
        fail(error_text(error), code=error.exit_code)
    except refused_by_the_system() as error:
        fail(error_text(error))
    except TrainingStopped as stop:
        print(stop, file=sys.stderr)
        sys.exit(stop.exit_code)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
