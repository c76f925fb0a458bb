"""The benchmark suite: SynthMix overhead, training throughput and memory, the step's arithmetic,
input-pipeline headroom and evaluation cost, in one run.

    python -m benchmarks.run --quick   # under 10 minutes on 2 CPU cores
    python -m benchmarks.run           # the full grid (hours; see docs/benchmarks.md)

Each training configuration runs in its own process (benchmarks.worker) so that its peak
memory is its own. Prints Markdown tables and writes benchmarks/results/<date>.json.
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

from benchmarks import evaluation, machine, peak, pipeline, report, settings
from benchmarks.official_forward import network_flops, official_forward_flops

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
GRID_ROUNDS = 3
GRID_STEPS_PER_ROUND = 1


def run_worker(spec, protocols, rounds, steps_per_round, profile_calls=0):
    """benchmarks.worker's JSON for one configuration, measured in a child process."""
    request = {"spec": spec, "protocols": protocols, "rounds": rounds, "steps_per_round": steps_per_round,
               "profile_calls": profile_calls}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, "-m", "benchmarks.worker", json.dumps(request)], env=env,
                          cwd=pathlib.Path(__file__).resolve().parents[1], capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise RuntimeError(f"worker failed on {settings.spec_name(spec)}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput_row(measured, protocol="none"):
    seconds = measured["seconds_per_step"][protocol]
    return {"spec": measured["spec"], "protocol": protocol, "seconds_per_step": seconds,
            "slices_per_second": 2 * measured["spec"]["batch_size"] / seconds,
            "peak_rss_mb": measured["peak_rss_mb_cumulative"][protocol], "baseline_rss_mb": measured["baseline_rss_mb"],
            "trace_seconds": measured["trace_seconds"][protocol],
            "flops_per_step": measured["flops_per_step"][protocol],
            "profiler_flops_per_step": measured["profiler_flops_per_step"][protocol]}


def measure_training(full, log, native_bfloat16):
    """Overhead rows and throughput rows; the overhead runs' SIFA (traced first) joins the grid."""
    overhead, by_name = [], {}
    for spec in settings.overhead_specs(full):
        log(f"overhead: {settings.spec_name(spec)}")
        rounds, steps_per_round, profile_calls = settings.overhead_rounds(spec)
        measured = run_worker(spec, ["none", "synthmix"], rounds, steps_per_round, profile_calls)
        sifa, synthmix = measured["seconds_per_step"]["none"], measured["seconds_per_step"]["synthmix"]
        ratios = [s / n for n, s in zip(measured["round_seconds"]["none"], measured["round_seconds"]["synthmix"])]
        overhead.append({"spec": spec, "sifa": sifa, "synthmix": synthmix, "ratio": synthmix / sifa,
                         "round_ratios": ratios, "rounds": rounds, "op_seconds": measured.get("op_seconds"),
                         "passes": forward_passes(spec, measured["flops_by_network"]), "measured": measured})
        by_name[settings.spec_name(spec)] = throughput_row(measured)
    for spec in settings.throughput_specs(full, native_bfloat16):
        name = settings.spec_name(spec)
        if name not in by_name:
            log(f"throughput: {name}")
            by_name[name] = throughput_row(run_worker(spec, ["none"], GRID_ROUNDS, GRID_STEPS_PER_ROUND))
    return overhead, [by_name[settings.spec_name(s)] for s in settings.throughput_specs(full, native_bfloat16)]


def forward_passes(spec, by_network):
    """{protocol: {network: forward passes per step}}: the step's forward FLOPs of each network over
    one pass on a batch (networks outside SIFA's nine, e.g. the inspector, are left out)."""
    single = network_flops(spec["image_size"], spec["widths"])
    return {protocol: {name: flops["forward"] / (spec["batch_size"] * single[name])
                       for name, flops in networks.items() if name in single}
            for protocol, networks in by_network.items()}


def arithmetic(throughput, overhead, peaks):
    """FLOP rate and fraction of the matmul peak in its precision of every step whose precision
    has a measured peak: SIFA's of the grid, and SIFA+SynthMix's where the overhead measurement ran it."""
    steps = throughput + [throughput_row(row["measured"], "synthmix") for row in overhead]
    rows = [dict(row, achieved_flops=row["flops_per_step"] / row["seconds_per_step"],
                 fraction_of_peak=row["flops_per_step"] / row["seconds_per_step"]
                 / peaks[row["spec"]["precision"]]["best"])
            for row in steps if row["spec"]["precision"] in peaks]
    return {"matmul": peaks["float32"], "matmul_peaks": peaks, "steps": rows,
            "official_forward": official_forward_flops(256)}


def first_calls(overhead, throughput):
    """{configuration: {protocol: seconds}} of each step's first call (trace, graph set-up, first step)."""
    calls = {settings.spec_name(row["spec"]): dict(row["measured"]["trace_seconds"]) for row in overhead}
    for row in throughput:
        calls.setdefault(settings.spec_name(row["spec"]), {"none": row["trace_seconds"]})
    return calls


def measure_pipeline(full, throughput, log):
    """Reader slices/s per (size, batch) against the float32, no-XLA, demo-width step's consumption."""
    steps = {(r["spec"]["image_size"], r["spec"]["batch_size"]): r for r in throughput
             if r["spec"] == settings.spec(r["spec"]["image_size"], r["spec"]["batch_size"])}
    rows = []
    with tempfile.TemporaryDirectory() as root:
        folders = {}
        for size, batch in settings.pipeline_specs(full):
            if size not in folders:
                folders[size], seconds = pipeline.make_phantom(pathlib.Path(root), size)
                log(f"pipeline: {size}px phantom written in {seconds:.1f} s")
            rate = pipeline.reader_rate(folders[size], size, batch)
            consumed = steps[(size, batch)]["slices_per_second"]
            rows.append({"image_size": size, "batch_size": batch, "reader_slices_per_second": rate,
                         "step_slices_per_second": consumed, "headroom": rate / consumed})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the small grid (under 10 minutes)")
    parser.add_argument("--output", default="", help="results JSON (default benchmarks/results/<date>.json)")
    args = parser.parse_args(argv)
    full = not args.quick
    start = time.perf_counter()

    def log(message):
        print(f"[{time.perf_counter() - start:6.0f} s] {message}", file=sys.stderr, flush=True)

    results = {"mode": "full" if full else "quick",
               "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
               "machine": machine.describe_machine(), "load_average_at_start": os.getloadavg()}
    native = machine.native_bfloat16()
    log("matmul peaks: float32" + (" and bfloat16" if native else " (this CPU has no native bfloat16)"))
    peaks = peak.matmul_peaks(native)
    results["overhead"], results["throughput"] = measure_training(full, log, native)
    log("arithmetic")
    results["arithmetic"] = arithmetic(results["throughput"], results["overhead"], peaks)
    results["first_call_seconds"] = first_calls(results["overhead"], results["throughput"])
    results["pipeline"] = measure_pipeline(full, results["throughput"], log)
    results["evaluation"] = []
    for size, depth, widths in settings.evaluation_specs(full):
        log(f"evaluation: {size}x{size}x{depth} {widths}")
        results["evaluation"].append(evaluation.time_evaluation(size, depth, widths))
    results["targets"] = report.targets(results)
    results["wall_seconds"] = time.perf_counter() - start
    default_name = f"{datetime.date.today().isoformat()}{'' if full else '-quick'}.json"
    output = pathlib.Path(args.output or RESULTS_DIR / default_name)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")
    print(report.markdown(results))
    print(f"{results['mode']} run: {results['wall_seconds']:.0f} s; results in {output}")


if __name__ == "__main__":
    main()
