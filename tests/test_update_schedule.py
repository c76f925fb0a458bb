"""--update_schedule=merged (issue 38): one forward pass per step feeds the generators' and the
segmenter's updates, then the discriminators train on its detached outputs. Run eagerly at a tiny
size: which variables each update changes, the same losses and gradients as the official updates
from the same weights, every protocol trains, a non-finite batch is skipped, and the run folder
records the schedule (resuming with the other one is refused)."""
import dataclasses
import json

import keras
import numpy as np
import pytest

import test_train_step
from conftest import REPO, config_from_argv, main_exit_code
from sifa_synthmix.config import TrainConfig
from sifa_synthmix.runs.run_folder import RunFolderError, check_run_folder, load_run_config, prepare_run_folder
from sifa_synthmix.training.cyclegan_task import CycleGANNetworks
from sifa_synthmix.training.task import GENERATORS
from sifa_synthmix.training.trainer import Trainer
from test_train_step import (EXPECTED_METRICS, assert_all_finite, batch_norm_statistics, build_seeded,
                             check_each_update_changes_only_its_own_variables, random_batch)
from test_train_step import tiny_config as tiny_task_config

# Eager steps run the networks op by op (conftest.networks_run_inline).
pytestmark = pytest.mark.usefixtures("networks_run_inline")


def merged(cfg):
    return dataclasses.replace(cfg, update_schedule="merged")


def cyclegan_config(**fields):
    return dataclasses.replace(tiny_task_config(**fields), kind="cyclegan")


# --- which variables each update changes --------------------------------------------------------

def test_merged_updates_the_generators_then_the_segmenter_then_each_discriminator():
    task = build_seeded(merged(tiny_task_config(decoder_dropout=0.0)))
    assert task.update_order == (GENERATORS, "seg", "d_B", "d_A", "d_P", "d_P_ll")
    moved_statistics, metrics = check_each_update_changes_only_its_own_variables(task)
    assert not moved_statistics  # e_B's two forward passes of the step came before the updates
    assert int(metrics["skipped_updates"]) == 0


def test_merged_synthmix_trains_the_inspector_last():
    task = build_seeded(merged(tiny_task_config(decoder_dropout=0.0, protocol="synthmix")))
    assert task.update_order[-1] == "inspector"
    check_each_update_changes_only_its_own_variables(task)


def test_merged_cyclegan_updates_only_its_networks(monkeypatch):
    task = build_seeded(merged(cyclegan_config(decoder_dropout=0.0)))
    assert task.update_order == (GENERATORS, "seg", "d_B", "d_A")
    monkeypatch.setattr(test_train_step, "SIFANetworks", CycleGANNetworks)
    monkeypatch.setattr(test_train_step, "UPDATE_SCOPES", type(task).UPDATE_SCOPES)
    check_each_update_changes_only_its_own_variables(task)


# --- the same losses and gradients from the same weights ------------------------------------------

def losses_and_gradients(cfg):
    """One step of cfg's schedule on a fresh task (fixed seed) whose optimizer steps are replaced
    by a recorder: every update sees the weights the step started with. Returns the metrics and
    {(scope, variable path): gradient} over all updates."""
    task = build_seeded(cfg)
    networks = {scope: getattr(task.networks, scope) for scope in task.networks.SCOPES}
    networks.update({"inspector": task.inspector} if hasattr(task, "inspector") else {})
    names = {id(v): (scope, v.path) for scope, network in networks.items() for v in network.trainable_variables}
    gradients = {}

    def record(ctx, optimizer, tape, loss, variables):
        del ctx, optimizer
        for variable, gradient in zip(variables, tape.gradient(loss, variables)):
            name = names[id(variable)]
            assert name not in gradients, f"{name} has two updates"
            gradients[name] = np.zeros(variable.shape) if gradient is None else gradient.numpy()

    task.minimize = record
    metrics, _ = task.train_step(*random_batch(seed=3))
    return {k: float(v) for k, v in metrics.items()}, gradients


@pytest.mark.parametrize("config", [
    tiny_task_config(decoder_dropout=0.0),
    tiny_task_config(decoder_dropout=0.0, protocol="synthmix"),
    cyclegan_config(decoder_dropout=0.0),
], ids=["sifa", "synthmix", "cyclegan"])
def test_merged_losses_and_gradients_are_the_official_ones_from_the_same_weights(config):
    """The forward values before any update are the same in both schedules: with no optimizer
    step applied, every logged loss and every variable's gradient agree (de_B's dropout off)."""
    official_metrics, official_gradients = losses_and_gradients(config)
    merged_metrics, merged_gradients = losses_and_gradients(merged(config))
    assert set(merged_metrics) == set(official_metrics)
    for key, value in official_metrics.items():
        np.testing.assert_allclose(merged_metrics[key], value, rtol=2e-5, atol=1e-7, err_msg=key)
    assert set(merged_gradients) == set(official_gradients)
    total = np.sqrt(sum(np.sum(g ** 2) for g in official_gradients.values()))
    for path, gradient in official_gradients.items():
        np.testing.assert_allclose(merged_gradients[path], gradient, rtol=1e-3, atol=1e-6 * total, err_msg=path)


# --- every protocol, precision and a non-finite batch ----------------------------------------------

@pytest.mark.parametrize("mix", [dict(protocol="synthmix"), dict(protocol="mixup"), dict(protocol="cutmix"),
                                 dict(protocol="synthmix", image_discriminators=False)],
                         ids=["synthmix", "mixup", "cutmix", "model0"])
def test_merged_step_trains_with_every_mixing_protocol(mix):
    task = build_seeded(merged(tiny_task_config(**mix)))
    metrics, images = task.train_step(*random_batch(seed=1))
    assert_all_finite(metrics)
    expected = {"mix_adv_S_mix", "mix_adv_T_mix", "inspector_cls", *EXPECTED_METRICS}
    if not mix.get("image_discriminators", True):
        expected -= {"d_loss_A", "d_loss_B"}
    assert expected <= set(metrics)
    assert {"mix/S_mix", "mix/T_mix", "mix/unaligned", "fake_A", "cycle_A", "seg_logits"} <= set(images)
    # One GAN Adam step for the generators and one per discriminator; one each for seg and the Inspector.
    assert int(task.gan_optimizer.iterations) == len(task.update_order) - 2
    assert int(task.seg_optimizer.iterations) == 1 and int(task.inspector_optimizer.iterations) == 1


@pytest.fixture
def float32_policy_afterwards():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_merged_step_in_mixed_precision_gives_finite_float32_losses(precision, float32_policy_afterwards):
    """Under mixed_float16 the forward pass's two losses are scaled by their optimizers' loss
    scales: Keras' initial 2^15 overflows in the GAN updates of the tiny networks' first steps (as
    in the official schedule), which then apply once the scale has come down."""
    del float32_policy_afterwards
    cfg = merged(tiny_task_config())
    task = build_seeded(dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, precision=precision)))
    for _ in range(4):
        metrics, _ = task.train_step(*random_batch(seed=3))
        assert int(metrics["skipped_updates"]) == 0
        if not int(metrics.get("loss_scale_overflows", 0)):
            break
    assert_all_finite({k: v for k, v in metrics.items() if k != "loss_scale_overflows"})
    assert int(metrics.get("loss_scale_overflows", 0)) == 0


def test_a_nan_batch_skips_every_merged_update_and_leaves_the_weights_alone():
    task = build_seeded(merged(tiny_task_config()))
    source, labels, target = random_batch(seed=5)
    poisoned = source.numpy()
    poisoned[0, 0, 0, 0] = np.nan
    before = [v.numpy().copy() for v in task.scope_variables(task.networks.SCOPES)]
    statistics = batch_norm_statistics(task)
    metrics, _ = task.train_step(poisoned, labels, target)
    assert int(metrics["skipped_updates"]) == len(task.update_order)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, task.scope_variables(task.networks.SCOPES)))
    assert all(np.array_equal(a, b) for a, b in zip(statistics, batch_norm_statistics(task)))
    metrics, _ = task.train_step(source, labels, target)
    assert int(metrics["skipped_updates"]) == 0


# --- configuration, run folder, resuming ---------------------------------------------------------

def test_the_schedule_is_official_by_default_and_checked():
    assert TrainConfig().update_schedule == "official"
    assert TrainConfig.from_dict(merged(TrainConfig()).to_dict()).update_schedule == "merged"
    with pytest.raises(ValueError, match="--update_schedule must be one of official, merged, got 'fast'"):
        TrainConfig(update_schedule="fast")


def saved_run(cfg):
    """A run folder holding cfg's config.json and what looks like a checkpoint."""
    run = prepare_run_folder(cfg)
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "ckpt-2.index").write_bytes(b"")
    return run


def test_the_run_folder_records_the_schedule_and_refuses_another(tmp_path):
    cfg = merged(dataclasses.replace(tiny_task_config(), output_dir=str(tmp_path / "run")))
    run = saved_run(cfg)
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["update_schedule"] == "merged"
    assert check_run_folder(cfg) == "resume"
    with pytest.raises(RunFolderError) as refusal:
        check_run_folder(dataclasses.replace(cfg, update_schedule="official"))
    assert "update_schedule: 'merged' -> 'official'" in str(refusal.value) and "\n" not in str(refusal.value)
    assert check_run_folder(dataclasses.replace(cfg, update_schedule="official"), overwrite=True) == "replace"


def test_a_run_from_before_the_schedule_existed_resumes_as_official(tmp_path):
    cfg = dataclasses.replace(tiny_task_config(), output_dir=str(tmp_path / "run"))
    run = saved_run(cfg)
    config_file = run / "config.json"
    written = json.loads(config_file.read_text(encoding="utf-8"))
    del written["update_schedule"]
    config_file.write_text(json.dumps(written), encoding="utf-8")
    assert check_run_folder(cfg) == "resume"
    with pytest.raises(RunFolderError, match="update_schedule: 'official' -> 'merged'"):
        check_run_folder(merged(cfg))


def test_a_merged_run_trains_in_its_compiled_step_and_records_the_schedule(tiny_config):
    """The trainer's tf.function step (graph mode: the persistent tape of the forward pass) on
    the tiny phantom; config.json says merged."""
    cfg = tiny_config("--update_schedule=merged", "--mix_protocol=synthmix", "--max_steps=2", "--eval_every=0")
    trainer = Trainer(cfg, log=lambda _: None)
    metrics = trainer.run()
    assert int(trainer.step) == 2 and int(metrics["skipped_updates"]) == 0
    assert all(np.isfinite(value) for value in metrics.values())
    assert int(trainer.task.gan_optimizer.iterations) == 2 * 5 and int(trainer.task.seg_optimizer.iterations) == 2
    assert load_run_config(cfg.output_dir).update_schedule == "merged"


def test_resuming_with_another_schedule_is_one_error_line(capsys, tiny_phantom, tmp_path, monkeypatch):
    """--update_schedule given to a run trained with the other schedule: refused before anything
    is read or written; the run's config.json keeps its schedule."""
    monkeypatch.chdir(REPO)
    run = saved_run(config_from_argv("--flagfile=configs/tiny_cpu.flags", f"--data_dir={tiny_phantom}",
                                     f"--output_dir={tmp_path / 'run'}"))
    code = main_exit_code(f"--output_dir={run}", "--update_schedule=merged")
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, errors
    assert "holds a run with other flags (update_schedule: 'official' -> 'merged')" in errors[0]
    assert json.loads((run / "config.json").read_text(encoding="utf-8"))["update_schedule"] == "official"
