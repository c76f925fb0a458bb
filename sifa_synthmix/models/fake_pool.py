"""SIFA's pool of earlier generator outputs for the discriminator updates.

The pool holds whole batches. While it is filling it stores the new batch and
returns it; once full it returns, with probability 0.5, a random stored batch
and puts the new batch in its place, and otherwise returns the new batch.
All state is in variables and the random numbers are stateless draws keyed by
(seed, number of calls), so the pool runs inside tf.function (also with
jit_compile=True), is saved and restored by tf.train.Checkpoint, and gives the
same draws on every replica of a tf.distribute strategy.

Under a strategy the pool holds global batches: each replica gathers the
replicas' fakes, every replica makes the same update, and each returns its own
slice. So the discriminators see what a one-replica run would show them.
"""
import tensorflow as tf

from sifa_synthmix.models import replicas

_SAME_ON_EVERY_REPLICA = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                              aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class FakeImagePool(tf.Module):
    """A pool of `pool_size` batches of shape `batch_shape` (the global batch; it must not vary)."""

    def __init__(self, pool_size=50, batch_shape=(8, 256, 256, 1), seed=1234,
                 dtype=tf.float32, name=None):
        super().__init__(name=name)
        self.pool_size = int(pool_size)
        self.batch_shape = tuple(int(dim) for dim in batch_shape)
        # The seed is state too, so a restored pool continues the saved pool's draws.
        self.seed = tf.Variable(tf.constant(seed, tf.int64), name="seed", **_SAME_ON_EVERY_REPLICA)
        self.images = tf.Variable(tf.zeros((self.pool_size,) + self.batch_shape, dtype),
                                  name="images", **_SAME_ON_EVERY_REPLICA)
        self.count = tf.Variable(tf.constant(0, tf.int64), name="count", **_SAME_ON_EVERY_REPLICA)
        self.calls = tf.Variable(tf.constant(0, tf.int64), name="calls", **_SAME_ON_EVERY_REPLICA)

    def __call__(self, fake_batch):
        """Returns the batch to show the discriminator and updates the pool.

        Both random numbers are drawn on every call, so the draws advance the
        same way in the filling and the full phase.
        """
        fake_batch = replicas.all_gather(tf.cast(fake_batch, self.images.dtype))
        key = tf.stack([self.seed.read_value(), 2 * self.calls.read_value()])
        coin = tf.random.stateless_uniform([], seed=key)
        random_slot = tf.random.stateless_uniform([], seed=key + [0, 1], minval=0, maxval=self.pool_size,
                                                  dtype=tf.int64)
        # A non-finite batch is passed through but never stored, so it cannot come back later.
        finite = tf.reduce_all(tf.math.is_finite(fake_batch))
        filling = tf.logical_and(self.count < self.pool_size, finite)
        swap = tf.logical_and(tf.logical_and(self.count >= self.pool_size, finite), coin > 0.5)
        slot = tf.where(self.count < self.pool_size, self.count, random_slot)
        stored_batch = tf.gather(self.images, slot)
        new_content = tf.where(tf.logical_or(filling, swap), fake_batch, stored_batch)
        self.images.scatter_update(tf.IndexedSlices(new_content[tf.newaxis], slot[tf.newaxis]))
        self.count.assign(tf.minimum(self.count + tf.cast(finite, tf.int64), self.pool_size))
        self.calls.assign_add(1)
        return replicas.replica_slice(tf.where(swap, stored_batch, fake_batch))
