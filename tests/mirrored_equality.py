"""One device against MirroredStrategy over two logical CPU devices, same weights and global batch;
prints what both runs produced as JSON (tests/test_distribution.py compares them).

    python tests/mirrored_equality.py step --mix_protocol=synthmix   # the product's train step
    python tests/mirrored_equality.py update                         # one minimize_if_finite update

Its own process: the CPU can be split into logical devices only before TensorFlow starts.

"step" starts the task from the fixed weights of tests/step_reference.py and prints, for both
runs, every update's loss and global-batch gradient (its norm and projection per variable) with
the optimizer step replaced by a recorder, so each update sees the same weights (see
step_reference.py for why). The step runs eagerly (the trainer's step function, not traced): the
same Python and ops as the traced step, whose code has no branch on tracing, without tracing and
starting the two-replica graph, and with the networks called op by op (`inline_calls`) rather than
through their own tf.functions (`time python tests/mirrored_equality.py step --mix_protocol=synthmix`:
92 s with the step traced, 29 s eager, 21 s eager and inline; 2026-12-08, AVX-512 EPYC, loaded).
(The product's traced step and optimizer steps under several replicas run in
tests/test_distribution.py's two-worker run.)
"update" trains a small conv net + batch norm with SGD on SIFA's segmentation losses through
`minimize_if_finite` and prints both runs' weight moves: SGD, unlike Adam, is not blind to a
gradient scaled by the wrong replica count.
"""
import dataclasses
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import keras  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position

import step_reference as reference  # noqa: E402  pylint: disable=wrong-import-position
from sifa_synthmix.models import losses  # noqa: E402  pylint: disable=wrong-import-position
from sifa_synthmix.models.traced_model import inline_calls  # noqa: E402  pylint: disable=wrong-import-position
from sifa_synthmix.models.replicas import (  # noqa: E402  pylint: disable=wrong-import-position
    cross_replica_sum, num_replicas)
from sifa_synthmix.training import distribution  # noqa: E402  pylint: disable=wrong-import-position
from sifa_synthmix.training.optimization import minimize_if_finite  # noqa: E402  pylint: disable=wrong-import-position
from sifa_synthmix.training.task_factory import build_task  # noqa: E402  pylint: disable=wrong-import-position

STEPS = 3
GLOBAL_BATCH = 4


def random_batches(size, classes, seed, count=STEPS):
    """`count` global batches of (source image, one-hot source label, target image, one-hot target label)."""
    total = count * GLOBAL_BATCH
    images = tf.random.stateless_uniform([2, total, size, size, 1], seed=[seed, 1], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([2, total, size, size], seed=[seed, 2], maxval=classes, dtype=tf.int32)
    return tf.data.Dataset.from_tensor_slices(
        (images[0], tf.one_hot(labels[0], classes), images[1], tf.one_hot(labels[1], classes))).batch(GLOBAL_BATCH)


def gradient_recorder(task):
    """Replaces the task's optimizer steps by a recorder: each update adds its global-batch loss
    and, per variable, its global gradient's norm and projection to the step's metrics."""
    current = []

    def record(ctx, optimizer, tape, loss, variables):
        del optimizer
        replicas = num_replicas()
        gradients = tape.gradient(loss, variables)
        metrics, name = ctx["metrics"], current[-1]
        metrics[f"{name}/loss"] = cross_replica_sum(loss) / replicas
        for variable, gradient in zip(variables, gradients):
            gradient = cross_replica_sum(gradient / replicas)
            direction = reference.path_noise(variable.path, tuple(variable.shape), 13).astype(np.float32)
            metrics[f"{name}/norm/{variable.path}"] = tf.norm(gradient)
            metrics[f"{name}/projection/{variable.path}"] = tf.reduce_sum(gradient * direction)

    def run_update(update):
        def run(ctx):
            current.append(update.__name__.removeprefix("update_"))
            update(ctx)
        return run

    task.minimize = record
    for name in task.update_order:
        setattr(task, f"update_{name}", run_update(getattr(task, f"update_{name}")))


def update_records(cfg, strategy):
    """Every update's records of one step from the fixed weights (gradient_recorder)."""
    keras.utils.set_random_seed(cfg.seed)
    with strategy.scope():
        task = build_task(cfg)
    reference.set_fixed_weights(task)
    gradient_recorder(task)
    step = distribution.distributed_step(strategy, task.train_step, jit_compile=False).python_function
    batch = next(iter(distribution.distribute_dataset(strategy, random_batches(cfg.model.image_size,
                                                                                cfg.model.num_classes, 7, 1))))
    with inline_calls():  # op by op: eager calls of each network's tf.function would build its gradient graphs
        metrics, _ = step(*batch)
    return {name: float(value) for name, value in metrics.items()}


def run_updates(strategy):
    """The weight move of a conv + synchronised batch norm net after STEPS SGD updates on SIFA's
    cross-entropy + Dice (global batch statistics) + L2 terms."""
    keras.utils.set_random_seed(1)
    with strategy.scope():
        inputs = keras.Input([16, 16, 1])
        hidden = keras.layers.Conv2D(8, 3, padding="same")(inputs)
        hidden = keras.layers.BatchNormalization(synchronized=num_replicas() > 1)(hidden)
        model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(keras.layers.ReLU()(hidden)))
        optimizer = keras.optimizers.SGD(0.5)
        optimizer.build(model.trainable_variables)
    start = np.concatenate([np.ravel(v) for v in model.get_weights()])

    def update(images, labels, *_):
        with tf.GradientTape() as tape:
            logits = model(images, training=True)
            loss = (losses.weighted_cross_entropy(logits, labels, over_replicas=True)
                    + losses.dice_loss(logits, labels, over_replicas=True)
                    + 1e-3 * losses.l2_regularisation(model.trainable_variables))
        return minimize_if_finite(optimizer, tape, loss, model.trainable_variables)

    step = tf.function(lambda *batch: strategy.run(update, args=batch))
    for batch in distribution.distribute_dataset(strategy, random_batches(16, 3, 9)):
        step(*batch)
    return np.concatenate([np.ravel(v) for v in model.get_weights()]) - start


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    single, mirrored = tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    part, flag_args = sys.argv[1], sys.argv[2:]
    if part == "update":
        move_single, move_mirrored = run_updates(single), run_updates(mirrored)
        print(json.dumps({"moved": float(np.linalg.norm(move_single)),
                          "difference": float(np.linalg.norm(move_mirrored - move_single))}))
        return
    protocol = flag_args[0].removeprefix("--mix_protocol=")
    cfg = dataclasses.replace(reference.reference_config(protocol), batch_size=GLOBAL_BATCH)
    print(json.dumps({"replicas": [single.num_replicas_in_sync, mirrored.num_replicas_in_sync],
                      "updates": [update_records(cfg, single), update_records(cfg, mirrored)]}))


if __name__ == "__main__":
    main()
