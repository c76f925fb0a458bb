"""How every update is applied: Adam on TensorFlow's fused kernel (the official TF1 optimizer's),
dynamic loss scaling under float16, and updates skipped when a loss or gradient is not finite."""
import keras
import tensorflow as tf

from sifa_synthmix.models.replicas import apply_if, cross_replica_sum, num_replicas

ADAM_EPSILON = 1e-8  # TF1 AdamOptimizer's default
# Loss-scale state is the same on every replica (its inputs are all-reduced).
_SAME_ON_EVERY_REPLICA = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class FusedAdam(keras.optimizers.Adam):
    """Keras Adam whose per-variable update is one `ResourceApplyAdam` op, the kernel TF1's
    AdamOptimizer (the official SIFA optimizer) runs.

    Same state (iterations, momentums, velocities) and formula as Keras' Adam: with
    t = iterations + 1, m += (g - m)(1 - beta_1), v += (g^2 - v)(1 - beta_2),
    var -= lr sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon). Keras builds that
    from about twenty ops per variable; the fused kernel makes the train step's graph smaller
    and faster to build and run. The bias-correction powers are computed once per apply.
    """

    def __init__(self, learning_rate, beta_1=0.9, beta_2=0.999, epsilon=ADAM_EPSILON, name=None):
        super().__init__(learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, name=name)

    def _distributed_tf_update_step(self, distribution_strategy, grads_and_vars, learning_rate):
        step = tf.cast(self.iterations + 1, tf.float32)
        scalars = {"beta1_power": tf.pow(tf.constant(self.beta_1, tf.float32), step),
                   "beta2_power": tf.pow(tf.constant(self.beta_2, tf.float32), step),
                   "lr": tf.cast(learning_rate, tf.float32), "beta1": tf.constant(self.beta_1, tf.float32),
                   "beta2": tf.constant(self.beta_2, tf.float32), "epsilon": tf.constant(self.epsilon, tf.float32)}

        def apply(variable, gradient):
            index = self._get_variable_index(variable)
            return tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[index].handle, v=self._velocities[index].handle,
                grad=tf.cast(gradient, variable.dtype), **scalars)

        for gradient, variable in grads_and_vars:
            distribution_strategy.extended.update(variable, apply, args=(gradient,), group=False)


class DynamicLossScale(tf.Module):
    """Keras LossScaleOptimizer's dynamic loss scaling, kept beside the optimizer so that the step
    can tell an overflow of the scaled gradients from a non-finite loss.

    The loss is multiplied by `scale` inside the tape and the gradients divided by it, as Keras
    does. After an update whose scaled gradients overflowed the scale halves (never below 1, where
    the scaled gradients are the gradients themselves) and the update is skipped; after
    `growth_interval` applied updates in a row it doubles.
    """

    def __init__(self, initial_scale=2.0 ** 15, growth_interval=2000, name=None):
        super().__init__(name=name)
        self.growth_interval = int(growth_interval)
        self.scale = tf.Variable(float(initial_scale), dtype=tf.float32, name="scale", **_SAME_ON_EVERY_REPLICA)
        self.good_updates = tf.Variable(0, dtype=tf.int64, name="good_updates", **_SAME_ON_EVERY_REPLICA)

    def scale_loss(self, loss):
        return tf.cast(loss, tf.float32) * self.scale

    def unscale(self, gradients):
        scale = self.scale.read_value()
        return [None if g is None else g / tf.cast(scale, g.dtype) for g in gradients]

    def can_overflow(self):
        return self.scale > 1.0

    def update(self, overflowed, applied):
        """Halves the scale after an overflow; doubles it after `growth_interval` applied updates."""
        grow = tf.logical_and(applied, tf.equal(self.good_updates, self.growth_interval - 1))
        scale = tf.where(overflowed, tf.maximum(self.scale * 0.5, 1.0),
                         tf.where(grow, self.scale * 2.0, self.scale))
        good_updates = tf.where(tf.logical_or(overflowed, grow), tf.constant(0, tf.int64),
                                self.good_updates + tf.cast(applied, tf.int64))
        self.scale.assign(scale)
        self.good_updates.assign(good_updates)


def minimize_if_finite(optimizer, tape, loss, variables, loss_scale=None, restore_on_skip=()):
    """One optimizer step on `variables` from the tape's gradients of `loss`, unless something is
    not finite. Returns int64 flags (skipped as non-finite, skipped as a loss-scale overflow).

    With a loss scale the scaled loss is recorded on the tape (re-entered for that) and the
    gradients are unscaled; a finite loss whose scaled gradients are not finite is an overflow:
    the scale halves and the update is skipped. A non-finite loss, or a non-finite gradient
    without a scale (or at scale 1), is a non-finite update. `restore_on_skip` holds (variable,
    value) pairs written back when the update is skipped: e_B's batch-norm statistics, which the
    update's forward passes moved.

    Under a tf.distribute strategy the loss is the replica's mean: its gradients are divided by
    the number of replicas (the optimizer sums them), and one replica's non-finite value skips
    the update on all of them.
    """
    if loss_scale is None:
        gradients = tape.gradient(loss, variables)
    else:
        with tape:
            scaled_loss = loss_scale.scale_loss(loss)
        gradients = loss_scale.unscale(tape.gradient(scaled_loss, variables))
    replicas = num_replicas()
    if replicas > 1:
        gradients = [None if g is None else g / replicas for g in gradients]
    gradients_finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
    bad_loss, bad_gradients = tf.unstack(cross_replica_sum(tf.stack([
        1 - tf.cast(tf.math.is_finite(loss), tf.int64), 1 - tf.cast(gradients_finite, tf.int64)])) > 0)
    apply = tf.logical_not(tf.logical_or(bad_loss, bad_gradients))
    overflowed = tf.constant(False)
    if loss_scale is not None:
        overflowed = tf.logical_and(tf.logical_and(bad_gradients, tf.logical_not(bad_loss)), loss_scale.can_overflow())
        loss_scale.update(overflowed, apply)
    apply_if(apply, lambda grads: optimizer.apply_gradients(zip(grads, variables)), args=(gradients,))
    for variable, value in restore_on_skip:
        variable.assign(tf.where(apply, variable, value))
    skipped = tf.logical_and(tf.logical_not(apply), tf.logical_not(overflowed))
    return tf.cast(skipped, tf.int64), tf.cast(overflowed, tf.int64)


def build_adam(learning_rate, beta_1, name, precision, variables):
    """A FusedAdam built on `variables`, and its DynamicLossScale under mixed_float16 (else None)."""
    optimizer = FusedAdam(learning_rate, beta_1=beta_1, name=name)
    optimizer.build(variables)
    loss_scale = DynamicLossScale(name=f"{name}_loss_scale") if precision == "mixed_float16" else None
    return optimizer, loss_scale


def loss_scale_items(loss_scales):
    """Checkpoint items of the loss scales in {optimizer name: DynamicLossScale or None}."""
    return {f"{name}_loss_scale": scale for name, scale in loss_scales.items() if scale is not None}


def loss_scale_values(loss_scales):
    """{short optimizer name: current scale variable} for TensorBoard (empty without float16)."""
    return {name.removeprefix("adam_"): scale.scale for name, scale in loss_scales.items() if scale is not None}


def count_skipped_updates(metrics, skipped, overflowed=None):
    """Adds an update's flags to the step's counts: skipped_updates (non-finite) and, under a
    loss scale, loss_scale_overflows."""
    counts = {"skipped_updates": skipped} if overflowed is None else {"skipped_updates": skipped,
                                                                      "loss_scale_overflows": overflowed}
    for key, flag in counts.items():
        metrics[key] = metrics.get(key, tf.constant(0, tf.int64)) + flag


def statistics_snapshot(model):
    """(variable, current value) of a model's non-trainable variables (batch-norm statistics),
    for `minimize_if_finite(restore_on_skip=...)`."""
    return [(variable, tf.identity(variable)) for variable in model.non_trainable_variables]
