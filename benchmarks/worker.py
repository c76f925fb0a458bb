"""Times SIFA (and mix protocols) at one configuration in a process of its own, so that the
process's peak resident memory belongs to that configuration; prints one JSON line.

    python -m benchmarks.worker '{"spec": {...settings.spec...}, "protocols": ["none"], "rounds": 3,
                                  "steps_per_round": 2, "flops": true, "profile_calls": 0}'
"""
import json
import os
import resource
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # pylint: disable=wrong-import-position

from benchmarks import flops as flops_lib, op_profile, settings, step_time  # pylint: disable=wrong-import-position
from sifa_synthmix.models.traced_model import inline_calls  # pylint: disable=wrong-import-position
from sifa_synthmix.training.step_memory import resident_megabytes  # pylint: disable=wrong-import-position


def resident_mb():
    """Current resident memory (VmRSS) of this process in MB (NaN where /proc is not there)."""
    resident = resident_megabytes()
    return float("nan") if resident is None else resident


def peak_resident_mb():
    """Peak resident memory of this process in MB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def flat_graph(step, batch):
    """The step's graph traced again with every network call inlined: the ops a call runs, in one
    graph with static shapes, for counting (the step itself calls each network as a function)."""
    with inline_calls():
        return tf.function(step.python_function, autograph=False).get_concrete_function(*batch).graph


def measure(request):
    spec = request["spec"]
    protocols = request.get("protocols", ["none"])
    cfg = settings.train_config(spec)
    baseline = resident_mb()
    batch = step_time.random_batch(cfg)
    steps, trace_seconds, peaks = {}, {}, {}
    for protocol in protocols:
        # The peak after the first protocol's trace and a warm-up round is that protocol's alone;
        # later protocols' peaks include what the earlier ones hold.
        steps[protocol], trace_seconds[protocol] = step_time.trace_step(cfg, protocol, batch)
        step_time.time_steps({protocol: steps[protocol]}, batch, 1, 1)
        peaks[protocol] = peak_resident_mb()
    timings = step_time.time_steps(steps, batch, request.get("rounds", 3), request.get("steps_per_round", 2))
    result = {"spec": spec, "protocols": protocols, "round_seconds": timings, "trace_seconds": trace_seconds,
              "seconds_per_step": {p: statistics.median(t) for p, t in timings.items()},
              "baseline_rss_mb": baseline, "peak_rss_mb": peaks[protocols[0]], "peak_rss_mb_cumulative": peaks,
              "final_peak_rss_mb": peak_resident_mb()}
    if request.get("flops", True):
        graphs = {p: flat_graph(step, batch) for p, step in steps.items()}
        result["flops_per_step"] = {p: sum(flops_lib.graph_flops(g).values()) for p, g in graphs.items()}
        result["flops_by_op"] = {p: flops_lib.graph_flops(g) for p, g in graphs.items()}
        result["flops_by_network"] = {p: flops_lib.flops_by_network(g) for p, g in graphs.items()}
        result["profiler_flops_per_step"] = {p: flops_lib.profiler_flops(g) for p, g in graphs.items()}
        result["uncounted_nested_ops"] = {p: flops_lib.nested_conv_ops(g) for p, g in graphs.items()}
    if request.get("profile_calls", 0):
        profiles = {p: op_profile.profile_calls(step, batch, request["profile_calls"]) for p, step in steps.items()}
        result["op_seconds"] = {p: op_seconds for p, (op_seconds, _) in profiles.items()}
        result["profiled_wall_seconds"] = {p: wall for p, (_, wall) in profiles.items()}
    return result


if __name__ == "__main__":
    tf.get_logger().setLevel("ERROR")
    print(json.dumps(measure(json.loads(sys.argv[1]))))
