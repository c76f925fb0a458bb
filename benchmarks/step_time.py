"""Seconds per training step of several mix protocols on one config, measured in one process.

    python -m benchmarks.step_time --flagfile=configs/tiny_cpu.flags --protocols=none,synthmix

Each protocol's step is traced first; then the protocols take turns, `--rounds` times, each
turn timing `--steps_per_round` steps on fixed random batches (the input pipeline is left out).
Prints the median seconds per step of each protocol and the ratio to the first.
"""
import dataclasses
import json
import statistics
import time

import tensorflow as tf

from sifa_synthmix.task_factory import build_task
from sifa_synthmix.traced_model import compiled_step


def random_batch(cfg):
    """Fixed random (source images, one-hot source labels, target images) of the config's shape."""
    size, batch = cfg.model.image_size, cfg.batch_size
    images = tf.random.stateless_uniform([2, batch, size, size, 1], seed=[1, 2], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([batch, size, size], seed=[3, 4], maxval=cfg.model.num_classes,
                                         dtype=tf.int32)
    return images[0], tf.one_hot(labels, cfg.model.num_classes), images[1]


def with_protocol(cfg, protocol):
    return dataclasses.replace(cfg, synthmix=dataclasses.replace(cfg.synthmix, protocol=protocol))


def trace_step(cfg, protocol, batch):
    """The protocol's tf.function train step, called once on `batch`, and the seconds of that call."""
    task = build_task(with_protocol(cfg, protocol))
    step = compiled_step(task.train_step, cfg.jit_compile)
    start = time.perf_counter()
    float(step(*batch)[0]["g_loss_A"])
    return step, time.perf_counter() - start


def time_steps(steps, batch, rounds, steps_per_round):
    """{protocol: [seconds per step of each round]}; the protocols take turns in every round."""
    timings = {protocol: [] for protocol in steps}
    for _ in range(rounds):
        for protocol, step in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                metrics, _ = step(*batch)
            float(metrics["g_loss_A"])  # wait for the last step to finish
            timings[protocol].append((time.perf_counter() - start) / steps_per_round)
    return timings


def time_protocols(cfg, protocols, rounds, steps_per_round):
    """{protocol: [seconds per step of each round]} and the trace times."""
    batch = random_batch(cfg)
    steps, trace_seconds = {}, {}
    for protocol in protocols:
        steps[protocol], trace_seconds[protocol] = trace_step(cfg, protocol, batch)
    return time_steps(steps, batch, rounds, steps_per_round), trace_seconds


def main(argv):
    del argv
    cfg = flags_lib.config_from_flags(FLAGS)
    timings, trace_seconds = time_protocols(cfg, FLAGS.protocols, FLAGS.rounds, FLAGS.steps_per_round)
    medians = {p: statistics.median(t) for p, t in timings.items()}
    baseline = medians[FLAGS.protocols[0]]
    for protocol, median in medians.items():
        print(f"{protocol:>9}: {median:.4f} s/step (median of {FLAGS.rounds} rounds), "
              f"ratio to {FLAGS.protocols[0]} {median / baseline:.3f}, first call {trace_seconds[protocol]:.1f} s")
    print(json.dumps({"image_size": cfg.model.image_size, "batch_size": cfg.batch_size,
                      "seconds_per_step": medians, "ratio": {p: m / baseline for p, m in medians.items()}}))


if __name__ == "__main__":
    from absl import app
    from absl import flags as absl_flags

    from sifa_synthmix import flags as flags_lib

    flags_lib.define_flags()
    absl_flags.DEFINE_list("protocols", ["none", "synthmix"], "Mix protocols to time (none = SIFA).")
    absl_flags.DEFINE_integer("rounds", 5, "Interleaved rounds per protocol.")
    absl_flags.DEFINE_integer("steps_per_round", 3, "Timed steps per round.")
    FLAGS = flags_lib.FLAGS
    app.run(main)
