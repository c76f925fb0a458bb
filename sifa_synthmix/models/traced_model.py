"""Keras functional models whose forward pass is a tf.function of its own.

A SIFA step calls e_B six times, de_B seven, g_A five (issue 15). Called plainly inside the step's
tf.function, every call re-runs Keras' layer-by-layer Python and adds the network's ops (and, under
a tape, their gradient ops) to the step's graph again. Here each network is traced once per training
mode and input type (dtype and shape), and TensorFlow builds the gradient of that function once. At
run time TensorFlow inlines the calls, so the step runs the same ops as before: only Python and
graph-building work is saved. The shape leaves out the batch axis, so that stacked batches of 2B
samples reuse the B-sample trace, except in networks with instance norm on large images
(STATIC_BATCH_MIN_PIXELS): knowing its batch size, instance norm can normalise each sample on its
own instead of transposing the batch (layers.InstanceNorm, which chooses by channel count).

Under a tf.distribute strategy with several replicas each replica traces the step in its own
thread, reading its own copies of the variables: each replica gets its own functions. A network
whose batch norm is synchronised over the replicas (e_B under --sync_batch_norm) is called
plainly: its all-reduce belongs in the step's own graph.
"""
import contextlib
import functools
import math

import keras
import tensorflow as tf

from sifa_synthmix.models import replicas
from sifa_synthmix.models.layers import InstanceNorm


_INLINED = []  # non-empty inside inline_calls()
# Networks with instance norm whose largest input has this many pixels or more are traced with
# their batch size, so that their instance norm can run per sample: a bfloat16 step took 7% less
# at 256 x 256 (official widths), 5% less at 128 x 128 (official) but 2% and 11% more at 128 and
# 64 (demo widths), and the first call took 1.7-6.3 s longer (benchmarks/instance_norm_forms.py).
STATIC_BATCH_MIN_PIXELS = 256 * 256


@contextlib.contextmanager
def inline_calls():
    """Within this block networks are traced into the caller's graph as plain Keras calls: one flat
    graph of the same ops, e.g. for counting a step's FLOPs from static shapes (benchmarks)."""
    _INLINED.append(True)
    try:
        yield
    finally:
        _INLINED.pop()


def compiled_step(step, jit_compile=False):
    """The tf.function of a train step. Under XLA the networks are traced inline: XLA compiles
    one flat graph, and compiled a network function called inside it again at every call
    (measured: 50 s per step at 32 px, against 0.4 s inlined)."""
    if not jit_compile:
        return tf.function(step, autograph=False)

    @functools.wraps(step)
    def flat_step(*args):
        with inline_calls():
            return step(*args)

    return tf.function(flat_step, jit_compile=True, autograph=False)


def _input_spec(tensor, static_batch):
    return tf.TensorSpec(tensor.shape if static_batch else [None, *tensor.shape[1:]], tensor.dtype)


class TracedModel(keras.Model):
    """A functional model (built like `keras.Model(inputs, outputs, name=...)`) whose `call` runs
    a tf.function per training mode and input type. Keras makes such a subclass a functional model
    (its parent in the method order is keras' Functional), so `super().call` is the functional
    forward pass."""

    def __init__(self, inputs, outputs, name=None):
        super().__init__(inputs, outputs, name=name)
        self._traced_calls = {}
        self._synchronised = any(getattr(layer, "synchronized", False) for layer in self.layers)
        self._static_batch = (any(isinstance(layer, InstanceNorm) for layer in self.layers)
                              and max(math.prod(x.shape[1:3]) for x in self.inputs) >= STATIC_BATCH_MIN_PIXELS)

    def call(self, inputs, training=None, mask=None):
        if any(m is not None for m in tf.nest.flatten(mask)) or self._synchronised or _INLINED:
            return super().call(inputs, training=training, mask=mask)
        inputs = tf.nest.map_structure(tf.convert_to_tensor, inputs)
        specs = tf.nest.map_structure(functools.partial(_input_spec, static_batch=self._static_batch), inputs)
        key = (replicas.replica_index(), training,
               tuple((s.dtype, tuple(s.shape)) for s in tf.nest.flatten(specs)))
        if key not in self._traced_calls:
            # A partial, not a lambda: tf.function counts retracing per code object, and one
            # code object shared by every network and mode would read as retracing in a loop.
            self._traced_calls[key] = tf.function(functools.partial(super().call, training=training),
                                                  input_signature=[specs], autograph=False)
        return self._traced_calls[key](inputs)
