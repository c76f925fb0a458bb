"""The benchmark suite's FLOP counter against hand counts, its matmul timer, its op profile's
arithmetic, and the test suite's CPU log."""
import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from benchmarks import instance_norm_forms, op_profile, settings
from benchmarks.flops import function_flops, graph_flops, network_name, profiler_flops
from benchmarks.peak import matmul_flops_per_second, matmul_peaks
from benchmarks.run import arithmetic
from benchmarks.settings import PAPER_SCALE, PAPER_SCALE_BF16, throughput_specs
from benchmarks.suite_cpu import summary
from sifa_synthmix import cpu_features
from sifa_synthmix.models import traced_model
from conftest import REPO


def test_conv_flops_forward_and_backward_match_hand_count():
    kernel = tf.Variable(tf.ones([3, 3, 2, 4]))

    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME"))
        return loss, tape.gradient(loss, [x, kernel])

    graph = tf.function(step, autograph=False).get_concrete_function(tf.TensorSpec([1, 8, 8, 2])).graph
    per_pass = 2 * 8 * 8 * 4 * 3 * 3 * 2  # 2 x output elements x taps x input channels
    assert graph_flops(graph) == {"Conv2D": per_pass, "Conv2DBackpropInput": per_pass,
                                  "Conv2DBackpropFilter": per_pass}
    assert profiler_flops(graph) >= 3 * per_pass  # it counts the same convs plus elementwise ops


def test_only_live_ops_count():
    kernel = tf.Variable(tf.ones([3, 3, 2, 4]))

    def filter_gradient(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.nn.conv2d(x, kernel, 1, "SAME"))
        return loss, tape.gradient(loss, kernel)  # the input gradient TF builds too is never run

    flops = function_flops(filter_gradient, tf.TensorSpec([1, 8, 8, 2]))
    assert sorted(flops) == ["Conv2D", "Conv2DBackpropFilter"]


def test_network_name_strips_tape_scope_and_call_number():
    assert network_name("gradient_tape/d_P_ll_3/c1_1/convolution/Conv2DBackpropFilter") == "d_P_ll"
    assert network_name("e_B_1/c1_1/convolution") == "e_B"
    assert network_name("g_A/c1/convolution") == "g_A"


def test_strided_transposed_conv_and_matmul_flops():
    strided = function_flops(lambda x: tf.nn.conv2d(x, tf.ones([4, 4, 2, 3]), 2, "SAME"),
                             tf.TensorSpec([1, 8, 8, 2]))
    assert strided == {"Conv2D": 2 * (4 * 4 * 3) * (4 * 4 * 2)}
    transposed = function_flops(lambda x: tf.nn.conv2d_transpose(x, tf.ones([3, 3, 2, 3]), [1, 8, 8, 2], 2),
                                tf.TensorSpec([1, 4, 4, 3]))
    assert transposed == {"Conv2DBackpropInput": 2 * (4 * 4 * 3) * (3 * 3 * 2)}  # input elements x taps x outputs
    product = function_flops(lambda a, b: tf.linalg.matmul(a, b, transpose_a=True),
                             tf.TensorSpec([5, 3]), tf.TensorSpec([5, 7]))
    assert product == {"MatMul": 2 * 3 * 7 * 5}


def test_matmul_timer_returns_positive_rates():
    rate = matmul_flops_per_second(size=64, repeats=3)
    assert rate["best"] >= rate["median"] > 0


def test_the_suite_cpu_plugin_logs_each_test_with_its_children(tmp_path):
    (tmp_path / "test_two.py").write_text(
        "import subprocess, sys\n"
        "def test_spins():\n    sum(range(3_000_000))\n"
        "def test_starts_a_process():\n"
        "    subprocess.run([sys.executable, '-c', 'sum(range(3_000_000))'], check=True)\n")
    log = tmp_path / "cpu.jsonl"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-c", os.devnull, "-p", "no:cacheprovider", "-p", "no:xdist",
                    "-p", "benchmarks.suite_cpu", f"--cpu-log={log}", str(tmp_path / "test_two.py")],
                   cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True, capture_output=True)
    records = {r["test"].split("::")[1]: r for r in map(json.loads, log.read_text().splitlines())}
    assert set(records) == {"test_spins", "test_starts_a_process"}
    assert records["test_spins"]["cpu"] > 0.01 and records["test_spins"]["children"] == 0
    assert records["test_starts_a_process"]["children"] > 0.01
    lines = summary(list(records.values()))
    assert lines[0].startswith("2 tests, ") and any(line.endswith("test_two.py") for line in lines)


def test_bfloat16_peak_and_paper_scale_point_where_the_cpu_has_native_bfloat16(tmp_path):
    """Both matmul peaks, the paper-scale point in both precisions, and each step's fraction of
    the peak of its own precision; a CPU without bfloat16 instructions gets neither."""
    peaks = matmul_peaks(True, size=64, repeats=2)
    assert {p: v["dtype"] for p, v in peaks.items()} == {"float32": "float32", "mixed_bfloat16": "bfloat16"}
    assert list(matmul_peaks(False, size=64, repeats=2)) == ["float32"]
    quick = throughput_specs(False, native_bfloat16=True)
    assert PAPER_SCALE in quick and PAPER_SCALE_BF16 in quick and PAPER_SCALE_BF16 not in throughput_specs(False, False)
    rows = [{"spec": spec, "protocol": "none", "seconds_per_step": 2.0, "flops_per_step": 4e11} for spec in
            (PAPER_SCALE, PAPER_SCALE_BF16)]
    fake = {"float32": {"best": 2e11}, "mixed_bfloat16": {"best": 4e11}}
    fractions = [row["fraction_of_peak"] for row in arithmetic(rows, [], fake)["steps"]]
    assert fractions == [pytest.approx(1.0), pytest.approx(0.5)]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n", encoding="utf-8")
    assert cpu_features.native_bfloat16(cpu_features.cpu_flags(str(cpuinfo))) == ["avx512_bf16"]
    assert cpu_features.native_bfloat16({"avx2", "fma"}) == []


def test_the_prediction_benchmark_times_every_scan_and_counts_the_segmenters_flops():
    from benchmarks.prediction import time_prediction  # pylint: disable=import-outside-toplevel

    result = time_prediction(size=32, depth=4, widths="demo", scans=2)
    assert [sorted(scan) for scan in result["scans"]] == [["inference_seconds", "seconds", "slices_per_second"]] * 2
    assert all(0 < scan["inference_seconds"] <= scan["seconds"] for scan in result["scans"])
    # e_B's 7 x 7 stem alone: 2 x 49 x 4 multiply-adds per pixel of a 32 x 32 slice.
    assert result["gflop_per_slice"] * 1e9 > 2 * 49 * 4 * 32 * 32


def test_the_learning_curve_benchmark_times_the_trainers_evaluation():
    from benchmarks import learning_curve  # pylint: disable=import-outside-toplevel

    cfg = settings.train_config(settings.spec(32, 2, "demo", "float32"))
    evaluation, first = learning_curve.evaluation_seconds(cfg, volumes=2, depth=4, calls=1)
    assert 0 < evaluation and 0 < first
    assert learning_curve.shares(2.0, 0.5, [12, 36]) == {12: 0.25, 36: 0.1}


def test_the_pipeline_benchmark_times_the_check_of_every_training_record(tiny_phantom):
    from benchmarks import pipeline  # pylint: disable=import-outside-toplevel
    from sifa_synthmix.data import inputs, layout, reader  # pylint: disable=import-outside-toplevel

    count, seconds = pipeline.record_check_seconds(tiny_phantom, image_size=32)
    paths = reader.resolve_record_paths(str(layout.PreparedLayout(tiny_phantom).datalist("mr", "train")))
    assert count == inputs.count_slices(paths) > 0 and seconds > 0


def _xspace(events):
    """A profiler XSpace with one compute thread per (thread, op name, start ps, duration ps) group."""
    space = xplane_pb2.XSpace()
    plane = space.planes.add()
    names = sorted({name for _, name, _, _ in events})
    for index, name in enumerate(names, start=1):
        plane.event_metadata[index].name = name
    lines = {}
    for thread, name, start, duration in events:
        if thread not in lines:
            lines[thread] = plane.lines.add(name=f"tf_Compute/{thread}", timestamp_ns=0)
        lines[thread].events.add(metadata_id=names.index(name) + 1, offset_ps=start, duration_ps=duration)
    return space


def test_the_op_profile_finds_the_wall_time_no_convolution_runs():
    ps = 10 ** 12
    space = _xspace([
        (0, "g_A/c1/convolution:_MklNativeConv2D", 0, 2 * ps),
        (1, "gradients/c1:_MklNativeConv2DBackpropFilter", 1 * ps, 2 * ps),  # overlaps the first: 0-3 s
        (0, "g_A/c1_instance_norm:_MklNativeFusedBatchNormEx", 3 * ps, 1 * ps),  # 3-4 s, no convolution
        (1, "g_A/r1_c1:_MklNativePadWithConv2D", 4 * ps, 1 * ps),  # 4-5 s
        (0, "g_A/r1_relu:Relu", 5 * ps, 2 * ps),  # 5-7 s, no convolution
        (1, "PartitionedCall:PartitionedCall", 0, 7 * ps),  # a container: not an op of its own
    ])
    assert op_profile.seconds_without_convolutions(space) == pytest.approx((7.0, 3.0))
    assert op_profile.op_type_seconds(space)["Relu"] == pytest.approx(2.0)
    assert "PartitionedCall" not in op_profile.op_type_seconds(space)


def test_the_instance_norm_benchmark_times_both_forms_and_restores_the_threshold():
    """Both forms are timed on the same layer; the step comparison's threshold is put back."""
    seconds = instance_norm_forms.layer_seconds(2, 8, 8, "mixed_bfloat16")
    assert sorted(seconds) == ["per_sample", "transposed"] and all(0 < s < 1 for s in seconds.values())
    saved = traced_model.STATIC_BATCH_MIN_PIXELS
    with pytest.raises(RuntimeError), instance_norm_forms.static_batch_from(0):
        assert traced_model.STATIC_BATCH_MIN_PIXELS == 0
        raise RuntimeError("a failed build")
    assert traced_model.STATIC_BATCH_MIN_PIXELS == saved
