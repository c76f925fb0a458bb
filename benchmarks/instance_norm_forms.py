"""The fused instance norm's two forms (per sample, and the batch transposed into channels), timed
alone by channel count and in whole steps: the measurements behind `layers.CHANNEL_BLOCK` and
`traced_model.STATIC_BATCH_MIN_PIXELS`.

    python -m benchmarks.instance_norm_forms --mode=layer --precision=mixed_bfloat16
    python -m benchmarks.instance_norm_forms --mode=step --image_size=256 --widths=demo --batch_size=4
    python -m benchmarks.instance_norm_forms --mode=step --image_size=128 --static_batch_min_pixels=0

`layer`: forward and backward of one InstanceNorm with ReLU, best of 3 runs of 10 calls, for every
batch size, image size and channel count given. `step`: SIFA's step with every network traced
without its batch size (so every instance norm transposed) against networks on images of
--static_batch_min_pixels or more traced with it (each instance norm's form then chosen by its
channel count; the product's threshold by default), one process, the two taking turns.
"""
import contextlib
import json
import statistics
import time

import tensorflow as tf
from absl import app, flags

from benchmarks import settings, step_time
from sifa_synthmix.models import traced_model
from sifa_synthmix.models.layers import InstanceNorm

FLAGS = flags.FLAGS


def layer_seconds(batch_size, size, channels, precision):
    """{form: best seconds per forward-and-backward call} of InstanceNorm(relu) on [N, H, H, C]."""
    layer = InstanceNorm(activation="relu", dtype=precision)
    layer.build((batch_size, size, size, channels))
    inputs = tf.cast(tf.random.stateless_normal([batch_size, size, size, channels], seed=[1, 2]),
                     layer.compute_dtype)
    seconds = {}
    for name, form in (("transposed", layer.fused_transposed), ("per_sample", layer.fused_per_sample)):
        @tf.function(input_signature=[tf.TensorSpec(inputs.shape, inputs.dtype)])
        def forward_and_back(x, form=form):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = form(x)
            return tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=y)

        forward_and_back(inputs)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(10):
                result = forward_and_back(inputs)
            result[0].numpy()
            best = min(best, (time.perf_counter() - start) / 10)
        seconds[name] = best
    return seconds


@contextlib.contextmanager
def static_batch_from(pixels):
    """Networks built inside trace with their batch size from `pixels` per image up."""
    saved = traced_model.STATIC_BATCH_MIN_PIXELS
    traced_model.STATIC_BATCH_MIN_PIXELS = pixels
    try:
        yield
    finally:
        traced_model.STATIC_BATCH_MIN_PIXELS = saved


def step_seconds(spec, rounds, steps_per_round, static_batch_min_pixels):
    """({"transposed" | "static_batch": [seconds per step of each round]}, {same: first-call seconds}):
    every network traced without its batch size, against networks on images of
    `static_batch_min_pixels` or more traced with it."""
    cfg = settings.train_config(spec)
    batch = step_time.random_batch(cfg)
    steps, first_calls = {}, {}
    for name, pixels in (("transposed", float("inf")), ("static_batch", static_batch_min_pixels)):
        with static_batch_from(pixels):
            steps[name], first_calls[name] = step_time.trace_step(cfg, "none", batch)
    return step_time.time_steps(steps, batch, rounds, steps_per_round), first_calls


def main(argv):
    del argv
    if FLAGS.mode == "layer":
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": FLAGS.graph_optimizer == "off"})
        rows = []
        for batch_size in FLAGS.batch_sizes:
            for size in FLAGS.image_sizes:
                for channels in FLAGS.channels:
                    seconds = layer_seconds(int(batch_size), int(size), int(channels), FLAGS.precision)
                    rows.append({"batch_size": int(batch_size), "image_size": int(size), "channels": int(channels),
                                 **seconds})
                    print(f"N={batch_size} H=W={size} C={channels}: transposed {seconds['transposed'] * 1e3:.3f} ms, "
                          f"per sample {seconds['per_sample'] * 1e3:.3f} ms "
                          f"({seconds['per_sample'] / seconds['transposed']:.2f})", flush=True)
        print(json.dumps({"precision": FLAGS.precision, "graph_optimizer": FLAGS.graph_optimizer, "rows": rows}))
        return
    spec = settings.spec(FLAGS.image_size, FLAGS.batch_size, FLAGS.widths, FLAGS.precision)
    timings, first_calls = step_seconds(spec, FLAGS.rounds, FLAGS.steps_per_round, FLAGS.static_batch_min_pixels)
    medians = {name: statistics.median(seconds) for name, seconds in timings.items()}
    for name, median in medians.items():
        print(f"{FLAGS.image_size}px {FLAGS.widths} b{FLAGS.batch_size} {FLAGS.precision} {name:>12}: "
              f"{median:.4f} s/step (median of {FLAGS.rounds} rounds), first call {first_calls[name]:.1f} s")
    print(json.dumps({"spec": spec, "static_batch_min_pixels": FLAGS.static_batch_min_pixels,
                      "seconds_per_step": medians, "round_seconds": timings, "first_call_seconds": first_calls}))


if __name__ == "__main__":
    flags.DEFINE_enum("mode", "layer", ["layer", "step"], "One layer by channel count, or whole steps.")
    flags.DEFINE_enum("precision", "mixed_bfloat16", ["float32", "mixed_bfloat16"], "Precision policy.")
    flags.DEFINE_enum("graph_optimizer", "off", ["off", "on"], "layer: TensorFlow's graph optimizer.")
    flags.DEFINE_list("batch_sizes", ["2", "4"], "layer: batch sizes.")
    flags.DEFINE_list("image_sizes", ["256", "128", "64"], "layer: image sizes.")
    flags.DEFINE_list("channels", ["8", "16", "24", "32", "64"], "layer: channel counts.")
    flags.DEFINE_integer("image_size", 256, "step: slice size.")
    flags.DEFINE_enum("widths", "demo", sorted(settings.WIDTHS), "step: network widths.")
    flags.DEFINE_integer("batch_size", 4, "step: slices per domain per step.")
    flags.DEFINE_integer("rounds", 5, "step: interleaved rounds.")
    flags.DEFINE_integer("static_batch_min_pixels", traced_model.STATIC_BATCH_MIN_PIXELS,
                         "step: the threshold of the static_batch side (the product's by default).")
    flags.DEFINE_integer("steps_per_round", 1, "step: timed steps per configuration per round.")
    app.run(main)
