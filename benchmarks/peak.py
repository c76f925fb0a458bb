"""This machine's matrix-multiply rates, float32 and (on CPUs with native bfloat16) bfloat16: the
yardsticks of a step's achieved FLOP/s in each precision."""
import statistics
import time

import tensorflow as tf


def matmul_flops_per_second(size=2048, repeats=10, dtype="float32"):
    """{"best", "median"} FLOP/s of size x size matmuls in `dtype` (2 size^3 FLOPs each)."""
    a = tf.cast(tf.random.stateless_uniform([size, size], seed=[0, 1]), dtype)
    b = tf.cast(tf.random.stateless_uniform([size, size], seed=[0, 2]), dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    float(matmul(a, b))  # trace and warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(matmul(a, b))
        rates.append(2 * size ** 3 / (time.perf_counter() - start))
    return {"size": size, "repeats": repeats, "dtype": dtype, "best": max(rates), "median": statistics.median(rates)}


def matmul_peaks(native_bfloat16, size=2048, repeats=10):
    """{precision: matmul rates} of the step precisions this CPU runs natively: float32, and
    mixed_bfloat16 (its matmuls are bfloat16) where the CPU has bfloat16 instructions."""
    peaks = {"float32": matmul_flops_per_second(size, repeats)}
    if native_bfloat16:
        peaks["mixed_bfloat16"] = matmul_flops_per_second(size, repeats, dtype="bfloat16")
    return peaks
