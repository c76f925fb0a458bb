"""SIFA's pool of earlier generator outputs for the discriminator updates.

The pool holds whole batches. While it is filling it stores the new batch and
returns it; once full it returns, with probability 0.5, a random stored batch
and puts the new batch in its place, and otherwise returns the new batch.
All state is in variables and the randomness comes from the pool's own
tf.random.Generator, so the pool runs inside tf.function (also with
jit_compile=True) and is saved and restored by tf.train.Checkpoint.
"""
import tensorflow as tf


class FakeImagePool(tf.Module):
    """A pool of `pool_size` batches of shape `batch_shape` (the batch size must not vary)."""

    def __init__(self, pool_size=50, batch_shape=(8, 256, 256, 1), seed=1234,
                 dtype=tf.float32, name=None):
        super().__init__(name=name)
        self.pool_size = int(pool_size)
        self.batch_shape = tuple(int(dim) for dim in batch_shape)
        self.images = tf.Variable(tf.zeros((self.pool_size,) + self.batch_shape, dtype),
                                  trainable=False, name="images")
        self.count = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="count")
        self.generator = tf.random.Generator.from_seed(seed)

    def __call__(self, fake_batch):
        """Returns the batch to show the discriminator and updates the pool.

        Both random numbers are drawn on every call, so the generator advances
        the same way in the filling and the full phase.
        """
        fake_batch = tf.cast(fake_batch, self.images.dtype)
        coin = self.generator.uniform([])
        random_slot = self.generator.uniform([], 0, self.pool_size, dtype=tf.int64)
        # A non-finite batch is passed through but never stored, so it cannot come back later.
        finite = tf.reduce_all(tf.math.is_finite(fake_batch))
        filling = tf.logical_and(self.count < self.pool_size, finite)
        swap = tf.logical_and(tf.logical_and(self.count >= self.pool_size, finite), coin > 0.5)
        slot = tf.where(self.count < self.pool_size, self.count, random_slot)
        stored_batch = tf.gather(self.images, slot)
        new_content = tf.where(tf.logical_or(filling, swap), fake_batch, stored_batch)
        self.images.scatter_update(tf.IndexedSlices(new_content[tf.newaxis], slot[tf.newaxis]))
        self.count.assign(tf.minimum(self.count + tf.cast(finite, tf.int64), self.pool_size))
        return tf.where(swap, stored_batch, fake_batch)
