"""Training under a tf.distribute strategy, and the cross-replica helpers the step uses.

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
import json
import os
import tempfile

import tensorflow as tf

from sifa_synthmix.errors import ToolkitError

DISTRIBUTIONS = ("none", "mirrored", "multi_worker")


class DistributionError(ToolkitError):
    """A distribution setting that cannot work (bad TF_CONFIG, batch not divisible, ...)."""


# One strategy per process: MultiWorkerMirroredStrategy may be created only once.

_STRATEGIES = {}


def build_strategy(kind):
    """The strategy of --distribution, one per kind and process (later calls return it).

    Call it before other TensorFlow work: MultiWorkerMirroredStrategy configures the
    collective runtime, which TensorFlow allows only at start-up."""
    if kind not in _STRATEGIES:
        if kind == "none":
            strategy = tf.distribute.get_strategy()
        elif kind == "mirrored":
            strategy = tf.distribute.MirroredStrategy()
        elif kind == "multi_worker":
            _check_tf_config()
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            raise DistributionError(f"unknown distribution {kind!r}; expected one of {DISTRIBUTIONS}")
        _STRATEGIES[kind] = strategy
    return _STRATEGIES[kind]


def _check_tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise DistributionError("--distribution=multi_worker needs the TF_CONFIG environment variable "
                                '({"cluster": {"worker": [host:port, ...]}, "task": {"type": "worker", '
                                '"index": i}})')
    try:
        tf_config = json.loads(raw)
        task = tf_config["task"]
        members = tf_config["cluster"].get(task["type"], [])
        if not 0 <= int(task["index"]) < len(members):
            raise ValueError(f"task {task} is not one of the cluster's {task['type']} entries")
    except (ValueError, KeyError, TypeError) as error:
        raise DistributionError(f"TF_CONFIG is not a usable cluster spec: {error}") from None


def is_chief(strategy):
    """True for the process that writes checkpoints, TensorBoard events and config files."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def task_id(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    return 0 if resolver is None or resolver.task_id is None else int(resolver.task_id)


# ---------------------------------------------------------------- in the replica function
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


# ------------------------------------------------------------------------ in the trainer
def is_distributed(strategy):
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def check_run(strategy, cfg):
    """Refuses settings this strategy cannot train, with one clear message."""
    if not is_distributed(strategy):
        return
    if cfg.batch_size % strategy.num_replicas_in_sync:
        raise DistributionError(f"--batch_size={cfg.batch_size} is the global batch and must be divisible by "
                                f"the {strategy.num_replicas_in_sync} replicas")
    for flag in ("jit_compile", "deterministic"):
        if getattr(cfg, flag):
            raise DistributionError(f"--{flag} is not supported with --distribution={cfg.distribution} (not tested)")


def distributed_step(strategy, replica_step, jit_compile):
    """The tf.function the trainer calls with (distributed) batches; returns (metrics, images).

    Metrics are the global batch's (every replica computes the same value, or a local mean
    of an equal share); images are the first local replica's."""
    if not is_distributed(strategy):
        from sifa_synthmix.traced_model import compiled_step  # pylint: disable=import-outside-toplevel

        return compiled_step(replica_step, jit_compile)

    def float_metrics_step(*batches):
        metrics, images = replica_step(*batches)
        return {name: tf.cast(value, tf.float32) for name, value in metrics.items()}, images

    def step(*batches):
        metrics, images = strategy.run(float_metrics_step, args=batches)
        metrics = {name: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
                   for name, value in metrics.items()}
        images = {name: strategy.experimental_local_results(value)[0] for name, value in images.items()}
        return metrics, images

    return tf.function(step, autograph=False)


def distribute_dataset(strategy, dataset):
    """Global batches split over the replicas. Several workers each read every record and keep
    their share of each batch (sharding by data, not by file: a dataset may have few files)."""
    if not is_distributed(strategy):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return strategy.experimental_distribute_dataset(dataset.with_options(options))


def local_batch(strategy, batch):
    """A distributed batch as this process's samples, concatenated (the batch itself without a strategy)."""
    if not is_distributed(strategy):
        return batch
    return tf.nest.map_structure(lambda value: tf.concat(strategy.experimental_local_results(value), 0), batch)


def scratch_dir(strategy):
    """Where a non-chief worker writes the checkpoint it must write too (removed after each save)."""
    return os.path.join(tempfile.gettempdir(), f"sifa_synthmix_worker{task_id(strategy)}_{os.getpid()}")
