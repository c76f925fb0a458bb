"""Bad input on the command line: one 'error: ...' line naming the file and problem, exit code 2,
and nothing of an existing run overwritten."""
import json
import shutil

import numpy as np
import pytest

import main
from sifa_synthmix.data import records


def run_main(capsys, *argv):
    """Runs main.py in-process; returns (exit code, stderr)."""
    main.FLAGS.unparse_flags()
    with pytest.raises(SystemExit) as caught:
        main.main(main.parse_flags(["main.py", *argv]))
    return caught.value.code, capsys.readouterr().err


@pytest.fixture
def data_copy(tiny_phantom, tmp_path):
    """A private copy of the tiny phantom, free to damage."""
    return shutil.copytree(tiny_phantom, tmp_path / "data")


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
], ids=["empty datalist", "missing record", "stats without modality", "truncated file"])
def test_bad_data_is_one_error_and_writes_nothing(capsys, tmp_path, data_copy, monkeypatch, damage, parts):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    damage(data_copy)
    out = tmp_path / "run"
    assert_one_error(*run_main(capsys, *tiny_args(data_copy, out)), *parts)
    assert not out.exists()


def test_a_record_of_the_wrong_size_is_named(capsys, tmp_path, data_copy, monkeypatch):
    """Found while reading, after the run folder exists: its message still names the file."""
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    bad = next((data_copy / "ct" / "train").glob("*.tfrecords"))
    records.write_records(bad, [(np.zeros((16, 16, 3)), np.zeros((16, 16, 3)))])
    assert_one_error(*run_main(capsys, *tiny_args(data_copy, tmp_path / "run"), "--max_steps=1"),
                     str(bad), "should hold")


def test_an_output_dir_holding_another_run_is_left_alone(capsys, tmp_path, tiny_phantom, monkeypatch):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    out = tmp_path / "run"
    out.mkdir()
    saved = json.dumps({"model": {"image_size": 32, "ngf": 99}}) + "\n"
    (out / "config.json").write_text(saved)
    assert_one_error(*run_main(capsys, *tiny_args(tiny_phantom, out)), "model.ngf: 99 -> 4", "--overwrite")
    assert (out / "config.json").read_text(encoding="utf-8") == saved


def test_label_values_outside_the_classes_are_named(capsys, tmp_path, data_copy, monkeypatch):
    """Unmapped raw labels (MMWHS 205, 500, ...) would silently train on nothing: an error."""
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    bad = next((data_copy / "mr" / "train").glob("*.tfrecords"))
    label = np.full((32, 32, 3), 205.0, np.float32)
    records.write_records(bad, [(np.zeros((32, 32, 3)), label)])
    assert_one_error(*run_main(capsys, *tiny_args(data_copy, tmp_path / "run"), "--max_steps=1"),
                     str(bad), "label values outside 0..5", "205")


def test_a_corrupt_record_is_named(capsys, tmp_path, data_copy, monkeypatch):
    monkeypatch.chdir(main.pathlib.Path(main.__file__).parent)
    bad = sorted((data_copy / "ct" / "train").glob("*.tfrecords"))[-1]
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF  # inside the first record's data: its checksum no longer matches
    bad.write_bytes(bytes(data))
    assert_one_error(*run_main(capsys, *tiny_args(data_copy, tmp_path / "run"), "--max_steps=1"),
                     str(bad), "corrupt")


def test_a_checkpoint_of_another_architecture_names_the_flag(capsys, tmp_path, tiny_config):
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    from sifa_synthmix.segmenter_task import SegmenterNetworks  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.trainer import prepare_run_folder  # pylint: disable=import-outside-toplevel

    other = tiny_config("--encoder_base=4", output_dir=tmp_path / "other")
    prepare_run_folder(other)
    networks = SegmenterNetworks(other.model)
    saved = tf.train.Checkpoint(e_B=networks.e_B, s_B=networks.s_B).write(str(tmp_path / "other" / "checkpoints" / "ckpt-1"))
    run = prepare_run_folder(tiny_config(output_dir=tmp_path / "run"))
    code, err = run_main(capsys, "--mode=evaluate", f"--output_dir={run}", f"--checkpoint={saved}")
    assert_one_error(code, err, saved, "--encoder_base=4 there, 2 here")
    assert not (run / "eval").exists()
