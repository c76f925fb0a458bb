"""Seconds per SIFA step of float32 and mixed_bfloat16, each with TensorFlow's graph optimizer off
and on, measured in one process with the configurations taking turns (so a change in the
machine's load hits all of them alike): the measurements behind --precision=auto and
--graph_optimizer=auto on a CPU.

    python -m benchmarks.precision_choice --image_size=64 --widths=demo --batch_size=4
    python -m benchmarks.precision_choice --image_size=256 --widths=official --batch_size=2 --rounds=2
"""
import dataclasses
import json
import statistics
import time

import tensorflow as tf
from absl import app, flags

from benchmarks import settings
from benchmarks.step_time import random_batch
from sifa_synthmix.training.task_factory import build_task

FLAGS = flags.FLAGS
CONFIGURATIONS = (("float32", "off"), ("float32", "on"), ("mixed_bfloat16", "off"), ("mixed_bfloat16", "on"))


def traced_steps(image_size, widths, batch_size):
    """{(precision, graph optimizer): (step function, batch, first-call seconds)}. The task sets
    the graph optimizer when it is built; a function takes the setting when it first runs, so
    each runs once right after its task is built."""
    steps = {}
    for precision, optimizer in CONFIGURATIONS:
        cfg = settings.train_config(settings.spec(image_size, batch_size, widths, precision))
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, graph_optimizer=optimizer))
        task = build_task(cfg)
        step = tf.function(task.train_step, autograph=False)
        batch = random_batch(cfg)
        start = time.perf_counter()
        float(step(*batch)[0]["g_loss_A"])
        steps[precision, optimizer] = (step, batch, time.perf_counter() - start)
    return steps


def interleaved_seconds(steps, rounds, steps_per_round):
    """{configuration: [seconds per step of each round]}, the configurations taking turns."""
    timings = {key: [] for key in steps}
    for _ in range(rounds):
        for key, (step, batch, _) in steps.items():
            start = time.perf_counter()
            for _ in range(steps_per_round):
                metrics, _ = step(*batch)
            float(metrics["g_loss_A"])
            timings[key].append((time.perf_counter() - start) / steps_per_round)
    return timings


def main(argv):
    del argv
    steps = traced_steps(FLAGS.image_size, FLAGS.widths, FLAGS.batch_size)
    timings = interleaved_seconds(steps, FLAGS.rounds, FLAGS.steps_per_round)
    rows = []
    for (precision, optimizer), seconds in timings.items():
        median = statistics.median(seconds)
        rows.append({"precision": precision, "graph_optimizer": optimizer, "seconds_per_step": median,
                     "first_call_seconds": steps[precision, optimizer][2]})
        print(f"{FLAGS.image_size}px {FLAGS.widths} b{FLAGS.batch_size} {precision:>14} grappler {optimizer:>3}: "
              f"{median:.4f} s/step (median of {FLAGS.rounds} rounds), first call {steps[precision, optimizer][2]:.1f} s")
    print(json.dumps({"image_size": FLAGS.image_size, "widths": FLAGS.widths, "batch_size": FLAGS.batch_size,
                      "rows": rows}))


if __name__ == "__main__":
    flags.DEFINE_integer("image_size", 64, "Slice size.")
    flags.DEFINE_enum("widths", "demo", sorted(settings.WIDTHS), "Network widths.")
    flags.DEFINE_integer("batch_size", 4, "Slices per domain per step.")
    flags.DEFINE_integer("rounds", 3, "Interleaved rounds.")
    flags.DEFINE_integer("steps_per_round", 3, "Timed steps per configuration per round.")
    app.run(main)
