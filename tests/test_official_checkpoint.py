"""Importing official SIFA TF1 checkpoints (../shared/fixtures/official_sifa_tf1): the networks then
reproduce the official graph's outputs, the optimizers hold the TF1 Adam state, and the import is
a run folder the trainer restores. Bad checkpoints are one error line and write nothing."""
import contextlib
import io
import json
import pathlib
import types

import keras
import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from conftest import main_exit_code
from sifa_synthmix.config import ModelConfig
from sifa_synthmix.models.networks import SIFANetworks
from sifa_synthmix.runs.run_folder import CHECKPOINT_DIR, IMPORT_RECORD, load_run_config, run_checkpoint, step_variable
from sifa_synthmix.training import official_checkpoint as official
from sifa_synthmix.training.task import UPDATE_ORDER, UPDATE_SCOPES
from sifa_synthmix.training.task_factory import build_task


FIXTURE = pathlib.Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_sifa_tf1"
SIZE_FLAGS = ("--image_size=64", "--ngf=4", "--ndf=8", "--encoder_base=2", "--num_classes=5", "--skip=true")
TOLERANCE = 1e-5  # max |ours - official| / max |official|, per output


@pytest.fixture(scope="module")
def fixture_dir():
    if not FIXTURE.is_dir():
        pytest.skip(f"{FIXTURE} is absent")
    return FIXTURE


def fixture_model_config():
    settings = json.loads((FIXTURE / "settings.json").read_text(encoding="utf-8"))
    # The fixture's outputs were computed with de_B's dropout off (keep_rate 1.0).
    return ModelConfig(image_size=settings["image_size"], ngf=settings["ngf"], ndf=settings["ndf"],
                       encoder_base=settings["encoder_base"], num_classes=settings["num_classes"],
                       skip=settings["skip"], decoder_dropout=0.0)


def official_outputs(n, images_a, images_b, fake_pool_a, fake_pool_b):
    """The official get_outputs with batch norm on its moving statistics (is_training=False)."""
    out = {}

    def d_A(name, images):
        both = n.d_A(images)
        out[f"prob_{name}_is_real"], out[f"prob_{name}_aux_is_real"] = both[..., :1], both[..., 1:]

    d_A("real_a", images_a)
    out["prob_real_b_is_real"] = n.d_B(images_b)
    out["fake_images_b"] = n.g_A(images_a)
    latent_b, latent_b_ll = n.e_B(images_b, training=False)
    out["fake_images_a"] = n.de_B([latent_b, images_b])
    out["pred_mask_b"], out["pred_mask_b_ll"] = n.s_B(latent_b), n.s_B_ll(latent_b_ll)
    d_A("fake_a", out["fake_images_a"])
    out["prob_fake_b_is_real"] = n.d_B(out["fake_images_b"])
    latent_fake_b, latent_fake_b_ll = n.e_B(out["fake_images_b"], training=False)
    out["cycle_images_b"] = n.g_A(out["fake_images_a"])
    out["cycle_images_a"] = n.de_B([latent_fake_b, out["fake_images_b"]])
    out["pred_mask_fake_b"], out["pred_mask_fake_b_ll"] = n.s_B(latent_fake_b), n.s_B_ll(latent_fake_b_ll)
    d_A("fake_pool_a", fake_pool_a)
    out["prob_fake_pool_b_is_real"] = n.d_B(fake_pool_b)
    d_A("cycle_a", out["cycle_images_a"])
    for scope, suffix in (("d_P", ""), ("d_P_ll", "_ll")):
        out[f"prob_pred_mask_fake_b{suffix}_is_real"] = getattr(n, scope)(out[f"pred_mask_fake_b{suffix}"])
        out[f"prob_pred_mask_b{suffix}_is_real"] = getattr(n, scope)(out[f"pred_mask_b{suffix}"])
    out["pred_mask_a"], out["pred_mask_fake_a"] = out["pred_mask_b"], out["pred_mask_fake_b"]  # official aliases
    return out


def relative_errors():
    """{official output key: max |ours - official| / max |official|} over every output in io.npz."""
    networks = SIFANetworks(fixture_model_config())
    official.load_networks(official.OfficialCheckpoint(FIXTURE / "sifa-1"), networks)
    arrays = np.load(FIXTURE / "io.npz")
    inputs = (tf.constant(arrays[f"input/{k}"]) for k in ("images_a", "images_b", "fake_pool_a", "fake_pool_b"))
    ours = official_outputs(networks, *inputs)
    expected = {k.removeprefix("output/"): arrays[k] for k in arrays.files if k.startswith("output/")}
    return {k: float(np.abs(np.asarray(ours[k]) - v).max() / np.abs(v).max()) for k, v in sorted(expected.items())}


def test_imported_networks_reproduce_every_official_output(fixture_dir):
    del fixture_dir
    errors = relative_errors()
    assert len(errors) == 23 and "prob_fake_a_aux_is_real" in errors
    assert max(errors.values()) < TOLERANCE, {k: v for k, v in errors.items() if v >= TOLERANCE}


def test_every_official_model_variable_has_its_keras_variable(fixture_dir):
    networks = SIFANetworks(fixture_model_config())
    checkpoint = official.OfficialCheckpoint(fixture_dir)  # the folder: its `checkpoint` file names sifa-1
    mapped = official.network_variables(networks)
    assert sorted(m.name for m in mapped) == checkpoint.model_variables()
    assert len(mapped) == 339 and checkpoint.file_step == 1
    assert {m.scope for m in mapped} == set(SIFANetworks.SCOPES)
    moving = [m.name for m in mapped if not m.variable.trainable]
    assert len(moving) == 62 and all(n.endswith(("moving_mean", "moving_variance")) for n in moving)


# --- the import: a run folder with the TF1 optimizer state ------------------------------------

def import_args(checkpoint, out, *extra):
    """main.py's arguments; `extra` flags replace SIZE_FLAGS of the same name (a flag typed twice
    with different values is refused)."""
    given = {flag.split("=", 1)[0] for flag in extra}
    sizes = [flag for flag in SIZE_FLAGS if flag.split("=", 1)[0] not in given]
    return ("--mode=import_official", f"--official_checkpoint={checkpoint}", f"--output_dir={out}", *sizes, *extra)


@pytest.fixture(scope="module")
def imported_run(fixture_dir, tmp_path_factory):
    """The fixture imported with main.py: (run folder, import record, printed lines)."""
    out = tmp_path_factory.mktemp("imported") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main_exit_code(*import_args(fixture_dir / "sifa-1", out)) == 0
    return out, official.read_import_record(out), printed.getvalue().strip().splitlines()


def restored_task(run_dir):
    """A task built from the run's config.json and restored with the trainer's checkpoint."""
    cfg = load_run_config(run_dir)
    task, step = build_task(cfg), step_variable()
    latest = tf.train.latest_checkpoint(str(run_dir / CHECKPOINT_DIR))
    run_checkpoint(task, step).restore(latest).assert_existing_objects_matched()
    return task, int(step)


def test_the_trainer_restores_weights_and_tf1_adam_state(imported_run, fixture_dir):
    out, record, printed = imported_run
    assert record == {"official_checkpoint": str((fixture_dir / "sifa-1").resolve()), "tf1_global_step": 1,
                      "optimizer_state": "imported", "gan_updates": 6, "seg_updates": 1}
    assert len(printed) == 1 and "gan 6 updates, seg 1" in printed[0], printed
    task, step = restored_task(out)
    assert step == 1
    # After one official step: GAN powers 0.5^7, 0.999^7 (6 updates); seg powers 0.9^2, 0.999^2.
    assert int(task.gan_optimizer.iterations) == 6 and int(task.seg_optimizer.iterations) == 1
    checkpoint = official.OfficialCheckpoint(fixture_dir / "sifa-1")
    seg_scopes = UPDATE_SCOPES["seg"]
    compared = 0
    for m in official.network_variables(task.networks):
        np.testing.assert_array_equal(m.variable.numpy(), checkpoint.tensor(m.name), err_msg=m.name)
        if not m.variable.trainable:
            continue
        adam = task.seg_optimizer if m.scope in seg_scopes else task.gan_optimizer
        for moment, slot in zip(official.adam_moments(adam, m.variable), ("Adam", "Adam_1")):
            name = f"{m.name}/{slot}"
            # The fixture's dilated-conv biases had no gradient, so TF1 gave them no slots.
            expected = checkpoint.tensor(name) if name in checkpoint.shapes else np.zeros(m.variable.shape)
            np.testing.assert_array_equal(moment.numpy(), expected, err_msg=name)
            compared += name in checkpoint.shapes
    assert compared == 2 * 273  # every slot in the fixture


def test_summary_names_the_tf1_global_step(imported_run, capsys):
    out, _, _ = imported_run
    capsys.readouterr()
    assert main_exit_code("--mode=summary", f"--output_dir={out}", *SIZE_FLAGS) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tf1_global_step"] == 1 and summary["official_checkpoint"].endswith("sifa-1")
    assert summary["total"] == sum(v for k, v in summary.items() if k in SIFANetworks.SCOPES)


def write_tf1_checkpoint(prefix, tensors):
    """A name-based (TF1 V2 format) checkpoint holding exactly `tensors`."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


def fixture_tensors(fixture_dir, model_only=True):
    checkpoint = official.OfficialCheckpoint(fixture_dir / "sifa-1")
    names = checkpoint.model_variables() if model_only else list(checkpoint.shapes)
    return {name: checkpoint.tensor(name) for name in names}


def test_a_checkpoint_without_adam_state_imports_with_a_one_line_notice(fixture_dir, tmp_path, capsys):
    prefix = write_tf1_checkpoint(tmp_path / "model" / "sifa-7", fixture_tensors(fixture_dir))
    out = tmp_path / "run"
    assert main_exit_code(*import_args(prefix, out)) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "the optimizer state starts fresh" in printed[0], printed
    task, step = restored_task(out)
    assert step == 7
    assert int(task.gan_optimizer.iterations) == int(task.seg_optimizer.iterations) == 0
    assert json.loads((out / IMPORT_RECORD).read_text())["optimizer_state"] == "fresh"


def assert_one_error_and_nothing_written(code, err, out, *parts):
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], lines[0]
    assert not out.exists() and not list(out.parent.glob(f"{out.name}*"))


def test_a_width_mismatch_names_the_variable_both_shapes_and_the_flag(fixture_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = main_exit_code(*import_args(fixture_dir, out, "--ngf=32"))
    assert_one_error_and_nothing_written(code, capsys.readouterr().err, out, "sifa-1", "Model/g_A/c1/Conv/weights",
                                         "[7, 7, 1, 4] in the checkpoint but [7, 7, 1, 32]",
                                         "--ngf=4 expected from Model/g_A/c1/Conv/weights [7, 7, 1, 4]")


def test_missing_and_unknown_variables_are_listed(fixture_dir, tmp_path, capsys):
    tensors = fixture_tensors(fixture_dir)
    tensors["Model/d_P_ll/c6/Conv/weights"] = tensors.pop("Model/d_P_ll/c5/Conv/weights")
    del tensors["Model/e_B/r3/c2/batch_norm/BatchNorm/moving_variance"]
    prefix = write_tf1_checkpoint(tmp_path / "sifa-3", tensors)
    out = tmp_path / "run"
    code = main_exit_code(*import_args(prefix, out))
    assert_one_error_and_nothing_written(
        code, capsys.readouterr().err, out, str(prefix),
        "2 missing from the checkpoint (Keras variables left unfilled): Model/e_B/r3/c2/batch_norm/BatchNorm/"
        "moving_variance, Model/d_P_ll/c5/Conv/weights",
        "1 official variables with no place in these networks: Model/d_P_ll/c6/Conv/weights")


def test_partial_optimizer_state_is_listed(fixture_dir, tmp_path, capsys):
    tensors = fixture_tensors(fixture_dir, model_only=False)
    del tensors["beta2_power_1"], tensors["Model/s_B/c8/Conv/weights/Adam_1"]
    prefix = write_tf1_checkpoint(tmp_path / "sifa-1", tensors)
    out = tmp_path / "run"
    assert_one_error_and_nothing_written(main_exit_code(*import_args(prefix, out)), capsys.readouterr().err, out,
                                         "incomplete optimizer state, 2 missing",
                                         "Model/s_B/c8/Conv/weights/Adam_1", "beta2_power_1")


def test_a_nonzero_dilated_conv_bias_cannot_be_imported(fixture_dir, tmp_path, capsys):
    tensors = fixture_tensors(fixture_dir)
    tensors["Model/e_B/d2/c1/biases"] = np.full_like(tensors["Model/e_B/d2/c1/biases"], 0.5)
    prefix = write_tf1_checkpoint(tmp_path / "sifa-1", tensors)
    out = tmp_path / "run"
    assert_one_error_and_nothing_written(main_exit_code(*import_args(prefix, out)), capsys.readouterr().err, out,
                                         "Model/e_B/d2/c1/biases is not zero", "never adds")


def test_paths_that_are_not_tf1_checkpoints(tmp_path, capsys):
    folder = tmp_path / "empty"
    folder.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    tf2 = tf.train.Checkpoint(v=tf.Variable(1.0)).write(str(tmp_path / "tf2" / "ckpt-1"))
    foreign = write_tf1_checkpoint(tmp_path / "other" / "model-5", {"dense/kernel": np.zeros((2, 2), np.float32)})
    for path, part in ((folder, "no `checkpoint` file"), (text, "not a TF1 checkpoint"),
                       (tf2, "a TF2 object-based checkpoint"), (foreign, "without official SIFA variables")):
        out = tmp_path / "run"
        assert_one_error_and_nothing_written(main_exit_code(*import_args(path, out)), capsys.readouterr().err, out,
                                             str(path), part)


def tf1_adam_power(beta, updates):
    """A TF1 Adam power after `updates` updates: float32 beta, times beta per update."""
    power = beta = np.float32(beta)
    for _ in range(updates):
        power = np.float32(power * beta)
    return power


def test_update_counts_of_a_full_official_run():
    """sifa-19999 after 20,000 official steps (0-based names): the GAN powers have underflowed."""
    powers = {"beta1_power": tf1_adam_power(0.5, 120_000), "beta2_power": tf1_adam_power(0.999, 120_000),
              "beta1_power_1": tf1_adam_power(0.9, 20_000), "beta2_power_1": tf1_adam_power(0.999, 20_000)}
    # Subnormal (or flushed to zero by TF's CPU kernels): the count is lost.
    assert powers["beta2_power"] < np.finfo(np.float32).tiny < powers["beta2_power_1"]
    checkpoint = types.SimpleNamespace(prefix="run/sifa-19999", file_step=19_999, tensor=powers.get)
    task = types.SimpleNamespace(gan_optimizer=keras.optimizers.Adam(beta_1=0.5), seg_optimizer=keras.optimizers.Adam(),
                                 update_order=UPDATE_ORDER)
    step, seg_updates, gan_updates, notes = official.steps_and_updates(checkpoint, task)
    assert (step, seg_updates, gan_updates) == (19_999, 20_000, 120_000)
    assert len(notes) == 1 and "0-based step index" in notes[0]


# --- evaluating an import with only the target test volumes -------------------------------------

def released_test_volumes(root, count=2, depth=3):
    """ROOT/ct/test/*.npz as the official release has them: no datalists, records or stats."""
    rng = np.random.default_rng(5)
    (root / "ct" / "test").mkdir(parents=True)
    for index in range(count):
        labels = rng.integers(0, 5, size=(64, 64, depth)).astype(np.int16)
        np.savez(root / "ct" / "test" / f"ct_{index}.npz", arr_0=rng.normal(size=labels.shape).astype(np.float32),
                 arr_1=labels)
    return root


def test_an_import_evaluates_with_only_the_test_volumes(fixture_dir, tmp_path, capsys):
    data = released_test_volumes(tmp_path / "release")
    out = tmp_path / "run"
    assert main_exit_code(*import_args(fixture_dir, out, f"--data_dir={data}", "--target_range=-1.9,3.0")) == 0
    assert main_exit_code("--mode=evaluate", f"--output_dir={out}") == 0, capsys.readouterr().err
    metrics = json.loads((out / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["intensity_range"] == [-1.9, 3.0] and len(metrics["volumes"]) == 2
    assert [v["name"] for v in metrics["volumes"]] == ["ct_0", "ct_1"]


def test_an_import_without_an_intensity_range_is_one_error_line(fixture_dir, tmp_path, capsys):
    data = released_test_volumes(tmp_path / "release")
    out = tmp_path / "run"
    assert main_exit_code(*import_args(fixture_dir, out, f"--data_dir={data}")) == 0
    capsys.readouterr()
    code = main_exit_code("--mode=evaluate", f"--output_dir={out}")
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(lines) == 1 and "--target_range" in lines[0] and str(out) in lines[0], err
    assert not (out / "eval").exists()


def test_an_import_predicts_a_scan_with_the_default_recipe(fixture_dir, tmp_path, capsys):
    """No recorded recipe: axial slices, native spacing, a body crop; the labels on the scan's grid."""
    data = released_test_volumes(tmp_path / "release")
    out = tmp_path / "run"
    assert main_exit_code(*import_args(fixture_dir, out, f"--data_dir={data}", "--target_range=-1.9,3.0")) == 0
    rng = np.random.default_rng(6)
    image = np.full((90, 70, 3), -1000.0, np.float32) + rng.uniform(0, 20, (90, 70, 3)).astype(np.float32)
    image[20:70, 10:60] = 40 + rng.normal(0, 30, (50, 50, 3))
    affine = np.array([[0, 0.9, 0, -30], [-0.9, 0, 0, 40], [0, 0, 2.5, -5], [0, 0, 0, 1]])
    scan = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(scan))
    capsys.readouterr()
    assert main_exit_code("--mode=predict", f"--output_dir={out}", f"--predict_input={scan}",
                          f"--predictions_dir={tmp_path / 'labels'}") == 0, capsys.readouterr().err
    assert "slices PLS, in-plane spacing native mm, 64 px crop (auto)" in capsys.readouterr().out
    written = nib.load(str(tmp_path / "labels" / "scan.nii.gz"))
    assert written.shape == image.shape
    np.testing.assert_allclose(written.affine, nib.load(str(scan)).affine, rtol=0, atol=1e-6)
    assert set(np.unique(np.asarray(written.dataobj))) <= set(range(5))
