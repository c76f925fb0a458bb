"""SIFA's loss functions, as the official TF1 code computes them.

Every function casts its inputs to float32 first, so the losses stay in float32
under a mixed precision policy. The segmentation losses take logits and one-hot
labels of shape [..., C]; C is read from the last axis. A one-hot row may be all
zeros (a label value >= C, "no class"): such a pixel adds nothing to the sums
and only counts in the mean over pixels of the cross-entropy, as in the
official code.
"""
import tensorflow as tf

from sifa_synthmix.models.replicas import cross_replica_sum

_PROBABILITY_FLOOR = 0.005
_DICE_EPSILON = 1e-7


def _float32(tensor):
    return tf.cast(tensor, tf.float32)


def lsgan_generator(pred):
    """Least-squares GAN loss minimised by the generator: mean((D(fake) - 1)^2)."""
    return tf.reduce_mean(tf.square(_float32(pred) - 1.0))


def lsgan_discriminator(real_pred, fake_pred):
    """Least-squares GAN loss minimised by the discriminator."""
    real_term = tf.reduce_mean(tf.square(_float32(real_pred) - 1.0))
    fake_term = tf.reduce_mean(tf.square(_float32(fake_pred)))
    return 0.5 * (real_term + fake_term)


def cycle_consistency(real, reconstructed):
    """Mean absolute difference between an image and its cycle reconstruction."""
    return tf.reduce_mean(tf.abs(_float32(real) - _float32(reconstructed)))


def _all_but_class_axis(tensor):
    return tf.range(tf.rank(tensor) - 1)


def weighted_cross_entropy(logits, onehot, over_replicas=False):
    """Softmax cross-entropy with class weight 1 - (pixels of the class / labelled pixels).

    The weights are computed over the whole batch (under a tf.distribute strategy: the
    replica's batch, or with `over_replicas` the global batch). Probabilities are clipped to
    [0.005, 1] before the log. A batch without any labelled pixel gives 0 (the
    official code divides 0 by 0 there and returns NaN).
    """
    onehot = _float32(onehot)
    probabilities = tf.nn.softmax(_float32(logits), axis=-1)
    class_pixels = tf.reduce_sum(onehot, axis=_all_but_class_axis(onehot))
    if over_replicas:
        class_pixels = cross_replica_sum(class_pixels)
    class_weights = 1.0 - tf.math.divide_no_nan(class_pixels, tf.reduce_sum(class_pixels))
    log_probabilities = tf.math.log(tf.clip_by_value(probabilities, _PROBABILITY_FLOOR, 1.0))
    per_pixel = -tf.reduce_sum(class_weights * onehot * log_probabilities, axis=-1)
    return tf.reduce_mean(per_pixel)


def dice_loss(logits, onehot, over_replicas=False):
    """1 - mean over classes of the soft Dice 2|P.G| / (|P|^2 + |G|), on softmax probabilities.

    The sums run over the batch (with `over_replicas`, the global batch of a strategy)."""
    onehot = _float32(onehot)
    probabilities = tf.nn.softmax(_float32(logits), axis=-1)
    spatial_axes = _all_but_class_axis(onehot)
    sums = tf.stack([tf.reduce_sum(probabilities * onehot, axis=spatial_axes),
                     tf.reduce_sum(tf.square(probabilities), axis=spatial_axes),
                     tf.reduce_sum(onehot, axis=spatial_axes)])
    intersection, prediction_energy, label_size = tf.unstack(cross_replica_sum(sums) if over_replicas else sums)
    dice_per_class = 2.0 * intersection / (prediction_energy + label_size + _DICE_EPSILON)
    return 1.0 - tf.reduce_mean(dice_per_class)


def l2_regularisation(variables):
    """Sum of tf.nn.l2_loss (sum(v^2) / 2) over the given variables; 0 for none."""
    return tf.add_n([tf.constant(0.0)] + [tf.nn.l2_loss(_float32(v)) for v in variables])
