"""This machine's float32 matrix-multiply rate: the yardstick of achieved FLOP/s."""
import statistics
import time

import tensorflow as tf


def matmul_flops_per_second(size=2048, repeats=10):
    """{"best", "median"} FLOP/s of size x size float32 matmuls (2 size^3 FLOPs each)."""
    a = tf.random.stateless_uniform([size, size], seed=[0, 1])
    b = tf.random.stateless_uniform([size, size], seed=[0, 2])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.linalg.matmul(x, y)))
    float(matmul(a, b))  # trace and warm up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        float(matmul(a, b))
        rates.append(2 * size ** 3 / (time.perf_counter() - start))
    return {"size": size, "repeats": repeats, "best": max(rates), "median": statistics.median(rates)}
