"""SIFA's train step, run eagerly at a tiny size: which variables each update changes, the
metrics of a full step, the official schedule (fake pool, shared Adam) and the g_loss_A
composition against a hand computation (docs: ../shared/docs/sifa_reference.md).

The step is run eagerly (the task's methods called directly): tracing it in tf.function
costs far more than running it at this size.
"""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.config import ModelConfig, RuntimeConfig, SynthMixConfig, TrainConfig
from sifa_synthmix.models.networks import SIFANetworks
from sifa_synthmix.training.task import GENERATORS, UPDATE_SCOPES, SIFATask
from sifa_synthmix.training.task_factory import build_task

# Eager steps run the networks op by op (conftest.networks_run_inline).
pytestmark = pytest.mark.usefixtures("networks_run_inline")


TINY_MODEL = ModelConfig(image_size=32, ngf=4, ndf=4, encoder_base=2)
BATCH = 2
SEED = 7
EXPECTED_METRICS = ("g_loss_A", "d_loss_B", "seg_loss", "g_loss_B", "d_loss_A", "d_loss_P",
                    "d_loss_P_ll", "dice_fake_B", "signal_target_foreground_slices", "signal_d_P_accuracy")
# Updates that run e_B in training mode, so may move its batch-norm statistics.
E_B_TRAINING_UPDATES = {"g_A", "seg", "de_B"}


def tiny_config(decoder_dropout=TINY_MODEL.decoder_dropout, **synthmix):
    """TrainConfig at the tiny size; keyword arguments set SynthMixConfig fields. Tests that
    recompute an update's values by hand switch de_B's (random) dropout off."""
    mix = SynthMixConfig(k=4, inspector_ndf=4, **synthmix)
    return TrainConfig(model=dataclasses.replace(TINY_MODEL, decoder_dropout=decoder_dropout), synthmix=mix,
                       batch_size=BATCH, pool_size=3, seed=SEED)


def build_seeded(cfg):
    keras.utils.set_random_seed(SEED)
    return build_task(cfg)


def random_batch(seed=0):
    """(A, gt_A, B): images uniform in [-1, 1], labels one-hot of random classes 0..4."""
    rng = np.random.default_rng(seed)
    shape = (BATCH, TINY_MODEL.image_size, TINY_MODEL.image_size, 1)
    source = tf.constant(rng.uniform(-1.0, 1.0, shape), tf.float32)
    target = tf.constant(rng.uniform(-1.0, 1.0, shape), tf.float32)
    labels = tf.one_hot(rng.integers(0, TINY_MODEL.num_classes, shape[:3]), TINY_MODEL.num_classes)
    return source, labels, target


def assert_all_finite(metrics):
    """Losses are finite float32 and no update was skipped as non-finite."""
    assert int(metrics["skipped_updates"]) == 0
    for key, value in metrics.items():
        value = np.asarray(value)
        if key != "skipped_updates":
            assert value.dtype == np.float32, (key, value.dtype)
        assert np.all(np.isfinite(value)), (key, value)


# --- which variables each update changes ------------------------------------------------------

def scoped_networks(task):
    """{scope: network} for the nine SIFA scopes, plus the inspector of a MixingTask."""
    networks = {scope: getattr(task.networks, scope) for scope in SIFANetworks.SCOPES}
    if hasattr(task, "inspector"):
        networks["inspector"] = task.inspector
    return networks


def update_scopes(name):
    if name == GENERATORS:  # the merged schedule's update of g_A and de_B
        return UPDATE_SCOPES["g_A"] + UPDATE_SCOPES["de_B"]
    return UPDATE_SCOPES.get(name, (name,))  # the inspector update changes the inspector


def snapshot(networks):
    """{(scope, path): numpy copy} of every trainable variable."""
    return {(scope, v.path): v.numpy().copy()
            for scope, network in networks.items() for v in network.trainable_variables}


def batch_norm_statistics(task):
    return [v.numpy().copy() for v in task.networks.e_B.non_trainable_variables]


def check_each_update_changes_only_its_own_variables(task):
    """Runs the updates of one step in order (in the task's update schedule); after each, the
    variables of its scopes have moved and every other trainable variable is bit-for-bit
    unchanged. Returns the names of the updates that moved e_B's batch-norm moving statistics
    (non-trainable), and the step's metrics."""
    networks = scoped_networks(task)
    ctx = task.new_context(*random_batch())
    if task.merged:
        task.merged_forward(ctx)  # moves e_B's statistics before the first update
    moved_statistics = set()
    for name in task.update_order:
        before, statistics_before = snapshot(networks), batch_norm_statistics(task)
        task.update_function(name)(ctx)
        after = snapshot(networks)
        own = set(update_scopes(name))
        changed = {key for key in before if not np.array_equal(before[key], after[key])}
        foreign = sorted(key for key in changed if key[0] not in own)
        assert not foreign, f"update_{name} changed {foreign}"
        own_keys = [key for key in before if key[0] in own]
        # A bias followed by instance/batch norm gets a zero gradient up to rounding, so it
        # may legitimately stay put; every kernel and normalisation parameter must move.
        still = sorted(key for key in own_keys if key not in changed)
        assert not [key for key in still if not key[1].endswith("bias")], f"update_{name} left {still}"
        assert len(changed) >= 0.9 * len(own_keys), f"update_{name} left {still}"
        if not all(np.array_equal(b, a) for b, a in zip(statistics_before, batch_norm_statistics(task))):
            moved_statistics.add(name)
    return moved_statistics, ctx["metrics"]


@pytest.fixture(scope="module")
def sifa_task():
    return build_seeded(tiny_config(decoder_dropout=0.0))


def test_each_update_changes_exactly_its_own_variables(sifa_task):
    assert sifa_task.update_order == ("g_A", "d_B", "seg", "de_B", "d_A", "d_P", "d_P_ll")
    moved_statistics, _ = check_each_update_changes_only_its_own_variables(sifa_task)
    assert "seg" in moved_statistics
    assert moved_statistics <= E_B_TRAINING_UPDATES


# --- one full step on a fresh task ------------------------------------------------------------

@pytest.fixture(scope="module")
def first_step():
    """A fresh task, what its networks give before the step, and one full eager step."""
    task = build_seeded(tiny_config())
    source, labels, target = random_batch(seed=1)
    n = task.networks
    before = {
        "fake_B": n.g_A(source).numpy(),
        "d_B_real": n.d_B(target).numpy(),
        "gan_iterations": int(task.gan_optimizer.iterations),
        "seg_iterations": int(task.seg_optimizer.iterations),
    }
    before["d_B_fake"] = n.d_B(before["fake_B"]).numpy()
    metrics, images = task.train_step(source, labels, target)
    return task, source, before, metrics, images


def test_full_step_metrics_are_finite_and_complete(first_step):
    _, _, _, metrics, images = first_step
    assert set(EXPECTED_METRICS) <= set(metrics)
    assert_all_finite(metrics)
    for key in ("A", "B", "fake_B", "fake_A", "cycle_A", "cycle_B", "seg_logits"):
        assert np.all(np.isfinite(images[key])), key


def test_d_B_sees_the_fake_B_from_before_the_g_A_update_through_the_pool(first_step):
    task, source, before, metrics, images = first_step
    assert int(task.pool_B.count) == 1 and int(task.pool_A.count) == 1
    pooled = task.pool_B.images[0].numpy()
    np.testing.assert_allclose(pooled, before["fake_B"], atol=1e-5)
    after = task.networks.g_A(source).numpy()
    # The step's fake_B (used by seg and later updates) comes from the updated g_A ...
    np.testing.assert_allclose(images["fake_B"], after, atol=1e-5)
    # ... which differs from the one in the pool by far more than the tolerance above.
    assert np.abs(after - pooled).max() > 1e-3
    # d_B's loss was computed on B and on the pooled (pre-update) fake_B with d_B's initial weights.
    real, fake = before["d_B_real"], before["d_B_fake"]
    expected = 0.5 * (np.mean((real - 1.0) ** 2) + np.mean(fake ** 2))
    np.testing.assert_allclose(float(metrics["d_loss_B"]), expected, rtol=1e-5)


def test_shared_gan_adam_advances_six_times_per_step_and_seg_adam_once(first_step):
    task, _, before, _, _ = first_step
    assert int(task.gan_optimizer.iterations) - before["gan_iterations"] == 6
    assert int(task.seg_optimizer.iterations) - before["seg_iterations"] == 1


# --- g_loss_A by hand -------------------------------------------------------------------------

def test_g_loss_A_is_cycle_plus_d_B_generator_loss(sifa_task):
    task, n = sifa_task, sifa_task.networks
    source, labels, target = random_batch(seed=2)
    # The same forward values update_g_A computes, with the weights it starts from.
    fake_B = n.g_A(source)
    latent_B, _ = n.e_B(target, training=True)
    cycle_B = n.g_A(n.de_B([latent_B, target])).numpy()
    latent_fake_B, _ = n.e_B(fake_B, training=True)
    cycle_A = n.de_B([latent_fake_B, fake_B]).numpy()
    d_B_fake = n.d_B(fake_B).numpy()
    cycle = 10.0 * (np.mean(np.abs(source.numpy() - cycle_A)) + np.mean(np.abs(target.numpy() - cycle_B)))
    adversarial = np.mean((d_B_fake - 1.0) ** 2)
    assert adversarial > 0.1 and cycle > 0.1  # both terms matter at the tolerance below

    ctx = task.new_context(source, labels, target)
    task.update_g_A(ctx)
    np.testing.assert_allclose(float(ctx["metrics"]["g_loss_A"]), cycle + adversarial, rtol=1e-5)


# --- mixed precision --------------------------------------------------------------------------

@pytest.fixture
def float32_policy_afterwards():
    yield
    keras.mixed_precision.set_dtype_policy("float32")


def test_mixed_bfloat16_step_gives_finite_float32_losses(float32_policy_afterwards):
    del float32_policy_afterwards
    keras.utils.set_random_seed(SEED)
    task = SIFATask(TrainConfig(model=TINY_MODEL, batch_size=BATCH, pool_size=3, seed=SEED,
                                runtime=RuntimeConfig(precision="mixed_bfloat16")))
    assert task.networks.e_B.get_layer("c1").compute_dtype == "bfloat16"
    metrics, _ = task.train_step(*random_batch(seed=3))
    assert set(EXPECTED_METRICS) <= set(metrics)
    assert_all_finite(metrics)


# --- non-finite values -------------------------------------------------------------------------


def test_a_nan_batch_skips_every_update_and_leaves_the_weights_alone():
    task = build_seeded(tiny_config())
    source, labels, target = random_batch(seed=5)
    poisoned = tf.tensor_scatter_nd_update(source, [[0, 0, 0, 0]], [float("nan")])
    before = [v.numpy().copy() for v in task.scope_variables(task.networks.SCOPES)]
    statistics = batch_norm_statistics(task)
    metrics, _ = task.train_step(poisoned, labels, target)
    assert int(metrics["skipped_updates"]) == len(task.update_order)
    after = [v.numpy() for v in task.scope_variables(task.networks.SCOPES)]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # e_B's forward passes (on B, finite, and on the NaN fake_B) moved its batch-norm statistics;
    # every update that ran them was skipped, so they are back where they were.
    assert all(np.array_equal(a, b) for a, b in zip(statistics, batch_norm_statistics(task)))
    assert int(task.pool_B.count) == 0  # the NaN fake_B is not pooled
    assert int(task.pool_A.count) == 1  # fake_A comes from the finite B: pooled
    metrics, _ = task.train_step(source, labels, target)
    assert int(metrics["skipped_updates"]) == 0
