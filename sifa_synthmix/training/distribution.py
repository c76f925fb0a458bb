"""Training under a tf.distribute strategy: the strategy of --distribution (one per process), the
checks of a run against it, and the step and datasets distributed over its replicas.

The step is written for one replica that sees the whole batch; the helpers it calls to stay equal
to the one-replica run with the global batch are replicas.py's.
"""
import json
import os
import tempfile

import tensorflow as tf

from sifa_synthmix.errors import ToolkitError
from sifa_synthmix.models.traced_model import compiled_step

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
        if getattr(cfg.runtime, flag):
            raise DistributionError(f"--{flag} is not supported with --distribution={cfg.runtime.distribution} "
                                    "(not tested)")


def distributed_step(strategy, replica_step, jit_compile):
    """The tf.function the trainer calls with (distributed) batches; returns (metrics, images).

    Metrics are the global batch's (every replica computes the same value, or a local mean
    of an equal share); images are the first local replica's."""
    if not is_distributed(strategy):
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
