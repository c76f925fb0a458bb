"""Mixing two batches: the SynthMix operation (eq. 2, 3) and the Mixup and CutMix baselines.

Convention: 1 = target. Every label returned here is the share of the result
that comes from `target`.
"""
import keras
import tensorflow as tf


def mix(target, source, mask):
    """mask * target + (1 - mask) * source; the mask broadcasts over channels
    (images or one-hot labels) and is cast to the dtype of `target`."""
    mask = tf.cast(mask, target.dtype)
    return mask * target + (1 - mask) * tf.cast(source, target.dtype)


def mixup_mask(batch_size, seed=None, alpha=1.0):
    """Mixup's mask: lam ~ Beta(alpha, alpha) per sample as [B, 1, 1, 1], and lam [B]."""
    lam = keras.random.beta([batch_size], alpha, alpha, seed=seed)
    return tf.reshape(lam, [-1, 1, 1, 1]), lam


def cutmix_mask(batch_size, height, width, seed=None):
    """CutMix's mask: one random box per sample as [B, H, W, 1], and its area share [B].

    The box's area share r is drawn from U(0, 1); its sides are round(H sqrt(r))
    and round(W sqrt(r)) and it lies wholly inside the image (no clipping), its
    corner uniform over the valid positions; the share returned is the box's
    exact pixel fraction.
    """
    draws = keras.random.uniform([3, batch_size], seed=seed)
    side_scale = tf.sqrt(draws[0])
    box_inside_rows = _random_interval_indicator(height, side_scale, draws[1])
    box_inside_cols = _random_interval_indicator(width, side_scale, draws[2])
    box = box_inside_rows[:, :, tf.newaxis] * box_inside_cols[:, tf.newaxis, :]
    return box[..., tf.newaxis], tf.reduce_mean(box, axis=[1, 2])


def mixup(target, source, seed=None, alpha=1.0):
    """Mixup: lam * target + (1 - lam) * source with lam ~ Beta(alpha, alpha) per sample.

    `seed` is passed to keras.random (a SeedGenerator draws fresh values on every call).
    Returns (mixed, lam [B]).
    """
    mask, lam = mixup_mask(tf.shape(target)[0], seed, alpha)
    return mix(target, source, mask), lam


def cutmix(target, source, seed=None):
    """CutMix: one random box of `target` pasted into `source` (see cutmix_mask).

    Returns (mixed, share [B]).
    """
    shape = tf.shape(target)
    mask, share = cutmix_mask(shape[0], shape[1], shape[2], seed)
    return mix(target, source, mask), share


def _random_interval_indicator(length, scale, position_draw):
    """[B, length] float indicator of an interval of round(scale * length) pixels
    starting at floor(position_draw * (number of valid starts))."""
    length_f = tf.cast(length, tf.float32)
    size = tf.round(scale * length_f)
    start = tf.floor(position_draw * (length_f - size + 1))
    positions = tf.range(length_f)[tf.newaxis, :]
    inside = (positions >= start[:, tf.newaxis]) & (positions < (start + size)[:, tf.newaxis])
    return tf.cast(inside, tf.float32)
