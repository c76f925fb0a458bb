"""How updates are applied: the fused Adam kernel against Keras' Adam, dynamic loss scaling, and
which updates are skipped (non-finite or a float16 overflow) with what they leave unchanged."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from sifa_synthmix.training.optimization import DynamicLossScale, FusedAdam, count_skipped_updates, minimize_if_finite


def test_fused_adam_moves_weights_and_slots_as_keras_adam():
    rng = np.random.default_rng(0)
    shapes = [(3, 3, 2, 4), (4,), (5, 7)]
    start = [rng.normal(size=s).astype(np.float32) for s in shapes]
    fused_vars = [keras.Variable(v) for v in start]
    keras_vars = [keras.Variable(v) for v in start]
    fused = FusedAdam(2e-4, beta_1=0.5, name="fused")
    plain = keras.optimizers.Adam(2e-4, beta_1=0.5, epsilon=1e-8, name="plain")
    fused.build(fused_vars)
    plain.build(keras_vars)
    apply_fused = tf.function(lambda grads: fused.apply_gradients(zip(grads, fused_vars)))
    for step in range(5):
        grads = [tf.constant(rng.normal(scale=10.0 ** -step, size=s).astype(np.float32)) for s in shapes]
        apply_fused(grads)
        plain.apply_gradients(zip(grads, keras_vars))
    assert int(fused.iterations) == int(plain.iterations) == 5
    # The kernel computes 1 - beta_2 in float32 (1 - 0.999f = 0.00099998713), Keras in float64 and
    # then rounds (0.001): the second moments differ by 1.3e-5 relative, everything else by rounding.
    for ours, theirs in zip(fused.variables, plain.variables):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-5, atol=1e-9, err_msg=ours.path)
    moved = max(np.abs(v.numpy() - s).max() for v, s in zip(fused_vars, start))
    assert moved > 5e-4  # about lr per step


def test_loss_scale_halves_on_overflow_never_below_one_and_doubles_after_the_growth_interval():
    scale = DynamicLossScale(initial_scale=4.0, growth_interval=3)
    history = []
    for overflowed, applied in [(True, False), (True, False), (True, False), (False, True), (False, True),
                                (False, False), (False, True), (False, True), (True, False), (False, True)]:
        scale.update(tf.constant(overflowed), tf.constant(applied))
        history.append(float(scale.scale))
    # 4 -> 2 -> 1 -> 1 (floor); three applied updates double it (a skipped one does not count);
    # an overflow halves it and restarts the count.
    assert history == [2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0]
    assert int(scale.good_updates) == 1
    np.testing.assert_allclose(scale.unscale([tf.constant([2.0, 4.0])])[0], [2.0, 4.0])


class Quadratic:
    """One weight vector w and the loss sum(factor * w^2); each minimize returns its flags."""

    def __init__(self, loss_scale=None):
        self.w = keras.Variable(np.ones(3, np.float32))
        self.statistic = keras.Variable(np.zeros(2, np.float32), trainable=False)
        self.optimizer = FusedAdam(0.1, name="quadratic")
        self.optimizer.build([self.w])
        self.loss_scale = loss_scale

    def minimize(self, factor, gradient_factor=1.0):
        snapshot = [(self.statistic, tf.identity(self.statistic))]
        self.statistic.assign_add(tf.ones(2))  # a "forward pass" that moves a statistic
        with tf.GradientTape() as tape:
            w = self.w * 1.0
            # gradient_factor scales only the gradient (custom gradient), to fake an overflow
            loss = tf.reduce_sum(factor * _scale_gradient(w, gradient_factor) ** 2)
        flags = minimize_if_finite(self.optimizer, tape, loss, [self.w], self.loss_scale, restore_on_skip=snapshot)
        return [int(f) for f in flags]


@tf.custom_gradient
def _scale_gradient(x, factor):
    return tf.identity(x), lambda upstream: (upstream * factor, None)


def test_a_finite_update_applies_and_keeps_what_it_moved():
    model = Quadratic()
    assert model.minimize(1.0) == [0, 0]
    assert np.all(model.w.numpy() < 1.0) and np.all(model.statistic.numpy() == 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_loss_is_skipped_and_restores_the_statistics(bad):
    model = Quadratic(DynamicLossScale(initial_scale=8.0))
    assert model.minimize(bad) == [1, 0]  # non-finite, not an overflow: the scale stays
    assert np.all(model.w.numpy() == 1.0) and np.all(model.statistic.numpy() == 0.0)
    assert float(model.loss_scale.scale) == 8.0 and int(model.optimizer.iterations) == 0


def test_an_overflow_of_the_scaled_gradients_lowers_the_scale_and_is_not_counted_as_non_finite():
    model = Quadratic(DynamicLossScale(initial_scale=8.0))
    assert model.minimize(1.0, gradient_factor=np.inf) == [0, 1]
    assert float(model.loss_scale.scale) == 4.0
    assert np.all(model.w.numpy() == 1.0) and np.all(model.statistic.numpy() == 0.0)
    assert model.minimize(1.0) == [0, 0]  # the next finite update applies
    assert np.all(model.w.numpy() < 1.0) and int(model.optimizer.iterations) == 1


def test_at_scale_one_a_non_finite_gradient_is_non_finite():
    model = Quadratic(DynamicLossScale(initial_scale=1.0))
    assert model.minimize(1.0, gradient_factor=np.inf) == [1, 0]


def test_without_loss_scale_a_non_finite_gradient_is_non_finite():
    assert Quadratic().minimize(1.0, gradient_factor=np.nan) == [1, 0]


def test_skipped_update_counts_add_up_and_overflows_appear_only_with_a_loss_scale():
    metrics = {}
    count_skipped_updates(metrics, tf.constant(1, tf.int64))
    count_skipped_updates(metrics, tf.constant(1, tf.int64))
    assert metrics.keys() == {"skipped_updates"} and int(metrics["skipped_updates"]) == 2
    count_skipped_updates(metrics, tf.constant(0, tf.int64), tf.constant(1, tf.int64))
    assert int(metrics["skipped_updates"]) == 2 and int(metrics["loss_scale_overflows"]) == 1
