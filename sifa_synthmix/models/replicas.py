"""The cross-replica helpers a train step calls, so that it can be written for one replica.

The step is written for one replica that sees the whole batch. Under a strategy each replica
sees `global batch / replicas` samples and its losses are local means; three things make the
result equal to the one-replica run with the global batch:
- gradients are divided by the number of replicas before the optimizer all-reduces (sums)
  them, which makes every local mean a share of the global mean (compute_average_loss style);
- statistics that are ratios of batch sums (Dice, the cross-entropy's class weights, e_B's
  batch norm) are summed over the replicas first (`cross_replica_sum`; all-reduce passes
  gradients through as an all-reduce, so the shares above stay right), unless the run asks
  for per-replica statistics;
- random draws and the fake pools are made for the global batch, identically on every
  replica, and each replica takes its slice (`replica_slice`).
Outside a strategy (or with one replica) every helper is the identity.
"""
import tensorflow as tf


def _replica_context():
    """The replica context when there is more than one replica, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_index():
    """This replica's index in the sync group (a Python int); 0 outside a strategy."""
    context = _replica_context()
    return 0 if context is None else int(tf.get_static_value(context.replica_id_in_sync_group))


def cross_replica_sum(value):
    """The sum of `value` over the replicas (differentiable); `value` outside a strategy."""
    context = _replica_context()
    return value if context is None else context.all_reduce(tf.distribute.ReduceOp.SUM, value)


def all_gather(value):
    """The replicas' batches concatenated in replica order: the global batch."""
    context = _replica_context()
    return value if context is None else context.all_gather(value, axis=0)


def replica_slice(global_batch):
    """This replica's part of a tensor whose first axis is the global batch.

    Replica r holds samples [r * n, (r + 1) * n) of every global batch, as
    `experimental_distribute_dataset` splits them."""
    context = _replica_context()
    if context is None:
        return global_batch
    replicas = context.num_replicas_in_sync
    per_replica = tf.reshape(global_batch, tf.concat([[replicas, -1], tf.shape(global_batch)[1:]], axis=0))
    local = tf.gather(per_replica, context.replica_id_in_sync_group)
    local.set_shape([global_batch.shape[0] // replicas, *global_batch.shape[1:]])
    return local


def apply_if(condition, apply_fn, args):
    """Runs `apply_fn(*args)` (which applies optimizer updates) when `condition` holds.

    The condition must be the same on every replica. A strategy whose all-reduce is a
    merge_call cannot run one inside tf.cond in replica context, so there the cond runs in
    cross-replica context around each replica's call, as Keras' LossScaleOptimizer does; the
    replicas' `args` (their gradients) reach their own calls."""
    context = tf.distribute.get_replica_context()
    if (context is None or context.num_replicas_in_sync == 1
            or tf.__internal__.distribute.strategy_supports_no_merge_call()):
        tf.cond(condition, lambda: _run_and_flag(apply_fn, *args), lambda: tf.constant(False))
        return

    def cross_replica(strategy, condition, *per_replica_args):
        first = strategy.experimental_local_results(condition)[0]
        tf.cond(first, lambda: _run_and_flag(strategy.extended.call_for_each_replica, apply_fn, per_replica_args),
                lambda: tf.constant(False))

    context.merge_call(cross_replica, args=(condition, *args))


def _run_and_flag(fn, *args):
    fn(*args)
    return tf.constant(True)
