"""The suite's results as Markdown tables (printed, and pasted into docs/benchmarks.md), and its targets."""
from benchmarks.settings import PAPER_SCALE, spec, spec_name

OVERHEAD_TARGET = 1.15  # SIFA+SynthMix seconds per step / SIFA's, at most
HEADROOM_TARGET = 20.0  # reader slices/s / training step's slices/s, at least
# A step's first call (trace, graph set-up, first step), in seconds, at most (issue 15).
FIRST_CALL_TARGETS = {spec_name(spec(64, 4)): 15.0, spec_name(PAPER_SCALE): 45.0}


def _at_most(value, target):
    return {"target": f"<= {target:g}", "value": value, "met": value <= target}


def targets(results):
    """{name: {"target", "value", "met"}} of the issues' targets (worst case over configurations)."""
    ratio = max(row["ratio"] for row in results["overhead"])
    headroom = min(row["headroom"] for row in results["pipeline"])
    found = {"synthmix_overhead": _at_most(ratio, OVERHEAD_TARGET),
             "pipeline_headroom": {"target": f">= {HEADROOM_TARGET:g}x", "value": headroom,
                                   "met": headroom >= HEADROOM_TARGET}}
    for name, target in FIRST_CALL_TARGETS.items():
        if name in results["first_call_seconds"]:
            found[f"first_call {name}"] = _at_most(max(results["first_call_seconds"][name].values()), target)
    return found


PROTOCOL_NAMES = {"none": "SIFA", "synthmix": "SIFA+SynthMix"}


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows])


def _met(target):
    return "met" if target["met"] else "NOT met"


def _op_rows(op_seconds, top):
    """The `top` op types of each protocol by seconds per step, with their share of all op time."""
    sifa, synthmix = op_seconds["none"], op_seconds["synthmix"]
    total_sifa, total_synthmix = sum(sifa.values()), sum(synthmix.values())
    rows = [[kind, f"{sifa.get(kind, 0.0):.4f}", f"{sifa.get(kind, 0.0) / total_sifa:.0%}",
             f"{synthmix.get(kind, 0.0):.4f}", f"{synthmix.get(kind, 0.0) / total_synthmix:.0%}"]
            for kind in list(sifa)[:top]]
    return rows + [["all ops (summed over threads)", f"{total_sifa:.4f}", "100%", f"{total_synthmix:.4f}", "100%"]]


def passes_section(overhead):
    return "\n\n".join(
        f"Forward passes per step of each network (the step's forward conv FLOPs over one pass on a batch), "
        f"{spec_name(row['spec'])}:\n\n" + _table(
            ["protocol", *row["passes"]["none"]],
            [[protocol, *(f"{row['passes'][protocol].get(name, 0.0):.2f}" for name in row["passes"]["none"])]
             for protocol in row["passes"]])
        for row in overhead)


def _convolution_free_line(row):
    """How much of a profiled step's wall time no convolution ran, per method."""
    walls = row["measured"].get("profiled_wall_seconds", {})
    lines = [f"{method}: {walls[protocol]['wall']:.3f} s of wall time per profiled step, "
             f"{walls[protocol]['without_convolutions']:.3f} s "
             f"({walls[protocol]['without_convolutions'] / walls[protocol]['wall']:.0%}) with no convolution running."
             for protocol, method in (("none", "SIFA"), ("synthmix", "SIFA+SynthMix")) if protocol in walls]
    return "\n\n" + "\n".join(lines) if lines else ""


def profile_section(overhead, top=10):
    overhead = [row for row in overhead if row["op_seconds"]]
    return "\n\n".join(
        f"Op time by type, {spec_name(row['spec'])} (TensorFlow profiler, seconds per profiled step summed "
        f"over compute threads; profiling slows ops, read the shares):\n\n"
        + _table(["op type", "SIFA s", "share", "SIFA+SynthMix s", "share"], _op_rows(row["op_seconds"], top))
        + _convolution_free_line(row)
        for row in overhead)


def markdown(results):
    """All five measurements as Markdown sections."""
    goal = results["targets"]
    arithmetic = results["arithmetic"]
    peaks = arithmetic.get("matmul_peaks", {"float32": arithmetic["matmul"]})
    forward = arithmetic["official_forward"]
    first_call_rows = [[name, *(f"{calls[p]:.1f}" if p in calls else "-" for p in PROTOCOL_NAMES)]
                       for name, calls in results["first_call_seconds"].items()]
    sections = [
        "### 0. First call: trace, graph set-up and the first step, seconds\n\n"
        + _table(["configuration", *PROTOCOL_NAMES.values()], first_call_rows)
        + "\n\nTargets: " + ", ".join(f"{name} {_met(goal[f'first_call {name}'])}"
                                       for name in FIRST_CALL_TARGETS if f"first_call {name}" in goal) + ".",
        "### 1. SynthMix overhead (median of interleaved rounds, same process)\n\n" + _table(
            ["configuration", "SIFA s/step", "SIFA+SynthMix s/step", "ratio", "rounds"],
            [[spec_name(r["spec"]), f"{r['sifa']:.3f}", f"{r['synthmix']:.3f}", f"**{r['ratio']:.3f}**",
              r["rounds"]] for r in results["overhead"]])
        + f"\n\nTarget {goal['synthmix_overhead']['target']}: {_met(goal['synthmix_overhead'])}.",
        "### 2. Training throughput and peak memory (SIFA; slices/s = 2 x batch / s per step)\n\n" + _table(
            ["configuration", "s/step", "slices/s", "peak RSS MB", "RSS before model MB", "first call s"],
            [[spec_name(r["spec"]), f"{r['seconds_per_step']:.3f}", f"{r['slices_per_second']:.1f}",
              f"{r['peak_rss_mb']:.0f}", f"{r['baseline_rss_mb']:.0f}", f"{r['trace_seconds']:.0f}"]
             for r in results["throughput"]]),
        "### 3. Arithmetic (conv FLOPs counted from the step's graph)\n\n" + _table(
            ["configuration", "method", "GFLOP/step", "profiler GFLOP/step", "s/step", "achieved GFLOP/s",
             "fraction of matmul peak (its precision)"],
            [[spec_name(r["spec"]), PROTOCOL_NAMES[r["protocol"]], f"{r['flops_per_step'] / 1e9:.2f}",
              f"{r['profiler_flops_per_step'] / 1e9:.2f}", f"{r['seconds_per_step']:.3f}",
              f"{r['achieved_flops'] / 1e9:.1f}", f"{r['fraction_of_peak']:.1%}"] for r in arithmetic["steps"]])
        + "\n\n" + "; ".join(f"{p.get('dtype', 'float32')} matmul {p['size']}x{p['size']}: best {p['best'] / 1e9:.1f} "
                             f"GFLOP/s, median {p['median'] / 1e9:.1f} GFLOP/s" for p in peaks.values())
        + " (peak = best; a mixed_bfloat16 step is measured against the bfloat16 peak).\n"
          f"Official SIFA forward pass (model_setup) at {forward['image_size']}x{forward['image_size']}, "
          f"{forward['widths']} widths: **{forward['total'] / 1e9:.1f} GFLOP per slice pair** ("
          + ", ".join(f"{k} {v / 1e9:.2f} x{forward['calls'][k]}" for k, v in forward["per_network"].items()) + ").\n\n"
        + passes_section(results["overhead"]) + "\n\n" + profile_section(results["overhead"]),
        "### 4. Input pipeline (one reader, phantom tfrecords)\n\n" + _table(
            ["image, batch", "reader slices/s", "step consumes slices/s", "headroom"],
            [[f"{r['image_size']}px b{r['batch_size']}", f"{r['reader_slices_per_second']:.0f}",
              f"{r['step_slices_per_second']:.1f}", f"**{r['headroom']:.0f}x**"] for r in results["pipeline"]])
        + f"\n\nTarget {goal['pipeline_headroom']['target']}: {_met(goal['pipeline_headroom'])}.",
        "### 5. Evaluation, seconds per test volume (e_B + s_B, batch 16)\n\n" + _table(
            ["volume", "widths", "inference s", "metrics s", "NIfTI s", "total s", "first call s"],
            [[f"{r['size']}x{r['size']}x{r['depth']}", r["widths"], f"{r['inference_seconds']:.2f}",
              f"{r['metrics_seconds']:.2f}", f"{r['nifti_seconds']:.2f}", f"{r['total_seconds']:.2f}",
              f"{r['trace_seconds']:.1f}"] for r in results["evaluation"]]),
    ]
    return "\n\n".join(sections) + "\n"
