"""Seconds per training step of several mix protocols and update schedules on one config,
measured in one process.

    python -m benchmarks.step_time --flagfile=configs/tiny_cpu.flags --protocols=none,synthmix \
        --schedules=official,merged

Each (protocol, schedule) step is traced first; then they take turns, `--rounds` times, each
turn timing `--steps_per_round` steps on fixed random batches (the input pipeline is left out).
Prints the median seconds per step of each, the ratio of each protocol to the first one under the
same schedule (the protocol's overhead), and the speed-up of each schedule over the first one
for the same protocol.
"""
import dataclasses
import json
import statistics
import time

import tensorflow as tf

from sifa_synthmix.models.traced_model import compiled_step
from sifa_synthmix.training.task_factory import build_task


def random_batch(cfg):
    """Fixed random (source images, one-hot source labels, target images) of the config's shape."""
    size, batch = cfg.model.image_size, cfg.batch_size
    images = tf.random.stateless_uniform([2, batch, size, size, 1], seed=[1, 2], minval=-1.0, maxval=1.0)
    labels = tf.random.stateless_uniform([batch, size, size], seed=[3, 4], maxval=cfg.model.num_classes,
                                         dtype=tf.int32)
    return images[0], tf.one_hot(labels, cfg.model.num_classes), images[1]


def with_protocol(cfg, protocol, schedule=None):
    """cfg with the mix protocol (and, unless None, the update schedule) replaced."""
    cfg = dataclasses.replace(cfg, synthmix=dataclasses.replace(cfg.synthmix, protocol=protocol))
    return cfg if schedule is None else dataclasses.replace(cfg, update_schedule=schedule)


def trace_step(cfg, protocol, batch, schedule=None):
    """The protocol's tf.function train step (in `schedule`, else cfg's), called once on `batch`,
    and the seconds of that call."""
    task = build_task(with_protocol(cfg, protocol, schedule))
    step = compiled_step(task.train_step, cfg.runtime.jit_compile)
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


def key(protocol, schedule):
    return f"{protocol}/{schedule}"


def time_protocols(cfg, protocols, rounds, steps_per_round, schedules=None):
    """{"protocol/schedule": [seconds per step of each round]} and the trace times, for every
    protocol under every schedule (cfg's alone when `schedules` is None)."""
    batch = random_batch(cfg)
    steps, trace_seconds = {}, {}
    for schedule in schedules or [cfg.update_schedule]:
        for protocol in protocols:
            name = key(protocol, schedule)
            steps[name], trace_seconds[name] = trace_step(cfg, protocol, batch, schedule)
    return time_steps(steps, batch, rounds, steps_per_round), trace_seconds


def ratios(medians, protocols, schedules):
    """{"overhead": {"protocol/schedule": its s/step over the first protocol's, same schedule},
    "speedup": {"protocol/schedule": the first schedule's s/step over its, same protocol}}."""
    return {"overhead": {key(p, s): medians[key(p, s)] / medians[key(protocols[0], s)]
                         for s in schedules for p in protocols},
            "speedup": {key(p, s): medians[key(p, schedules[0])] / medians[key(p, s)]
                        for s in schedules for p in protocols}}


def main(argv):
    del argv
    cfg = flags_lib.config_from_flags(FLAGS)
    protocols, schedules = FLAGS.protocols, FLAGS.schedules
    timings, trace_seconds = time_protocols(cfg, protocols, FLAGS.rounds, FLAGS.steps_per_round, schedules)
    medians = {name: statistics.median(t) for name, t in timings.items()}
    relative = ratios(medians, protocols, schedules)
    print(f"{cfg.model.image_size} px, batch {cfg.batch_size}, ngf {cfg.model.ngf}, {cfg.runtime.precision}, "
          f"graph optimizer {cfg.runtime.graph_optimizer}; machine: {json.dumps(machine.describe_machine())}")
    for name, median in medians.items():
        print(f"{name:>18}: {median:.4f} s/step (median of {FLAGS.rounds} rounds: "
              f"{', '.join(f'{t:.3f}' for t in timings[name])}), overhead over {protocols[0]} "
              f"{relative['overhead'][name]:.3f}, speed-up over {schedules[0]} {relative['speedup'][name]:.3f}, "
              f"first call {trace_seconds[name]:.1f} s")
    print(json.dumps({"image_size": cfg.model.image_size, "batch_size": cfg.batch_size,
                      "precision": cfg.runtime.precision,
                      "seconds_per_step": medians, "rounds": timings, "first_call_seconds": trace_seconds,
                      **relative}))


if __name__ == "__main__":
    from absl import app
    from absl import flags as absl_flags

    from benchmarks import machine
    from sifa_synthmix import flags as flags_lib

    flags_lib.define_flags()
    absl_flags.DEFINE_list("protocols", ["none", "synthmix"], "Mix protocols to time (none = SIFA).")
    absl_flags.DEFINE_list("schedules", ["official", "merged"], "Update schedules to time (--update_schedule).")
    absl_flags.DEFINE_integer("rounds", 5, "Interleaved rounds per protocol and schedule.")
    absl_flags.DEFINE_integer("steps_per_round", 3, "Timed steps per round.")
    FLAGS = flags_lib.FLAGS
    app.run(main)
