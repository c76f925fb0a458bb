"""The training loop: a tiny run on the phantom, its TensorBoard events, checkpoints and resuming;
the run folder's identity, lock and damaged checkpoints."""
import dataclasses
import json
import os
import shutil
import socket
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import api_pb2

from sifa_synthmix.data.layout import CARDIAC_CLASSES
from sifa_synthmix.evaluation.learning_curve import read_curve
from sifa_synthmix.runs import checkpoint_files
from sifa_synthmix.runs.run_folder import (LOCK_FILE, RunFolderError, check_run_folder, checkpoint_manager,
                                           load_run_config, prepare_run_folder)
from sifa_synthmix.runs.run_lock import RunLock, RunLockError
from sifa_synthmix.tensorflow_paths import for_tensorflow
from sifa_synthmix.training.task_factory import build_task
from sifa_synthmix.training.reporting import RunReporter
from sifa_synthmix.training.trainer import Trainer
from tensorboard_events import event_values, hparams_records, read_events


SCALAR_TAGS = {
    "loss/g_loss_A", "loss/d_loss_B", "loss/seg_loss", "loss/g_loss_B", "loss/d_loss_A", "loss/d_loss_P",
    "loss/d_loss_P_ll", "loss/seg_ce", "loss/seg_dice", "loss/seg_l2", "loss/seg_ce_ll", "loss/seg_dice_ll",
    "lr/gan", "lr/seg", "dice/fake_B_MR_to_CT", "dice/B_CT_train_batch", "dice/B_CT_val_batch",
    "updates/skipped_updates",
}
IMAGE_TAGS = {"images/A_MR", "images/B_CT", "images/fake_A_CT_to_MR", "images/fake_B_MR_to_CT", "images/cycle_A_MR",
              "images/cycle_B_CT", "masks/train_input_fake_B_MR_to_CT", "masks/B_CT", "legend/classes"}


def weights(trainer):
    return [np.array(v) for scope in trainer.task.networks.SCOPES
            for v in getattr(trainer.task.networks, scope).trainable_variables]


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory, tiny_phantom):
    """Deterministic runs: 4 steps straight, and 2 steps then a restart up to 4; both with the
    learning curve every 2 steps, and TensorFlow's graph optimizer on (its fused kernels), as
    `--graph_optimizer=auto` has it at the paper's scale."""
    from conftest import config_from_argv  # pylint: disable=import-outside-toplevel

    root = tmp_path_factory.mktemp("runs")
    argv = ("--flagfile=configs/tiny_cpu.flags", f"--data_dir={tiny_phantom}", "--deterministic", "--save_every=2",
            "--eval_every=2", "--graph_optimizer=on")
    straight = Trainer(config_from_argv(*argv, f"--output_dir={root / 'straight'}"), log=lambda _: None)
    straight.run()
    logs = []
    first = Trainer(config_from_argv(*argv, f"--output_dir={root / 'resumed'}", "--max_steps=2"), log=logs.append)
    first.run()
    second = Trainer(config_from_argv(*argv, f"--output_dir={root / 'resumed'}"), log=logs.append)
    second.run()
    return straight, second, logs, root


def test_events_hold_losses_dice_images_and_hparams(resume_runs):
    straight, _, _, root = resume_runs
    values, plugins = read_events(root / "straight")
    assert SCALAR_TAGS <= set(values), SCALAR_TAGS - set(values)
    assert IMAGE_TAGS <= set(values), IMAGE_TAGS - set(values)
    assert "hparams" in plugins and "loss/skipped_updates" not in values
    assert sorted(values["loss/g_loss_A"]) == [1, 2, 3, 4]  # --log_every=1
    assert all(np.isfinite(float(v)) for tag in SCALAR_TAGS for v in values[tag].values())
    assert float(values["lr/gan"][4]) == pytest.approx(2e-4)
    assert sorted(values["images/fake_B_MR_to_CT"]) == [2, 4]  # --image_every=2
    assert values["legend/classes"] == {0: 3}  # written once: width, height, one image
    assert int(straight.step) == 4


def test_the_learning_curve_scores_whole_target_volumes_at_its_steps(resume_runs):
    """--eval_every=2: Dice and ASSD on the phantom's CT validation volume at steps 2 and 4, in
    TensorBoard's eval/ and eval_curve.csv; the resumed run's curve is the same as the straight run's."""
    _, _, logs, root = resume_runs
    values, _ = read_events(root / "straight")
    for name in ("mean", *CARDIAC_CLASSES[1:]):
        assert sorted(values[f"eval/val_dice_{name}"]) == [2, 4]
        assert sorted(values[f"eval/val_assd_{name}"]) == [2, 4]
    straight, resumed = (read_curve(root / name) for name in ("straight", "resumed"))
    assert [(row["step"], row["volumes"], row["class"]) for row in straight] == [
        (step, "val", name) for step in (2, 4) for name in (*CARDIAC_CLASSES[1:], "Avg")]
    assert all(0 <= row["dice"] <= 1 for row in straight)
    average = {row["step"]: row["dice"] for row in straight if row["class"] == "Avg"}
    assert float(values["eval/val_dice_mean"][4]) == pytest.approx(average[4])
    assert [(r["step"], r["class"]) for r in resumed] == [(r["step"], r["class"]) for r in straight]
    assert any(line.startswith("step 4: target val Dice") for line in logs)


def test_every_tag_has_a_description_and_masks_show_prediction_beside_truth(resume_runs):
    root = resume_runs[3]
    described = {value.tag: value.metadata.summary_description for _, value in event_values(root / "straight")
                 if not value.tag.startswith("_hparams_/")}
    assert not [tag for tag, text in described.items() if not text or text.startswith("Step metric")]
    assert "legend/classes" in described["masks/B_CT"] and "CT" in described["images/fake_B_MR_to_CT"]
    for _, value in event_values(root / "straight"):
        if value.tag == "masks/B_CT":
            width, height = (int(v) for v in tf.make_ndarray(value.tensor)[:2])
            assert (width, height) == (64, 32)  # prediction | truth at 32 x 32


def test_hparams_name_the_evaluation_metrics_keep_integers_and_end_the_session(resume_runs):
    root = resume_runs[3]
    records = hparams_records(root / "straight")
    experiment = records["_hparams_/experiment"]
    metrics = {info.name.tag for info in experiment.metric_infos}
    assert {"eval/dice_mean", "eval/assd_mean", "loss/seg_loss", "loss/g_loss_A"} <= metrics
    domains = {info.name: info for info in experiment.hparam_infos}
    assert domains["model.image_size"].WhichOneof("domain") == "domain_interval"
    assert domains["model.skip"].WhichOneof("domain") == "domain_discrete"
    assert not {"output_dir", "data.data_dir", "log_every", "save_every"} & set(domains)
    start = records["_hparams_/session_start_info"]
    assert start.hparams["model.image_size"].number_value == 32 and start.hparams["max_steps"].number_value == 4
    assert records["_hparams_/session_end_info"].status == api_pb2.STATUS_SUCCESS


def test_the_run_tells_what_it_does_and_keeps_it_in_train_log(resume_runs):
    _, _, logs, root = resume_runs
    lines = (root / "resumed" / "train.log").read_text(encoding="utf-8").splitlines()
    texts = [line.split(" ", 2)[2] for line in lines]  # without the date and time
    assert texts == logs  # both sessions, appended
    for start in ("run folder: ", "data: ", "model: SIFA, ", "building the training step", "first step took",
                  f"saved {root / 'resumed' / 'checkpoints' / 'ckpt-2'}", "finished: step 2 of 2",
                  f"resumed {root / 'resumed' / 'checkpoints' / 'ckpt-2'} at step 2", "finished: step 4 of 4"):
        assert any(text.startswith(start) for text in texts), start
    assert "training slices: source MR 40, target CT 39, target validation 14" in texts[1]


def test_checkpoints_and_flags_are_saved(resume_runs):
    straight, _, _, root = resume_runs
    run_dir = root / "straight"
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]
    assert load_run_config(run_dir) == straight.cfg
    assert json.loads((run_dir / "config.json").read_text(encoding="utf-8"))["model"]["image_size"] == 32


def test_restart_resumes_at_the_saved_step_and_matches_an_uninterrupted_run(resume_runs):
    straight, resumed, logs, root = resume_runs
    assert any("resumed" in line and "at step 2" in line for line in logs)
    straight_values, _ = read_events(root / "straight")
    resumed_values, _ = read_events(root / "resumed")
    for tag in ("loss/g_loss_A", "loss/seg_loss", "loss/d_loss_A", "loss/d_loss_P_ll"):
        for step in (3, 4):
            assert float(resumed_values[tag][step]) == pytest.approx(float(straight_values[tag][step]), rel=1e-5)
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(straight.task.pool_A.images.numpy(), resumed.task.pool_A.images.numpy())


def test_an_output_dir_with_other_flags_is_refused_unless_overwrite(resume_runs, tiny_config):
    _, _, _, root = resume_runs
    other = tiny_config("--ngf=8", output_dir=root / "straight")
    with pytest.raises(RunFolderError, match="model.ngf: 4 -> 8"):
        Trainer(other).run()
    assert sorted(p.name for p in (root / "straight" / "checkpoints").glob("*.index")) == ["ckpt-2.index", "ckpt-4.index"]


def test_too_many_nonfinite_steps_in_a_row_stop_the_run(tiny_config):
    from sifa_synthmix.training.trainer import NonFiniteError  # pylint: disable=import-outside-toplevel

    trainer = Trainer(tiny_config("--max_nonfinite=2"), log=lambda _: None)
    trainer.nonfinite_in_a_row = 0
    trainer.manager = type("Manager", (), {"latest_checkpoint": "ckpt-4"})()
    trainer._check_finite(5, {"skipped_updates": 3})
    trainer._check_finite(6, {"skipped_updates": 0})  # a good step resets the count
    trainer._check_finite(7, {"skipped_updates": 1})
    with pytest.raises(NonFiniteError, match="2 steps in a row.*last good checkpoint is ckpt-4"):
        trainer._check_finite(8, {"skipped_updates": 7})


def test_float16_loss_scales_and_overflows_are_logged(tiny_config, tmp_path):
    """Without training: the scalars of a step under mixed_float16 (a segmenter, cheap to build)."""
    cfg = tiny_config("--model=segmenter", "--precision=mixed_float16")
    try:
        task = build_task(cfg)
        reporter = RunReporter(cfg, tmp_path, task, task.predict_logits, CARDIAC_CLASSES, log=lambda _: None)
        reporter.writer = tf.summary.create_file_writer(str(tmp_path / "tb"))
        batch = (tf.zeros([2, 32, 32, 1]), tf.one_hot(tf.zeros([2, 32, 32], tf.int32), 5))
        metrics = {"seg_loss": 1.5, "skipped_updates": 0, "loss_scale_overflows": 1}
        reporter.write_scalars(3, metrics, batch)
        reporter.writer.flush()
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    values, _ = read_events(tmp_path)
    assert float(values["loss_scale/seg"][3]) == 2.0 ** 15
    assert int(values["updates/loss_scale_overflows"][3]) == 1 and "loss/loss_scale_overflows" not in values
    assert reporter.progress(3, 0.5, metrics, overflows=2).endswith("| 2 loss-scale overflow(s) since the last line")
    assert "overflow" not in reporter.progress(3, 0.5, metrics, overflows=0)


def test_deterministic_runs_repeat_exactly(resume_runs):
    """Two --deterministic runs with one seed: the same losses at every step they share."""
    _, _, _, root = resume_runs
    straight_values, _ = read_events(root / "straight")
    resumed_values, _ = read_events(root / "resumed")
    for tag in sorted(t for t in straight_values if t.startswith("loss/")):
        for step in (1, 2):  # before the restart, both runs trained from scratch alike
            assert float(resumed_values[tag][step]) == float(straight_values[tag][step]), (tag, step)


def mark_saved(run):
    """Makes a run folder look as if it had saved a checkpoint (the folder checks look no further)."""
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / "ckpt-2.index").write_bytes(b"")
    return run


def test_other_spellings_and_moves_of_a_run_folder_are_the_same_run(tiny_config, tiny_phantom, tmp_path,
                                                                     monkeypatch):
    base = tiny_config(output_dir=tmp_path / "runs" / "x")
    run = mark_saved(prepare_run_folder(base))
    assert load_run_config(run).data.data_dir == str(tiny_phantom.resolve())  # stored absolute
    monkeypatch.chdir(tmp_path)
    relative_data = dataclasses.replace(base.data, data_dir=os.path.relpath(tiny_phantom, tmp_path))
    for out in ("runs/x", "runs/x/", str(tmp_path / "runs" / "x")):
        assert check_run_folder(dataclasses.replace(base, output_dir=out, data=relative_data)) == "resume"
    moved = shutil.move(run, tmp_path / "moved")
    assert check_run_folder(dataclasses.replace(base, output_dir=str(moved))) == "resume"


def test_a_run_that_never_saved_a_step_does_not_block_other_flags(tiny_config, tmp_path):
    run = prepare_run_folder(tiny_config(output_dir=tmp_path / "run"))
    other = tiny_config("--ngf=8", output_dir=run)
    assert check_run_folder(other) == "retry"
    logs = []
    prepare_run_folder(other, log=logs.append)
    assert load_run_config(run).model.ngf == 8
    assert logs == [f"{run} held a run with other flags that never saved a checkpoint; starting afresh"]
    mark_saved(run)
    with pytest.raises(RunFolderError, match="model.ngf: 8 -> 4"):
        check_run_folder(tiny_config(output_dir=run))
    assert check_run_folder(tiny_config(output_dir=run), overwrite=True) == "replace"


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def test_a_damaged_latest_checkpoint_is_named_and_the_one_before_resumed(resume_runs, tmp_path):
    straight, _, _, root = resume_runs
    run = shutil.copytree(root / "straight", tmp_path / "run")
    damaged = run / "checkpoints" / "ckpt-4.data-00000-of-00001"
    truncate(damaged)
    logs = []
    schedule = dataclasses.replace(straight.cfg.schedule, max_steps=2)
    resumed = Trainer(dataclasses.replace(straight.cfg, output_dir=str(run), schedule=schedule), log=logs.append)
    events_before = sorted((run / "tb").iterdir())
    assert resumed.run() == {}  # already at max_steps after the restore: no step is trained
    assert int(resumed.step) == 2
    assert f"{run} is already at step 2 of --max_steps=2: nothing to train (a higher --max_steps continues it)" in logs
    assert sorted((run / "tb").iterdir()) == events_before
    skipped = [line for line in logs if line.startswith("warning:")]
    assert len(skipped) == 1 and str(damaged) in skipped[0] and skipped[0].endswith("ckpt-2"), logs
    assert any(line.startswith("resumed") and "ckpt-2 at step 2" in line for line in logs), logs
    assert not (run / LOCK_FILE).exists()

    truncate(run / "checkpoints" / "ckpt-2.data-00000-of-00001")
    with pytest.raises(checkpoint_files.CheckpointError, match="no intact checkpoint.*ckpt-4.*ckpt-2"):
        Trainer(dataclasses.replace(straight.cfg, output_dir=str(run)), log=logs.append).run()
    assert not (run / LOCK_FILE).exists()


def test_checkpoints_are_tried_newest_number_first(tmp_path):
    for number in (9, 10, 2):
        (tmp_path / f"ckpt-{number}.index").write_bytes(b"")
    (tmp_path / "ckpt-3_temp.index").write_bytes(b"")
    assert checkpoint_files.newest_first(tmp_path) == [str(tmp_path / f"ckpt-{n}") for n in (10, 9, 2)]


def test_a_saved_checkpoint_reads_back_in_full(tmp_path):
    checkpoint = tf.train.Checkpoint(v=tf.Variable(tf.range(1000.0)))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=2)
    prefix = checkpoint_files.save(manager, 7)
    assert prefix == str(tmp_path / "ckpt-7") == checkpoint_files.verify(prefix + ".index")
    (tmp_path / "ckpt-7.index").unlink()
    with pytest.raises(checkpoint_files.CheckpointError, match="ckpt-7.index: the checkpoint does not exist"):
        checkpoint_files.verify(prefix)


def dead_pid():
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_the_run_lock_is_exclusive_and_replaces_a_dead_trainers_lock(tmp_path):
    run, logs = tmp_path / "run", []
    with RunLock(run, logs.append):
        with pytest.raises(RunLockError, match=f"process {os.getpid()} on {socket.gethostname()}"):
            RunLock(run).acquire()
    assert not (run / LOCK_FILE).exists()

    pid = dead_pid()
    (run / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname()}))
    with RunLock(run, logs.append):
        assert json.loads((run / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert logs == [f"removed the stale lock {run / LOCK_FILE} of process {pid}, which no longer runs"]

    (run / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": "another-host"}))  # cannot be judged from here
    with pytest.raises(RunLockError, match=f"process {pid} on another-host"):
        RunLock(run).acquire()


def test_a_run_folder_named_like_a_glob_pattern_resumes_evaluates_and_prunes_only_its_own(resume_runs, tmp_path):
    """TensorFlow's checkpoint functions read a path as a pattern: `sifa [1]` would find no
    checkpoint, and its clean-up of old checkpoints would match `sifa 1`'s."""
    from sifa_synthmix.evaluation.run_evaluation import evaluate_run  # pylint: disable=import-outside-toplevel

    straight, _, _, root = resume_runs
    neighbour = shutil.copytree(root / "straight", tmp_path / "sifa 1")
    neighbour_files = sorted(neighbour.rglob("*"))
    run = shutil.copytree(root / "straight", tmp_path / "sifa [1]")
    logs = []
    schedule = dataclasses.replace(straight.cfg.schedule, max_steps=5, keep_checkpoints=1)
    resumed = Trainer(dataclasses.replace(straight.cfg, output_dir=str(run), schedule=schedule), log=logs.append)
    resumed.run()
    assert any(line.startswith("resumed") and f"{run}/checkpoints/ckpt-4 at step 4" in line for line in logs), logs
    assert f"saved {run}/checkpoints/ckpt-5" in logs
    assert sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index")) == ["ckpt-5.index"]
    assert sorted(neighbour.rglob("*")) == neighbour_files
    record = evaluate_run(run, log=logs.append)
    assert record["checkpoint"] == str(run / "checkpoints" / "ckpt-5") and record["step"] == 5


def test_an_unreadable_checkpoint_state_file_does_not_stop_keep_checkpoints(tmp_path):
    """CheckpointManager learns from checkpoints/checkpoint alone which old checkpoints it may delete."""
    from sifa_synthmix.config import ScheduleConfig, TrainConfig  # pylint: disable=import-outside-toplevel

    checkpoint = tf.train.Checkpoint(v=tf.Variable(1.0))
    manager = tf.train.CheckpointManager(checkpoint, str(tmp_path), max_to_keep=10)
    for number in (1, 2, 3, 4):
        manager.save(checkpoint_number=number)
    (tmp_path / "checkpoint").write_text("garbage {{{")
    logs = []
    cfg = TrainConfig(schedule=ScheduleConfig(keep_checkpoints=2))
    checkpoint_files.save(checkpoint_manager(checkpoint, tmp_path, cfg, logs.append), 5)
    assert sorted(p.name for p in tmp_path.glob("*.index")) == ["ckpt-4.index", "ckpt-5.index"]
    assert len(logs) == 1 and "checkpoint was missing or unreadable" in logs[0], logs


def test_a_checkpoint_whose_own_name_looks_like_a_pattern_is_read(tmp_path):
    """--checkpoint may name a file like `best[1]-3` in a folder like `runs [2]`."""
    folder = tmp_path / "runs [2]"
    folder.mkdir()
    prefix = tf.train.Checkpoint(v=tf.Variable(tf.range(10.0))).write(str(folder / "best[1]-3"))
    (folder / "best1-3.index").write_bytes(b"what the pattern would match")
    assert checkpoint_files.verify(prefix) == str(folder / "best[1]-3")
    restored = tf.Variable(tf.zeros(10))
    tf.train.Checkpoint(v=restored).restore(for_tensorflow(prefix)).expect_partial()
    assert restored.numpy().tolist() == list(range(10))
