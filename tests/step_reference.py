"""Every update's loss and gradients from fixed weights and a fixed batch: the record that shows a
faster step still computes what the step computed before.

    python tests/step_reference.py > tests/data/step_reference.json

tests/data/step_reference.json was written by this script at commit 88afabb, before the step was
made faster (issue 15); tests/test_step_reference.py computes the same with today's code.

Each update of one step runs in the official order on the same fixed weights: the optimizer step
is replaced by a recorder, so no update changes what the next one sees. (With the weights moving,
Adam's first step, lr * g / (|g| + epsilon), turns float rounding in gradients near zero into
different moves, and the later losses of a step drift by up to a few percent between two runs
that differ only in rounding; the gradients themselves agree to about 1e-6.) The weights come
from a stateless draw keyed by each variable's path, not from the layers' initialisers.
"""
import json
import os
import pathlib
import sys
import zlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position

from sifa_synthmix.config import (  # noqa: E402  pylint: disable=wrong-import-position
    ModelConfig, RuntimeConfig, SynthMixConfig, TrainConfig)
from sifa_synthmix.training.task_factory import build_task  # noqa: E402  pylint: disable=wrong-import-position

RECORD = pathlib.Path(__file__).resolve().parent / "data" / "step_reference.json"
PROTOCOLS = ("none", "synthmix")
BATCH = 2
MODEL = ModelConfig(image_size=32, ngf=8, ndf=4, encoder_base=4, num_classes=5, decoder_dropout=0.0)


def reference_config(protocol, graph_optimizer="off"):
    return TrainConfig(model=MODEL, synthmix=SynthMixConfig(protocol=protocol, k=4, inspector_ndf=4),
                       batch_size=BATCH, pool_size=3, seed=11,
                       runtime=RuntimeConfig(precision="float32", graph_optimizer=graph_optimizer))


def path_noise(path, shape, salt):
    """Standard normal numbers keyed by a variable's path (numpy, also while a function is traced)."""
    with tf.init_scope():
        return tf.random.stateless_normal(shape, seed=[zlib.crc32(path.encode("utf-8")), salt]).numpy()


def _fixed_value(variable):
    """A deterministic value for a network variable, by its path: kernels ~ N(0, 1 / fan-in),
    scales about 1, moving variances 1, moving means 0, offsets and biases small."""
    path, shape = variable.path, tuple(variable.shape)
    noise = path_noise(path, shape, 7)
    name = path.rsplit("/", 1)[-1]
    if name == "kernel":
        return noise / np.sqrt(np.prod(shape[:-1]))
    if name == "gamma":
        return 1.0 + 0.05 * noise
    if name == "moving_variance":
        return np.ones(shape)
    if name == "moving_mean":
        return np.zeros(shape)
    return 0.02 * noise


def set_fixed_weights(task):
    """Every weight of the task's networks (and inspector) from `_fixed_value`."""
    models = [getattr(task.networks, scope) for scope in task.networks.SCOPES]
    if hasattr(task, "inspector"):
        models.append(task.inspector)
    for model in models:
        for variable in model.weights:
            variable.assign(_fixed_value(variable).astype(np.float32))


def fixed_batch():
    """(source images, one-hot source labels, target images)."""
    size, classes = MODEL.image_size, MODEL.num_classes
    images = tf.random.stateless_uniform([2, BATCH, size, size, 1], seed=[3, 1], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([BATCH, size, size], seed=[3, 2], maxval=classes, dtype=tf.int32)
    return images[0], tf.one_hot(labels, classes), images[1]


def gradient_summary(variables, gradients):
    """{variable path: [norm, projection on a fixed random direction]} of one update's gradients."""
    return {v.path: [float(tf.norm(g)), float(np.sum(g.numpy() * path_noise(v.path, tuple(v.shape), 13)))]
            for v, g in zip(variables, gradients)}


def update_records(protocol, graph_optimizer="off"):
    """{update: {"loss", "gradients"}} of one step's updates, all from the fixed weights."""
    task = build_task(reference_config(protocol, graph_optimizer))
    set_fixed_weights(task)
    records, current = {}, []

    def record(ctx, optimizer, tape, loss, variables):
        del ctx, optimizer
        records[current[-1]] = {"loss": float(loss),
                                "gradients": gradient_summary(variables, tape.gradient(loss, variables))}

    task.minimize = record
    ctx = task.new_context(*fixed_batch())
    for name in task.update_order:
        current.append(name)
        getattr(task, f"update_{name}")(ctx)
    return records


def main():
    print(json.dumps({protocol: update_records(protocol) for protocol in PROTOCOLS}, indent=0))


if __name__ == "__main__":
    main()
