"""The CycleGAN baseline, run eagerly at a tiny size: its networks and checkpoint hold only what it
trains, each update changes only its own variables, the segmentation loss is CE + Dice + L2 on
g_A(A) (against numpy), and e_B gets no gradient from g_loss_B."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

import test_train_step
from sifa_synthmix.config import SynthMixConfig, TrainConfig
from sifa_synthmix.models import losses
from sifa_synthmix.models.networks import SIFANetworks
from sifa_synthmix.training import cyclegan_task
from sifa_synthmix.training.cyclegan_task import CycleGANNetworks, CycleGANTask
from sifa_synthmix.training.task import SEG_L2_WEIGHT
from test_train_step import assert_all_finite, build_seeded, random_batch

# Eager steps run the networks op by op (conftest.networks_run_inline).
pytestmark = pytest.mark.usefixtures("networks_run_inline")


NUM_CLASSES = test_train_step.TINY_MODEL.num_classes


def cyclegan_config():
    return dataclasses.replace(test_train_step.tiny_config(), kind="cyclegan")


@pytest.fixture(scope="module")
def task():
    built = build_seeded(cyclegan_config())
    assert isinstance(built, CycleGANTask)
    return built


def test_networks_parameters_and_checkpoint_hold_only_what_it_trains(task):
    counts = task.parameter_counts()
    assert list(counts) == ["g_A", "e_B", "de_B", "s_B", "d_A", "d_B", "total"]
    sifa = SIFANetworks(test_train_step.TINY_MODEL).parameter_counts()
    last_conv_per_channel = 4 * 4 * 8 * test_train_step.TINY_MODEL.ndf  # d_A's c5: 4x4 conv from 8 ndf channels
    assert counts["d_A"] == sifa["d_A"] - last_conv_per_channel
    assert task.networks.d_A.output.shape[-1] == 1
    assert counts["total"] == (sifa["total"] - sifa["d_P"] - sifa["d_P_ll"] - sifa["s_B_ll"]
                               - last_conv_per_channel)
    items = task.checkpoint_items()
    assert {k for k in items if k in SIFANetworks.SCOPES} == set(CycleGANNetworks.SCOPES)


def test_cyclegan_takes_no_mixing_protocol():
    with pytest.raises(ValueError, match="no --mix_protocol"):
        TrainConfig(kind="cyclegan", synthmix=SynthMixConfig(protocol="synthmix"))


def test_each_update_changes_only_its_own_variables(monkeypatch):
    """The SIFA step's helper, pointed at the CycleGAN scopes and updates."""
    task = build_seeded(cyclegan_config())
    monkeypatch.setattr(test_train_step, "SIFANetworks", CycleGANNetworks)
    monkeypatch.setattr(test_train_step, "UPDATE_SCOPES", cyclegan_task.UPDATE_SCOPES)
    assert task.update_order == ("g_A", "d_B", "seg", "de_B", "d_A")
    moved_statistics, metrics = test_train_step.check_each_update_changes_only_its_own_variables(task)
    assert "seg" in moved_statistics and moved_statistics <= {"g_A", "seg", "de_B"}
    assert int(metrics["skipped_updates"]) == 0


def test_a_full_step_runs_four_gan_updates_and_one_seg_update():
    task = build_seeded(cyclegan_config())
    metrics, images = task.train_step(*random_batch(seed=1))
    assert_all_finite(metrics)
    assert {"g_loss_A", "d_loss_B", "seg_loss", "g_loss_B", "d_loss_A", "dice_fake_B"} <= set(metrics)
    assert not {"d_loss_P", "d_loss_P_ll", "seg_ce_ll", "seg_adv_g_loss_B", "signal_d_P_accuracy"} & set(metrics)
    assert "signal_target_entropy" in metrics  # the adaptation signal without d_P
    assert images["seg_logits"].shape == (test_train_step.BATCH, 32, 32, NUM_CLASSES)
    assert int(task.gan_optimizer.iterations) == 4 and int(task.seg_optimizer.iterations) == 1


# --- the segmentation update by hand ----------------------------------------------------------

def numpy_weighted_cross_entropy(logits, onehot):
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    pixels = onehot.sum(axis=(0, 1, 2))
    weights = 1.0 - pixels / pixels.sum()
    return np.mean(-np.sum(weights * onehot * np.log(np.clip(probabilities, 0.005, 1.0)), axis=-1)), probabilities


def numpy_dice_loss(probabilities, onehot):
    intersection = (probabilities * onehot).sum(axis=(0, 1, 2))
    energy = (probabilities ** 2).sum(axis=(0, 1, 2)) + onehot.sum(axis=(0, 1, 2))
    return 1.0 - np.mean(2.0 * intersection / (energy + 1e-7))


def seg_update_gradients(task, ctx, monkeypatch):
    """Runs update_seg but returns (loss, {variable path: gradient}) instead of applying them."""
    captured = {}

    def capture(ctx, optimizer, tape, loss, variables):
        del ctx, optimizer
        captured["loss"] = float(loss)
        captured["gradients"] = {v.path: g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))}

    monkeypatch.setattr(task, "minimize", capture)
    task.update_seg(ctx)
    return captured["loss"], captured["gradients"]


def test_seg_loss_is_ce_plus_dice_plus_l2_on_g_A_of_A_and_e_B_gets_no_g_loss_B(task, monkeypatch):
    n = task.networks
    source, labels, target = random_batch(seed=2)
    variables = task.scope_variables(("e_B", "s_B"))
    # By hand, with the weights update_seg starts from: the segmenter on g_A(A) in training mode.
    with tf.GradientTape() as tape:
        fake_B = n.g_A(source)
        logits = n.s_B(n.e_B(fake_B, training=True)[0])
        ce, probabilities = numpy_weighted_cross_entropy(logits.numpy().astype(np.float64), labels.numpy())
        dice = numpy_dice_loss(probabilities, labels.numpy())
        l2 = SEG_L2_WEIGHT * sum(np.sum(v.numpy().astype(np.float64) ** 2) / 2 for v in variables)
        # The same loss as a tensor, for its gradient (its value is checked against numpy below).
        seg_terms = (losses.weighted_cross_entropy(logits, labels) + losses.dice_loss(logits, labels)
                     + SEG_L2_WEIGHT * losses.l2_regularisation(variables))
    expected_gradients = {v.path: g.numpy() for v, g in zip(variables, tape.gradient(seg_terms, variables))}

    ctx = task.new_context(source, labels, target)
    loss, gradients = seg_update_gradients(task, ctx, monkeypatch)
    np.testing.assert_allclose(float(seg_terms), ce + dice + l2, rtol=1e-5)
    np.testing.assert_allclose(loss, ce + dice + l2, rtol=1e-5)
    np.testing.assert_allclose(float(ctx["metrics"]["seg_ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(ctx["metrics"]["seg_dice"]), dice, rtol=1e-5)
    np.testing.assert_allclose(ctx["fake_B"].numpy(), fake_B.numpy(), atol=1e-6)
    assert set(gradients) == set(expected_gradients)
    for path, gradient in gradients.items():
        np.testing.assert_allclose(gradient, expected_gradients[path], rtol=1e-4, atol=1e-7, err_msg=path)

    # g_loss_B would move e_B: its gradient there is far from zero, so the match above rules it out.
    with tf.GradientTape() as tape:
        latent_B = n.e_B(target, training=True)[0]
        latent_fake_B = n.e_B(fake_B, training=True)[0]
        g_loss_B = task.g_loss_B(dict(ctx, A=source, B=target, fake_B=fake_B), latent_B, latent_fake_B)[0]
    e_B_gradient = tape.gradient(g_loss_B, n.e_B.trainable_variables)
    assert max(np.abs(g.numpy()).max() for g in e_B_gradient if g is not None) > 1e-3

