"""Bad input on the command line: one 'error: ...' line naming the file and problem, exit code 2,
and nothing of an existing run overwritten."""
import errno
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

import main
from conftest import REPO, main_exit_code
from data_prep import folder
from data_prep.errors import exit_on_bad_input
from sifa_synthmix.data import records
from tensorboard_events import hparams_records, read_events


TINY_FLAGS = f"--flagfile={REPO / 'configs' / 'tiny_cpu.flags'}"


def run_main(capsys, *argv):
    """Runs main.py in-process; returns (exit code, stderr)."""
    code = main_exit_code(*argv)
    return code, capsys.readouterr().err


def test_every_error_class_of_the_toolkit_is_a_toolkit_error():
    """main.py and the converters catch ToolkitError alone (and what the system refuses, OSError):
    every exception class the package or data_prep defines derives from it, but the stops."""
    import ast  # pylint: disable=import-outside-toplevel

    stops = {"TrainingStopped", "Stopped"}  # a run or command stopped by a signal: no error
    bases = {}  # class name -> the names of its bases
    for path in [*(REPO / "sifa_synthmix").rglob("*.py"), *(REPO / "data_prep").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                bases[node.name] = {ast.unparse(base).rpartition(".")[2] for base in node.bases}

    def derives(name, ancestor):
        return name == ancestor or any(derives(base, ancestor) for base in bases.get(name, ()))

    errors = [name for name in bases if derives(name, "Exception") or derives(name, "ValueError")
              or derives(name, "SystemExit")]
    assert len(errors) > 10
    assert not [name for name in errors if name not in stops and not derives(name, "ToolkitError")]


@pytest.fixture
def data_copy(tiny_phantom, tmp_path):
    """A private copy of the tiny phantom, free to damage."""
    return shutil.copytree(tiny_phantom, tmp_path / "data")


def edit_info(data_dir, **changes):
    """Changes entries of DATA_DIR/dataset.json."""
    path = data_dir / "dataset.json"
    path.write_text(json.dumps({**json.loads(path.read_text(encoding="utf-8")), **changes}))


def tiny_args(data_dir, out):
    return ("--flagfile=configs/tiny_cpu.flags", f"--data_dir={data_dir}", f"--output_dir={out}")


def assert_one_error(code, err, *parts):
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1, err
    assert "Traceback" not in err
    for part in parts:
        assert part in lines[0], lines[0]


def test_unknown_flag_value(capsys):
    assert_one_error(*run_main(capsys, "--mix_protocol=synthmax"), "--mix_protocol=synthmax")


def test_invalid_size(capsys):
    assert_one_error(*run_main(capsys, "--mode=summary", "--image_size=30"), "image_size must be a multiple of 8")


def test_missing_data_folder_writes_nothing(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    out = tmp_path / "run"
    assert_one_error(*run_main(capsys, *tiny_args(tmp_path / "absent", out)), "absent", "does not exist",
                     "configs/demo.flags")
    assert not out.exists()


@pytest.mark.parametrize("damage, parts", [
    (lambda d: (d / "datalists" / "mr_train.txt").write_text(""), ("mr_train.txt", "empty")),
    (lambda d: (d / "datalists" / "ct_train.txt").write_text("../nowhere.tfrecords\n"),
     ("ct_train.txt", "nowhere.tfrecords", "does not exist")),
    (lambda d: (d / "stats.json").write_text(json.dumps({"mr": {"min": -1, "max": 3}})),
     ("stats.json", "no statistics for modality 'ct'")),
    (lambda d: [p.write_bytes(p.read_bytes()[:-7]) for p in (d / "mr" / "train").glob("*.tfrecords")],
     ("mr/train", "truncated record")),
    (lambda d: (d / "stats.json").write_text(json.dumps({"mr": {"min": -1, "max": 3},
                                                         "ct": {"min": -1, "max": float("inf")}})),
     ("stats.json", "ct min (-1.0) and max (inf) must be finite")),
    (lambda d: (d / "dataset.json").write_text('{"class_names": ['), ("dataset.json", "not valid JSON")),
    (lambda d: (d / "dataset.json").write_text("[1, 2]"), ("dataset.json", "not a JSON object", "list")),
    (lambda d: (d / "stats.json").write_text("null"), ("stats.json", "not a JSON object", "NoneType")),
    (lambda d: edit_info(d, class_names=["bg", "a", "b", "c", "d", "phantom"]),
     ("dataset.json", "6 class names", "--num_classes is 5")),
    (lambda d: edit_info(d, class_names=["bg", "a", "b"]), ("dataset.json", "3 class names", "--num_classes is 5")),
], ids=["empty datalist", "missing record", "stats without modality", "truncated file", "infinite stats",
        "dataset.json not JSON", "dataset.json a list", "stats.json null", "class names too many",
        "class names too few"])
def test_bad_data_is_one_error_and_writes_nothing(capsys, tmp_path, data_copy, monkeypatch, damage, parts):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    damage(data_copy)
    out = tmp_path / "run"
    assert_one_error(*run_main(capsys, *tiny_args(data_copy, out)), *parts)
    assert not out.exists()


def test_an_output_dir_holding_another_run_is_left_alone(capsys, tmp_path, tiny_phantom, monkeypatch):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    out = tmp_path / "run"
    out.mkdir()
    saved = json.dumps({"model": {"image_size": 32, "ngf": 99}}) + "\n"
    (out / "config.json").write_text(saved)
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "ckpt-3.index").write_bytes(b"a step was saved")
    assert_one_error(*run_main(capsys, *tiny_args(tiny_phantom, out)), "model.ngf: 99 -> 4", "--overwrite")
    assert (out / "config.json").read_text(encoding="utf-8") == saved


def tf_record_framing(data):
    """One record holding `data`, with valid checksums."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "one.tfrecords")
        with tf.io.TFRecordWriter(path) as writer:
            writer.write(data)
        with open(path, "rb") as handle:
            return handle.read()


def flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the first record's data: its checksum no longer matches
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("split, damage, parts", [
    ("ct/train", lambda p: records.write_records(p, [(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))]),
     ("should hold", "record 1 of 1")),
    # Unmapped raw labels (MMWHS 205, 500, ...) would silently train on nothing.
    ("mr/train", lambda p: records.write_records(p, [(np.zeros((32, 32, 3)), np.full((32, 32, 3), 205.0))]),
     ("label values outside 0..5", "205")),
    ("ct/train", flip_a_byte, ("corrupt",)),
    ("ct/val", lambda p: records.write_records(p, [(np.full((32, 32, 3), np.nan), np.zeros((32, 32, 3)))]),
     ("data_vol holds NaN",)),
    ("mr/train", lambda p: p.write_bytes(tf_record_framing(b"\xff\xff not a protocol buffer")),
     ("not a tf.train.Example",)),
], ids=["wrong size", "unknown label", "corrupt", "nan in validation", "not an example"])
def test_a_bad_record_is_named_before_anything_is_written(capsys, tmp_path, data_copy, monkeypatch, split, damage,
                                                          parts):
    """Every record is read before the run folder, its log or events exist (and before TensorFlow
    logs the failing pipeline)."""
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    bad = sorted((data_copy / split).glob("*.tfrecords"))[-1]
    damage(bad)
    out = tmp_path / "run"
    assert_one_error(*run_main(capsys, *tiny_args(data_copy, out), "--max_steps=1"), str(bad), *parts)
    assert not out.exists()


def test_a_checkpoint_of_another_architecture_names_the_flag(capsys, tmp_path, tiny_config):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sifa_synthmix.models.networks import SegmenterNetworks  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.runs.run_folder import prepare_run_folder  # pylint: disable=import-outside-toplevel

    other = tiny_config("--encoder_base=4", output_dir=tmp_path / "other")
    prepare_run_folder(other)
    networks = SegmenterNetworks(other.model)
    saved = tf.train.Checkpoint(e_B=networks.e_B, s_B=networks.s_B).write(str(tmp_path / "other" / "checkpoints" / "ckpt-1"))
    run = prepare_run_folder(tiny_config(output_dir=tmp_path / "run"))
    code, err = run_main(capsys, "--mode=evaluate", f"--output_dir={run}", f"--checkpoint={saved}")
    assert_one_error(code, err, saved, "--encoder_base=4 there, 2 here")
    assert not (run / "eval").exists()


@pytest.mark.parametrize("flag, parts", [
    ("--synthmix_k=5", ("--synthmix_k=5", "power of two")),
    ("--batch_size=0", ("--batch_size", "at least 1")),
    ("--eval_batch_size=0", ("--eval_batch_size=0",)),
    ("--eval_every=-1", ("--eval_every=-1", "'auto' or a whole number >= 0")),
    ("--save_every=0", ("--save_every", "at least 1")),
    ("--max_steps=-3", ("--max_steps", "got -3")),
    ("--synthmix_lambda=abc", ("--synthmix_lambda", "'abc'")),
    ("--source_range=1,a", ("--source_range=1,a", "numbers")),
    ("--flagfile=absent.flags", ("absent.flags",)),
    ("--deterministic --jit_compile", ("--deterministic cannot be combined with --jit_compile",)),
    ("--base_lr=inf", ("--base_lr must be positive and finite", "inf")),
    ("--lambda_cycle=nan", ("--lambda_cycle must be a finite number", "nan")),
    ("--batch_size=100000", ("--batch_size=100000 is larger than the source training set", "40 slices")),
    ("--max_steps=3 --max_steps 4", ("--max_steps is given twice with different values (3, then 4)",)),
    ("--overwrite --nooverwrite", ("--overwrite is given twice with different values (True, then False)",)),
])
def test_a_bad_flag_value_is_one_line_naming_the_flag_and_writes_nothing(capsys, tmp_path, tiny_phantom, flag,
                                                                          parts):
    out = tmp_path / "run"
    code, err = run_main(capsys, *tiny_args(tiny_phantom, out), *flag.split())
    assert_one_error(code, err, *parts)
    assert "ERROR::" not in err and "could not convert" not in err
    assert not out.exists()


def fake_run(out, config):
    """A run folder with a config.json, a saved checkpoint and TensorBoard events."""
    for sub, name in (("checkpoints", "ckpt-3.index"), ("tb", "events.out.tfevents.1")):
        (out / sub).mkdir(parents=True)
        (out / sub / name).write_bytes(b"saved")
    (out / "config.json").write_text(json.dumps(config))
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


def test_overwrite_with_a_bad_flag_deletes_nothing(capsys, tmp_path, tiny_phantom):
    out = tmp_path / "run"
    files = fake_run(out, {"model": {"ngf": 99}})
    assert_one_error(*run_main(capsys, *tiny_args(tiny_phantom, out), "--overwrite", "--synthmix_k=5"),
                     "--synthmix_k=5")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == files


def test_an_output_dir_that_is_a_file_is_one_error(capsys, tmp_path, tiny_phantom):
    out = tmp_path / "run"
    out.write_text("not a folder")
    assert_one_error(*run_main(capsys, *tiny_args(tiny_phantom, out)), str(out), "is a file")
    assert out.read_text() == "not a folder"


def test_an_output_dir_that_is_not_writable_is_one_error(tmp_path, tiny_phantom):
    """Run as an unprivileged user (a user namespace), for whom the folder's mode counts."""
    if subprocess.run(["unshare", "-U", "true"], capture_output=True, check=False).returncode:
        pytest.skip("unshare -U is not available here")
    parent = tmp_path / "read_only"
    parent.mkdir()
    parent.chmod(0o500)
    out = parent / "run"
    result = subprocess.run(["unshare", "-U", sys.executable, "main.py", *tiny_args(tiny_phantom, out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert_one_error(result.returncode, result.stderr, str(parent), "not writable")
    assert not out.exists()


def test_a_run_folder_in_use_by_another_trainer_is_refused(capsys, tmp_path, tiny_phantom):
    out = tmp_path / "run"
    out.mkdir()
    with subprocess.Popen(["sleep", "60"]) as other:
        lock = json.dumps({"pid": other.pid, "host": os.uname().nodename})
        (out / "train.lock").write_text(lock)
        code, err = run_main(capsys, *tiny_args(tiny_phantom, out))
        other.kill()
    assert_one_error(code, err, str(out), f"process {other.pid}", "train.lock")
    assert sorted(p.name for p in out.iterdir()) == ["train.lock"]
    assert (out / "train.lock").read_text() == lock


def test_phantom_into_a_non_empty_folder_is_one_error(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    result = subprocess.run([sys.executable, "-m", "data_prep.phantom", f"--output_dir={tmp_path}",
                             "--image_size=32"], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert_one_error(result.returncode, result.stderr, str(tmp_path), "not empty")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]


def test_a_missing_compare_folder_is_named_as_missing(capsys, tmp_path):
    absent = tmp_path / "absent_run"
    code, err = run_main(capsys, "--mode=compare", f"--compare_runs={absent}", f"--output_dir={tmp_path / 'out'}")
    assert_one_error(code, err, str(absent), "does not exist")
    assert "evaluate the run first" not in err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_phantom):
    """One tiny run trained through main.py with relative paths (2 steps, a checkpoint after
    each), in ROOT/run, next to the copy of the data it was trained on, ROOT/data."""
    root = tmp_path_factory.mktemp("trained")
    shutil.copytree(tiny_phantom, root / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        code = main_exit_code(TINY_FLAGS, "--data_dir=data", "--output_dir=run", "--max_steps=2", "--save_every=1",
                      "--image_every=1000")
    assert code == 0
    return root


@pytest.fixture
def run_copy(trained_run, tmp_path):
    """A private copy of the trained run and its data, the run's config.json pointed at the copy."""
    root = shutil.copytree(trained_run, tmp_path / "copy")
    config_path = root / "run" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["data"]["data_dir"] = str(root / "data")
    config_path.write_text(json.dumps(config))
    return root


def test_a_run_stores_absolute_paths_and_releases_its_lock(trained_run):
    config = json.loads((trained_run / "run" / "config.json").read_text(encoding="utf-8"))
    assert config["data"]["data_dir"] == str((trained_run / "data").resolve())
    assert config["output_dir"] == str((trained_run / "run").resolve())
    assert not (trained_run / "run" / "train.lock").exists()


def evaluate(capsys, run, *extra):
    code = main_exit_code("--mode=evaluate", f"--output_dir={run}", *extra)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_from_another_folder_scores_the_runs_own_data(capsys, run_copy, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "data").mkdir(parents=True)  # a "data" folder here must not be read
    monkeypatch.chdir(elsewhere)
    code, _, err = evaluate(capsys, run_copy / "run")
    assert code == 0, err
    metrics = json.loads((run_copy / "run" / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert [pathlib.Path(v["path"]).parent for v in metrics["volumes"]] == [run_copy / "data" / "ct" / "test"] * 2


def test_evaluate_records_the_checkpoint_writes_images_and_feeds_tensorboard(capsys, run_copy):
    run = run_copy / "run"
    code, out, err = evaluate(capsys, run, "--write_images")
    assert code == 0, err
    metrics = json.loads((run / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["checkpoint"] == str(run / "checkpoints" / "ckpt-2") and metrics["step"] == 2
    assert f"evaluating {run / 'checkpoints' / 'ckpt-2'} (step 2) on 2 ct test volumes" in out
    names = sorted(pathlib.Path(v["prediction"]).name for v in metrics["volumes"])
    for folder in ("predictions", "images", "ground_truth"):
        assert sorted(p.name for p in (run / "eval" / folder).iterdir()) == names
    assert {"label_colours_itksnap.txt", "label_colours_slicer.ctbl"} <= {p.name for p in (run / "eval").iterdir()}
    values, _ = read_events(run)
    assert float(values["eval/dice_mean"][2]) == pytest.approx(metrics["summary"]["Avg"]["dice_mean"])
    assert float(values["eval/dice_MYO"][2]) == pytest.approx(metrics["summary"]["MYO"]["dice_mean"])
    experiment = hparams_records(run)["_hparams_/experiment"]  # written by the trainer
    assert {"eval/dice_mean", "eval/assd_mean"} <= {info.name.tag for info in experiment.metric_infos}


def test_evaluate_falls_back_from_a_damaged_checkpoint_naming_it(capsys, run_copy):
    damaged = run_copy / "run" / "checkpoints" / "ckpt-2.data-00000-of-00001"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    code, out, err = evaluate(capsys, run_copy / "run")
    assert code == 0, err
    warning = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and str(damaged) in warning[0] and "ckpt-1" in warning[0], out
    assert f"evaluating {run_copy / 'run' / 'checkpoints' / 'ckpt-1'} " in out


def test_a_damaged_checkpoint_given_is_named_damaged(capsys, run_copy):
    damaged = run_copy / "run" / "checkpoints" / "ckpt-1.data-00000-of-00001"
    damaged.write_bytes(damaged.read_bytes()[:-100])
    code, _, err = evaluate(capsys, run_copy / "run", f"--checkpoint={damaged.parent / 'ckpt-1'}")
    assert_one_error(code, err, str(damaged), "damaged")
    assert not (run_copy / "run" / "eval").exists()


def test_a_missing_checkpoint_given_is_named_missing(capsys, run_copy):
    absent = run_copy / "run" / "checkpoints" / "ckpt-7"
    code, _, err = evaluate(capsys, run_copy / "run", f"--checkpoint={absent}")
    assert_one_error(code, err, str(absent), "does not exist")
    assert "damaged" not in err


@pytest.mark.parametrize("change, parts", [
    (lambda d: (d / "stats.json").write_text(json.dumps({"mr": {"min": -1, "max": 3}, "ct": {"min": -2, "max": 5}})),
     ("ct range (target)", "[-2.0, 5.0] now")),
    (lambda d: (d / "dataset.json").write_text(json.dumps(
        {**json.loads((d / "dataset.json").read_text()), "class_names": ["bg", "a", "b", "c", "d"]})),
     ("class_names",)),
], ids=["stats", "class names"])
def test_evaluate_refuses_data_that_differ_from_trainings(capsys, run_copy, change, parts):
    change(run_copy / "data")
    code, _, err = evaluate(capsys, run_copy / "run")
    assert_one_error(code, err, str(run_copy / "data"), "not the data", "refusing to evaluate", *parts)
    assert not (run_copy / "run" / "eval").exists()


def write_npz_truncated(path):
    path.write_bytes(path.read_bytes()[:-50])


def write_npz_with_nonfinite_voxels(path):
    with np.load(path) as arrays:
        image, labels = arrays["arr_0"].copy(), arrays["arr_1"]
    image.flat[[0, 5, 9]] = np.nan
    image.flat[11] = np.inf
    np.savez_compressed(path, arr_0=image, arr_1=labels)


def write_npz_of_another_slice_size(path):
    with np.load(path) as arrays:
        image, labels = arrays["arr_0"][:16, :16], arrays["arr_1"][:16, :16]
    np.savez_compressed(path, arr_0=image, arr_1=labels)


@pytest.mark.parametrize("damage, parts", [
    (write_npz_truncated, ("not a readable test volume",)),
    (write_npz_with_nonfinite_voxels, ("4 NaN or infinite voxels",)),
    (write_npz_of_another_slice_size, ("16 x 16 slices, but the model takes 32 x 32 (--image_size)",)),
], ids=["truncated npz", "nan voxels", "slice size"])
def test_a_bad_test_volume_is_named_and_an_earlier_evaluation_kept(capsys, run_copy, damage, parts):
    run = run_copy / "run"
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")  # stands for an earlier evaluation
    bad = sorted((run_copy / "data" / "ct" / "test").glob("*.npz"))[-1]
    damage(bad)
    code, _, err = evaluate(capsys, run)
    assert_one_error(code, err, str(bad), *parts)
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["metrics.json"]


def folder_contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_overwrite_refused_by_a_bad_record_keeps_the_old_run_and_a_replaced_run_drops_its_eval(
        capsys, run_copy, monkeypatch):
    monkeypatch.chdir(REPO)
    run, data = run_copy / "run", run_copy / "data"
    (run / "eval").mkdir()
    (run / "eval" / "metrics.json").write_text("{}")  # stands for the old run's evaluation
    before = {k: v for k, v in folder_contents(run).items() if k != "train.log"}
    bad = next((data / "mr" / "train").glob("*.tfrecords"))
    good = bad.read_bytes()
    records.write_records(bad, [(np.zeros((32, 32, 3)), np.full((32, 32, 3), 205.0, np.float32))])
    replace = (*tiny_args(data, run), "--max_steps=1", "--seed=7", "--overwrite")
    assert_one_error(*run_main(capsys, *replace), str(bad), "label values outside")
    assert {k: v for k, v in folder_contents(run).items() if k != "train.log"} == before

    bad.write_bytes(good)
    code, err = run_main(capsys, *replace)
    assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == ["adaptation_signal.json", "checkpoints", "config.json",
                                                     "data_fingerprint.json", "eval_curve.csv", "tb", "train.log"]
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == ["ckpt-1.index"]


def test_a_replacement_killed_before_its_first_checkpoint_is_undone_at_the_next_start(tmp_path, tiny_config):
    from sifa_synthmix.runs.run_folder import (  # pylint: disable=import-outside-toplevel
        RunFolderError, prepare_run_folder)

    out = tmp_path / "run"
    fake_run(out, {"model": {"ngf": 99}})
    (out / "eval").mkdir()
    (out / "eval" / "metrics.json").write_text("{}")
    before = folder_contents(out)
    prepare_run_folder(tiny_config(output_dir=out), overwrite=True, log=lambda _: None)
    assert not (out / "eval").exists() and not (out / "checkpoints").exists()  # then the trainer is killed
    logs = []
    with pytest.raises(RunFolderError, match="--overwrite"):
        prepare_run_folder(tiny_config(output_dir=out), log=logs.append)
    assert folder_contents(out) == before
    assert logs == [f"{out}: put back the run that --overwrite was replacing (the new run saved no checkpoint)"]


@pytest.mark.parametrize("names", [["bg", "a", "b", "c", "d", "phantom"], ["bg", "a", "b"]],
                         ids=["too many", "too few"])
def test_evaluate_refuses_class_names_that_are_not_num_classes(capsys, run_copy, names):
    """Also for a run trained before the data fingerprint (which would name the change) existed."""
    (run_copy / "run" / "data_fingerprint.json").unlink()
    edit_info(run_copy / "data", class_names=names)
    code, _, err = evaluate(capsys, run_copy / "run")
    assert_one_error(code, err, str(run_copy / "data" / "dataset.json"), f"{len(names)} class names",
                     "--num_classes is 5")
    assert not (run_copy / "run" / "eval").exists()


@pytest.mark.parametrize("value", [7, -1, 1.5])
def test_evaluate_refuses_test_labels_outside_the_classes(capsys, run_copy, value):
    bad = sorted((run_copy / "data" / "ct" / "test").glob("*.npz"))[-1]
    with np.load(bad) as arrays:
        image, labels = arrays["arr_0"], arrays["arr_1"].astype(np.float32)
    labels[0, 0, 0] = value
    np.savez_compressed(bad, arr_0=image, arr_1=labels)
    code, _, err = evaluate(capsys, run_copy / "run")
    assert_one_error(code, err, str(bad), "label values outside the classes 0..4", f"[{float(value)}]")
    assert not (run_copy / "run" / "eval").exists()


def test_an_evaluation_stopped_midway_leaves_the_previous_one_whole(run_copy, monkeypatch):
    """As a SIGKILL would: eval/ must not mix the predictions of two checkpoints."""
    from sifa_synthmix.evaluation import report  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.evaluation.run_evaluation import evaluate_run  # pylint: disable=import-outside-toplevel

    run = run_copy / "run"
    (run / "eval" / "predictions").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text("{}")  # stands for an earlier evaluation
    for volume in (run_copy / "data" / "ct" / "test").glob("*.npz"):
        (run / "eval" / "predictions" / volume.name.replace(".npz", ".nii.gz")).write_bytes(b"earlier")
    before = folder_contents(run / "eval")

    def stopped(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(report.label_files, "write_colour_tables", stopped)  # after every prediction
    with pytest.raises(KeyboardInterrupt):
        evaluate_run(run, log=lambda _: None)
    assert folder_contents(run / "eval") == before
    assert sorted(p.name for p in run.iterdir() if p.name.split(".")[0] == "eval") == ["eval"]


def test_a_second_evaluation_of_a_run_is_refused_and_clears_nothing(capsys, run_copy):
    """Two evaluations of one run at once would share eval.partial/: the second is refused while
    the first holds the run's evaluation lock (a live process on this host; here, this one)."""
    run = run_copy / "run"
    (run / "eval.partial").mkdir()
    (run / "eval.partial" / "metrics.json").write_text("being written")
    (run / "eval.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    code, _, err = evaluate(capsys, run)
    assert_one_error(code, err, f"{run} is being evaluated by process {os.getpid()}", "eval.lock")
    assert (run / "eval.partial" / "metrics.json").read_text() == "being written"
    (run / "eval.lock").unlink()
    assert evaluate(capsys, run)[0] == 0
    assert sorted(p.name for p in run.iterdir() if p.name.split(".")[0] == "eval") == ["eval"]


def test_a_full_disk_at_a_save_is_one_line_naming_the_space_and_leaves_no_partial_files(
        capsys, tmp_path, tiny_phantom, monkeypatch):
    """A full disk fails the second save (after TensorFlow wrote part of ckpt-2_temp/) and the
    end-of-session TensorBoard record; a ckpt-9_temp/ of an earlier killed save is cleared at start."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sifa_synthmix.training.tensorboard_summaries import RunSummaries  # pylint: disable=import-outside-toplevel

    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    (out / "checkpoints" / "ckpt-9_temp").mkdir(parents=True)
    (out / "checkpoints" / "ckpt-9_temp" / "part-00000-of-00001.index").write_bytes(b"killed while saving")
    original_save = tf.train.CheckpointManager.save

    def save(manager, checkpoint_number=None, **kwargs):
        if checkpoint_number == 2:
            temp = pathlib.Path(manager.directory) / "ckpt-2_temp"
            temp.mkdir()
            (temp / "part-00000-of-00001.data-00000-of-00001").write_bytes(bytes(3_000_000))
            raise tf.errors.ResourceExhaustedError(None, None, f"{temp}/part; No space left on device")
        return original_save(manager, checkpoint_number=checkpoint_number, **kwargs)

    def no_space(*_):
        raise tf.errors.ResourceExhaustedError(None, None, "events file; No space left on device")

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    monkeypatch.setattr(RunSummaries, "write_session_end", no_space)
    code, err = run_main(capsys, *tiny_args(tiny_phantom, out), "--max_steps=2", "--save_every=1")
    assert_one_error(code, err, f"{out / 'checkpoints'}: no space left to save checkpoint ckpt-2", "MB free there",
                     "needs about", "(the size of")
    log = (out / "train.log").read_text(encoding="utf-8").splitlines()
    assert any(f"removed {out / 'checkpoints' / 'ckpt-9_temp'} " in line and "did not finish" in line
               for line in log), log
    assert "error: " in log[-1] and "no space left to save checkpoint ckpt-2" in log[-1], log
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index"]
    assert not list(out.rglob("*.tmp"))


def test_a_full_disk_while_writing_a_file_leaves_no_temporary_file(capsys, tmp_path, tiny_phantom, monkeypatch):
    import errno  # pylint: disable=import-outside-toplevel

    monkeypatch.chdir(REPO)
    out = tmp_path / "run"
    original_write = pathlib.Path.write_bytes

    def write_bytes(path, data):
        if path.name.endswith(".tmp"):
            original_write(path, data[:len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original_write(path, data)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)
    assert_one_error(*run_main(capsys, *tiny_args(tiny_phantom, out)), "No space left on device",
                     str(out / "config.json.tmp"))
    assert not list(out.rglob("*.tmp"))


@pytest.mark.parametrize("change, parts", [
    (lambda d: (d / "stats.json").write_text(json.dumps({**json.loads((d / "stats.json").read_text()),
                                                         "ct": {"min": -30, "max": 50}})),
     ("ct range (target)", "[-30.0, 50.0] now")),
    (lambda d: edit_info(d, class_names=None), ("class_names", "None now")),
], ids=["stats tenfold", "class names removed"])
def test_resume_refuses_data_that_differ_from_trainings_and_changes_nothing(capsys, run_copy, monkeypatch, change,
                                                                             parts):
    monkeypatch.chdir(REPO)
    run, data = run_copy / "run", run_copy / "data"
    before = folder_contents(run)
    change(data)
    code, err = run_main(capsys, *tiny_args(data, run), "--max_steps=3", "--save_every=1", "--image_every=1000")
    assert_one_error(code, err, str(data), f"not the data {run} was trained on", "refusing to resume", *parts)
    assert folder_contents(run) == before


def test_a_flag_given_twice_with_the_same_value_is_accepted():
    assert main.flags_given_twice(["main.py", "--max_steps=3", "--max_steps", "03", "--overwrite",
                                   "--overwrite=true", "--flagfile=a.flags", "--flagfile", "b.flags"]) is None


def test_a_data_dir_that_is_a_file_or_a_symlink_loop_is_named_as_such(capsys, tmp_path, tiny_phantom):
    a_file, loop = tmp_path / "data.txt", tmp_path / "loop"
    a_file.write_text("not data")
    loop.symlink_to(loop)
    out = tmp_path / "run"
    assert_one_error(*run_main(capsys, *tiny_args(a_file, out)), str(a_file), "--data_dir is a file, not a folder")
    assert_one_error(*run_main(capsys, *tiny_args(loop / "data", out)), str(loop / "data"),
                     "--data_dir is a symbolic link loop")
    assert_one_error(*run_main(capsys, *tiny_args(tiny_phantom, loop / "run")), str(loop / "run"),
                     "--output_dir is a symbolic link loop")
    assert not out.exists()


def edit_json(path, change):
    """Rewrites the JSON file at `path` as `change(its content)` returns it."""
    path.write_text(json.dumps(change(json.loads(path.read_text(encoding="utf-8")))), encoding="utf-8")


def a_scan(folder):
    """A NIfTI scan of noise in `folder`, for --predict_input."""
    import nibabel as nib  # pylint: disable=import-outside-toplevel

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(40, 40, 3)).astype(np.float32), np.eye(4)),
             str(path))
    return path


def use_the_run(capsys, root, mode, *extra):
    """(exit code, stdout, stderr) of predict, export or evaluate of ROOT/run."""
    run, out = root / "run", root / f"{mode}_out"
    argv = {"predict": (f"--predict_input={a_scan(root / 'scans')}", f"--predictions_dir={out}"),
            "export": (f"--export_dir={out}",), "evaluate": ()}[mode]
    code = main_exit_code(f"--mode={mode}", f"--output_dir={run}", *argv, *extra)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def swap_class_names(fingerprint):
    names = fingerprint["class_names"]
    return {**fingerprint, "class_names": [names[0], names[2], names[1], *names[3:]]}


@pytest.mark.parametrize("mode", ["predict", "export", "evaluate"])
@pytest.mark.parametrize("edit, parts", [
    (lambda run: edit_json(run / "config.json", lambda c: {**c, "model": {**c["model"], "image_size": 64}}),
     ("config.json: image_size is 64, but the run was trained on 32 x 32 slices", '"image_size": 32')),
    (lambda run: edit_json(run / "config.json", lambda c: {**c, "model": {**c["model"], "num_classes": 6}}),
     ("config.json: num_classes is 6, but the run was trained on 5 classes", '"num_classes": 5')),
    (lambda run: edit_json(run / "data_fingerprint.json", swap_class_names),
     ("data_fingerprint.json: edited after training",)),
    (lambda run: (run / "data_fingerprint.json").write_text("{not json"), ("data_fingerprint.json: not valid JSON",)),
    (lambda run: (run / "data_fingerprint.json").write_text("[1, 2]"),
     ("data_fingerprint.json: not a JSON object", "got list")),
    (lambda run: (run / "config.json").write_text("{not json"), ("config.json: not valid JSON",)),
    (lambda run: edit_json(run / "config.json", lambda c: {**c, "colour": "red"}),
     ("config.json: not a run's config", "unknown setting(s) colour")),
    (lambda run: edit_json(run / "config.json", lambda c: {**c, "model": {**c["model"], "depth": 3}}),
     ("config.json: not a run's config", "unknown setting(s) model.depth")),
], ids=["image_size", "num_classes", "swapped class names", "fingerprint not JSON", "fingerprint a list",
        "config not JSON", "unknown key", "unknown model key"])
def test_an_edited_run_folder_is_refused_before_any_checkpoint_is_read(capsys, run_copy, mode, edit, parts):
    edit(run_copy / "run")
    code, _, err = use_the_run(capsys, run_copy, mode)
    assert_one_error(code, err, str(run_copy / "run"), *parts)
    assert not (run_copy / f"{mode}_out").exists() and not (run_copy / "run" / "eval").exists()


def test_an_edited_num_classes_without_a_fingerprint_names_the_tensor_that_does_not_fit(capsys, run_copy):
    run = run_copy / "run"
    (run / "data_fingerprint.json").unlink()
    edit_json(run / "config.json", lambda c: {**c, "model": {**c["model"], "num_classes": 6}})
    code, _, err = use_the_run(capsys, run_copy, "export", "--target_range=-1,2")
    assert_one_error(code, err, "of shape (1, 1, 64, 5)", "num_classes=6", "need (1, 1, 64, 6)",
                     "config.json was edited after training")
    assert "the file may be damaged" not in err


def copy_checkpoint(checkpoints, number, new_number):
    for path in checkpoints.glob(f"ckpt-{number}.*"):
        shutil.copy(path, checkpoints / path.name.replace(f"ckpt-{number}.", f"ckpt-{new_number}."))


def rotate(checkpoints):
    """What a trainer with --keep_checkpoints=1 does at its next save: ckpt-3 saved, ckpt-2 deleted."""
    copy_checkpoint(checkpoints, 2, 3)
    for path in checkpoints.glob("ckpt-2.*"):
        path.unlink()


@pytest.mark.parametrize("mode", ["predict", "export", "evaluate"])
@pytest.mark.parametrize("when", ["while verified", "before restored"])
def test_a_checkpoint_the_trainer_rotates_away_while_it_is_read_gives_way_to_the_new_one(
        capsys, run_copy, monkeypatch, mode, when):
    from sifa_synthmix.runs import checkpoint_files  # pylint: disable=import-outside-toplevel

    checkpoints = run_copy / "run" / "checkpoints"
    patched = "verify" if when == "while verified" else "newest_intact"
    original = getattr(checkpoint_files, patched)

    def rotating(prefix, *args):
        if not (checkpoints / "ckpt-3.index").exists():
            if patched == "verify":
                rotate(checkpoints)
            else:
                prefix = original(prefix, *args)  # ckpt-2, read in full; rotated away before the restore
                rotate(checkpoints)
                return prefix
        return original(prefix, *args)

    monkeypatch.setattr(checkpoint_files, patched, rotating)
    code, out, err = use_the_run(capsys, run_copy, mode)
    assert code == 0 and "damaged" not in out + err, err
    assert f"{checkpoints / 'ckpt-3'} (step 2)" in out, out  # the step its content holds (a copy of ckpt-2's)


def test_a_checkpoint_deleted_under_every_read_is_one_error_line_not_damage(capsys, run_copy, monkeypatch):
    from sifa_synthmix.runs import checkpoint_files  # pylint: disable=import-outside-toplevel

    checkpoints = run_copy / "run" / "checkpoints"
    monkeypatch.setattr(checkpoint_files, "newest_first", lambda directory: [str(checkpoints / "ckpt-9")])
    code, _, err = use_the_run(capsys, run_copy, "predict")
    assert_one_error(code, err, f"{checkpoints}: the newest checkpoint was deleted while it was read, 5 times in a row")
    assert "damaged" not in err


@pytest.mark.parametrize("mode, use", [("predict", "to predict with"), ("export", "to export"),
                                       ("evaluate", "to evaluate")])
def test_a_run_still_training_is_named_with_its_lock(capsys, run_copy, mode, use):
    run = run_copy / "run"
    lock = run / "train.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}))
    training = f"being trained by process {os.getpid()} on {socket.gethostname()} (lock file {lock})"
    code, out, err = use_the_run(capsys, run_copy, mode)
    assert code == 0, err
    assert f"note: {run} is still {training}; using its newest checkpoint, {run / 'checkpoints' / 'ckpt-2'} " \
           "(step 2)" in out, out
    for path in (run / "checkpoints").glob("ckpt-*"):
        path.unlink()
    shutil.rmtree(run_copy / f"{mode}_out", ignore_errors=True)
    code, _, err = use_the_run(capsys, run_copy, mode)
    assert_one_error(code, err, f"no checkpoint {use} yet; the run is {training}: wait for its first checkpoint "
                                "(every --save_every=1 steps)")
    lock.unlink()
    code, _, err = use_the_run(capsys, run_copy, mode)
    assert_one_error(code, err, f"{run / 'checkpoints'}: no checkpoint {use} yet; train the run first")


@pytest.fixture(scope="module")
def raw_scans(tmp_path_factory):
    """A tiny raw phantom (NIfTI, nnU-Net layout) for python -m data_prep.folder."""
    from data_prep import phantom  # pylint: disable=import-outside-toplevel

    raw = tmp_path_factory.mktemp("raw") / "raw"
    phantom.write_raw(raw, image_size=32, counts={"mr_train": 2, "ct_train": 2, "mr_val": 0, "ct_val": 0,
                                                  "mr_test": 1, "ct_test": 1})
    return raw


def convert(capsys, raw, out, *extra):
    """(exit code, stdout, stderr) of the folder converter's command line, in-process (imported
    before any test captures stderr: the converter's progress stream is bound at import)."""
    with pytest.raises(SystemExit) as stop:
        exit_on_bad_input(folder.main, ["--mr_dir", str(raw / "mr"), "--ct_dir", str(raw / "ct"),
                                        "--output_dir", str(out), "--image_size", "32", *extra])
        sys.exit(0)
    captured = capsys.readouterr()
    return stop.value.code, captured.out, captured.err


def rewrite_scan(path, change):
    """Writes the NIfTI at `path` again as `change(array, affine)` returns them, header and all."""
    import nibabel as nib  # pylint: disable=import-outside-toplevel

    scan = nib.load(str(path))
    array, affine = change(np.asarray(scan.dataobj), scan.affine.copy())
    image = nib.Nifti1Image(array, None)
    image.header.set_qform(None, code=0)
    image.header.set_sform(affine, code=1)  # as written, even when no grid fits it
    path.unlink()
    nib.save(image, str(path))


def zero_spacing(array, affine):
    affine[:3, 1] = 0
    return array, affine


def link_loop(path):
    path.unlink()
    path.symlink_to(path)


RAW_DAMAGE = {
    "zero spacing": (lambda raw: rewrite_scan(raw / "ct" / "imagesTr" / "ct_train_00_0000.nii.gz", zero_spacing),
                     ("ct_train_00_0000.nii.gz", "places the voxels on no 3D grid", "voxel spacing [8.125, 0.0")),
    "one row": (lambda raw: rewrite_scan(raw / "ct" / "imagesTr" / "ct_train_01_0000.nii.gz",
                                         lambda array, affine: (array[:1], affine)),
                ("ct_train_01_0000.nii.gz", "shape (1, 32, 16) has a single row, column or slice")),
    "symbolic link loop": (lambda raw: link_loop(raw / "mr" / "labelsTr" / "mr_train_01.nii.gz"),
                           ("mr_train_01.nii.gz", "a symbolic link loop, not a scan")),
}


@pytest.mark.parametrize("case", sorted(RAW_DAMAGE))
def test_a_scan_whose_geometry_cannot_be_used_is_named(capsys, raw_scans, tmp_path, case):
    damage, parts = RAW_DAMAGE[case]
    raw = shutil.copytree(raw_scans, tmp_path / "raw", symlinks=True)
    damage(raw)
    code, _, err = convert(capsys, raw, tmp_path / "out")
    assert_one_error(code, err, *parts)
    assert not list(tmp_path.glob("out*"))


def unreadable_labels(monkeypatch, raw):
    iterdir = pathlib.Path.iterdir

    def refusing(path):
        if path.name == "labelsTr":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return iterdir(path)

    monkeypatch.setattr(pathlib.Path, "iterdir", refusing)
    return (f"{raw / 'mr' / 'labelsTr'}: Permission denied",)


def full_disk_for_records(monkeypatch, raw):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    def writer(path, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, f"{path}; No space left on device")

    monkeypatch.setattr(tf.io, "TFRecordWriter", writer)
    return ("tfrecords", "No space left on device")


def full_disk_for_test_volumes(monkeypatch, raw):
    def savez(path, **arrays):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(np, "savez_compressed", savez)
    return ("mr_test_00.npz.tmp.npz: No space left on device",)


def read_only_disk(monkeypatch, raw):
    mkdir = pathlib.Path.mkdir

    def refusing(path, *args, **kwargs):
        if ".partial-" in path.name:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return mkdir(path, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", refusing)
    return (".partial-", "Read-only file system")


def another_converter_first(monkeypatch, raw):
    from sifa_synthmix.data import layout  # pylint: disable=import-outside-toplevel

    finish = layout.PreparedDatasetWriter.finish

    def finish_after_another(writer):
        out = writer.layout.root.parent / "out"
        out.mkdir()
        (out / "dataset.json").write_text("{}")  # the other converter was quicker
        return finish(writer)

    monkeypatch.setattr(layout.PreparedDatasetWriter, "finish", finish_after_another)
    return ("out: filled by another process while this one wrote", "this one's output is discarded")


@pytest.mark.parametrize("system", [unreadable_labels, full_disk_for_records, full_disk_for_test_volumes,
                                    read_only_disk, another_converter_first],
                         ids=lambda system: system.__name__)
def test_a_file_the_system_refuses_is_one_error_line_and_leaves_no_partial_folder(capsys, raw_scans, tmp_path,
                                                                                 monkeypatch, system):
    parts = system(monkeypatch, raw_scans)
    code, _, err = convert(capsys, raw_scans, tmp_path / "out")
    assert_one_error(code, err, *parts)
    assert not list(tmp_path.glob("out.partial-*"))
    assert system is another_converter_first or not (tmp_path / "out").exists()


def test_an_output_folder_that_is_a_file_or_the_current_folder_is_refused(capsys, raw_scans, run_copy, tmp_path,
                                                                          monkeypatch):
    a_file = tmp_path / "out"
    a_file.write_text("mine")
    code, _, err = convert(capsys, raw_scans, a_file)
    assert_one_error(code, err, f"{a_file}: a file, not a folder")
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    code, _, err = convert(capsys, raw_scans, ".")
    assert_one_error(code, err, f"{here}: the current folder", "name a new folder inside it")
    code, _, err = use_the_run(capsys, run_copy, "export")  # a first export into ROOT/export_out, then:
    assert code == 0, err
    code = main_exit_code("--mode=export", f"--output_dir={run_copy / 'run'}", "--export_dir=.")
    assert_one_error(code, capsys.readouterr().err, f"{here}: the current folder")
    assert a_file.read_text() == "mine" and not list(here.iterdir()) and not list(tmp_path.glob("*.partial-*"))


def test_an_export_on_a_full_disk_is_one_error_line_and_leaves_nothing(capsys, run_copy, monkeypatch):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    def full(module, folder, *args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, f"{{{{function_node __wrapped__SaveV2}}}} {folder}/variables"
                                               "/variables_temp; No space left on device [Op:SaveV2]")

    monkeypatch.setattr(tf.saved_model, "save", full)
    code, _, err = use_the_run(capsys, run_copy, "export")
    assert_one_error(code, err, "variables_temp; No space left on device")
    assert "function_node" not in err and "[Op:" not in err
    assert not list(run_copy.glob("export_out*"))


def dead_process_id():
    process = subprocess.Popen([sys.executable, "-c", ""])
    process.wait()
    return process.pid


def test_a_staging_folder_left_by_a_killed_converter_is_removed_and_named(capsys, raw_scans, tmp_path):
    left = tmp_path / f"out.partial-{dead_process_id()}"
    (left / "mr").mkdir(parents=True)
    code, out, err = convert(capsys, raw_scans, tmp_path / "out")
    assert code == 0, err
    assert f"removed {left}, left unfinished by process" in out and not left.exists()
    assert (tmp_path / "out" / "dataset.json").is_file()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_converter_stopped_by_a_signal_says_so_in_one_line_and_leaves_nothing(raw_scans, tmp_path, signum):
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "data_prep.folder", "--mr_dir", str(raw_scans / "mr"),
                                "--ct_dir", str(raw_scans / "ct"), "--output_dir", str(out), "--image_size", "32"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while process.poll() is None and not any(path.is_file() for staging in tmp_path.glob("out.partial-*")
                                             for path in staging.rglob("*")):
        time.sleep(0.005)  # stopped once it has written a file
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert process.returncode == 128 + signum and errors == [f"error: stopped by {signum.name}"], err
    assert "Traceback" not in err and not list(tmp_path.iterdir())


def test_a_run_continues_with_only_the_flags_that_change(capsys, run_copy):
    """Its config.json stands for the defaults (tiny widths, float32, the copy's data) and the
    flags given change it, where they may: a new --max_steps continues the run."""
    run = run_copy / "run"
    code, err = run_main(capsys, f"--output_dir={run}", "--max_steps=3")
    assert code == 0, err
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["schedule"]["max_steps"] == 3 and config["model"]["ngf"] == 4 and config["data"]["data_dir"] == str(
        run_copy / "data")
    assert (run / "checkpoints" / "ckpt-3.index").is_file()
    code, err = run_main(capsys, f"--output_dir={run}", "--max_steps=4", "--ngf=8")
    assert_one_error(code, err, "holds a run with other flags (model.ngf: 4 -> 8)", "--overwrite")
    assert not (run / "checkpoints" / "ckpt-4.index").exists()


@pytest.mark.parametrize("mode", ["predict", "export", "evaluate"])
def test_an_experiment_folder_given_as_a_run_names_its_runs(capsys, run_copy, mode):
    experiment = run_copy / "experiment"
    for run in ("sifa", "oracle/seed1", "oracle/seed2"):
        (experiment / run).mkdir(parents=True)
        shutil.copy(run_copy / "run" / "config.json", experiment / run / "config.json")
    shutil.move(run_copy / "run", run_copy / "trained")
    (run_copy / "run").symlink_to(experiment)  # use_the_run passes ROOT/run
    code, _, err = use_the_run(capsys, run_copy, mode)
    runs = ", ".join(str(run_copy / "run" / run) for run in ("oracle/seed1", "oracle/seed2", "sifa"))
    assert_one_error(code, err, f"{run_copy / 'run'}: not a run folder (no config.json); it holds the runs {runs}: "
                                "pass one as --output_dir")


HELP_WITHOUT_TENSORFLOW = """
import runpy, sys
sys.argv = ["main.py", "--help"]
try:
    runpy.run_path("main.py", run_name="__main__")
except SystemExit as stop:
    assert stop.code == 0, stop.code
assert "tensorflow" not in sys.modules
"""


def test_help_comes_before_tensorflow_and_the_converters_describe_themselves_whole(capsys):
    result = subprocess.run([sys.executable, "-c", HELP_WITHOUT_TENSORFLOW], cwd=REPO, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0 and "--image_size" in result.stdout, result.stderr[-2000:]
    with pytest.raises(SystemExit):
        folder.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "Your own scans in the prepared-data layout: any folder of NIfTI / NRRD / MHA files or DICOM series per " \
           "modality, the target's (or any) scans with or without labels." in text
    assert "crop width and height, pixels (default: 256)" in text
