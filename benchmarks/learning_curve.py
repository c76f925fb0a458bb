"""The learning curve's share of training time (--eval_every): one evaluation as the trainer runs
it (its traced e_B + s_B in the run's precision, batches of --batch_size slices, Dice and ASSD per
volume, the eval/ scalars and eval_curve.csv) against the SIFA steps between two evaluations.

    python -m benchmarks.learning_curve [--size 256] [--widths official] [--batch_size 2]
        [--precision mixed_bfloat16] [--volumes 2] [--depth 128] [--every 250,1000]

The volumes are synthetic (nested ellipsoids and noise, benchmarks.evaluation) of --depth
slices: the work does not depend on the weights, and untrained ones are used.
"""
import argparse
import json
import statistics
import tempfile
import time

import tensorflow as tf

from benchmarks import settings, step_time
from benchmarks.evaluation import NUM_CLASSES, synthetic_volume
from sifa_synthmix.evaluation.learning_curve import LearningCurve
from sifa_synthmix.training.task_factory import build_task


def evaluation_seconds(cfg, volumes, depth, calls=2):
    """Seconds of LearningCurve.evaluate on `volumes` synthetic volumes, the median of `calls`
    calls after a first one that traces the prediction."""
    task = build_task(cfg)
    predict = tf.function(task.predict_logits, autograph=False)
    size = cfg.model.image_size
    found = [(f"volume{i}", *synthetic_volume(size, depth, seed=i)) for i in range(volumes)]
    seconds = []
    with tempfile.TemporaryDirectory() as folder:
        writer = tf.summary.create_file_writer(folder)
        curve = LearningCurve(folder, "val", found, (-1.0, 5.0), [f"class {c}" for c in range(NUM_CLASSES)],
                              cfg.batch_size)
        for step in range(calls + 1):
            start = time.perf_counter()
            curve.evaluate(predict, step, writer, log=lambda _: None)
            seconds.append(time.perf_counter() - start)
        writer.close()
    return statistics.median(seconds[1:]), seconds[0]


def shares(seconds_per_evaluation, step_seconds, every):
    """{N: share of training time in evaluations} with one evaluation per N steps."""
    return {n: seconds_per_evaluation / (seconds_per_evaluation + n * step_seconds) for n in every}


def measure(size, widths, batch_size, precision, volumes, depth, every, rounds=3):
    cfg = settings.train_config(settings.spec(size, batch_size, widths, precision))
    batch = step_time.random_batch(cfg)
    step, _ = step_time.trace_step(cfg, "none", batch)
    step_seconds = statistics.median(step_time.time_steps({"none": step}, batch, rounds, 1)["none"])
    evaluation, first = evaluation_seconds(cfg, volumes, depth)
    return {"size": size, "widths": widths, "batch_size": batch_size, "precision": precision,
            "volumes": volumes, "depth": depth, "step_seconds": step_seconds, "evaluation_seconds": evaluation,
            "first_evaluation_seconds": first,
            "share_of_training": shares(evaluation, step_seconds, every)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--widths", choices=sorted(settings.WIDTHS), default="official")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--precision", choices=["float32", "mixed_bfloat16", "mixed_float16"], default="float32")
    parser.add_argument("--volumes", type=int, default=2)
    parser.add_argument("--depth", type=int, default=128)
    parser.add_argument("--every", type=lambda text: [int(n) for n in text.split(",")], default=[250, 1000])
    args = parser.parse_args()
    result = measure(args.size, args.widths, args.batch_size, args.precision, args.volumes, args.depth, args.every)
    print(f"{args.size} px, {args.widths} widths, batch {args.batch_size}, {args.precision}: SIFA step "
          f"{result['step_seconds']:.3f} s; one evaluation of {args.volumes} x {args.depth} slices "
          f"{result['evaluation_seconds']:.2f} s (first {result['first_evaluation_seconds']:.2f} s)")
    for every, share in result["share_of_training"].items():
        print(f"  --eval_every={every}: {share:.2%} of training time")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
