"""The SynthMix mask: a random binary k x k block mask, upsampled to the image size."""
import numbers

import keras
import tensorflow as tf

INTERPOLATIONS = ("nearest", "bilinear")


class SynthMixMask(keras.layers.Layer):
    """Draws per-sample masks (paper, Sec. 2.2).

    Each of the k x k cells is 1 with probability lambda; lambda is drawn per
    sample from U(0, 1) (`lam="uniform"`) or fixed (`lam=0.3`). The k x k mask
    is upsampled to image_size x image_size: "nearest" makes every
    (image_size/k)^2 block constant, so the blocks line up with the Inspector's
    k x k cells; "bilinear" gives soft borders.

    Randomness comes from a keras.random.SeedGenerator owned by the layer:
    under a fixed `seed` the sequence of masks is reproducible, and each call
    (also inside tf.function) draws fresh masks.

    Call with a batch size (int or scalar tensor) or with a reference batch
    whose first dimension is the batch size. Returns (mask_k [B, k, k, 1],
    mask [B, H, W, 1]), both float32.
    """

    def __init__(self, k, image_size, lam="uniform", interpolation="nearest", seed=None, **kwargs):
        super().__init__(**kwargs)
        if image_size % k:
            raise ValueError(f"k={k} must divide image_size={image_size}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if lam != "uniform" and not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f'lam must be "uniform" or a probability, got {lam!r}')
        self.k = k
        self.image_size = image_size
        self.lam = lam
        self.interpolation = interpolation
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def __call__(self, batch_size_or_reference, **kwargs):
        # Keras passes only tensors positionally, so a Python batch size becomes a constant.
        if isinstance(batch_size_or_reference, numbers.Integral):
            batch_size_or_reference = tf.constant(batch_size_or_reference, tf.int32)
        return super().__call__(batch_size_or_reference, **kwargs)

    @staticmethod
    def _batch_size(batch_size_or_reference):
        """The batch size, as a Python int when it is known statically."""
        if batch_size_or_reference.shape.rank == 0:
            static = tf.get_static_value(batch_size_or_reference)
            return tf.cast(batch_size_or_reference, tf.int32) if static is None else int(static)
        return batch_size_or_reference.shape[0] or tf.shape(batch_size_or_reference)[0]

    def _lambda(self, batch_size):
        if self.lam == "uniform":
            return keras.random.uniform([batch_size, 1, 1, 1], seed=self.seed_generator)
        return tf.fill([batch_size, 1, 1, 1], float(self.lam))

    def call(self, batch_size_or_reference):
        batch_size = self._batch_size(batch_size_or_reference)
        draws = keras.random.uniform([batch_size, self.k, self.k, 1], seed=self.seed_generator)
        mask_k = tf.cast(draws < self._lambda(batch_size), tf.float32)
        if self.interpolation == "nearest":
            block = self.image_size // self.k
            mask = tf.repeat(tf.repeat(mask_k, block, axis=1), block, axis=2)
        else:
            mask = tf.image.resize(mask_k, [self.image_size, self.image_size], method="bilinear")
        return mask_k, mask

    def get_config(self):
        return {**super().get_config(), "k": self.k, "image_size": self.image_size,
                "lam": self.lam, "interpolation": self.interpolation, "seed": self.seed}
