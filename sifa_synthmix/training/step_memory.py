"""The memory a SIFA training step takes on a CPU, from the benchmark's measured peaks, and a
refusal of a step that cannot fit, before the run starts: without it the kernel's OOM killer ends
the run minutes later, leaving a lock and no checkpoint.

The model is fitted to peak resident memory measured by `benchmarks.worker` (one process per
configuration, SIFA, float32 and mixed_bfloat16; docs/benchmarks.md, "Memory of a training step"):

    peak MB = process + fixed + bytes_per_parameter * parameters
              + batch * (image_size / 256)^2 * (per_slice + per_slice_per_ngf * ngf) * low_precision

float32, demo widths (ngf 8, 2.2M parameters) at 64 px, batch 4 and 32: 1210 and 1546 MB; official
widths (ngf 32, 43.3M parameters) at 256 px, batch 1 and 2: 2500 and 3078 MB. The fit predicts
1546 MB for demo widths at 128 px, batch 8 (measured: 1534). mixed_bfloat16 at 256 px, official,
batch 1 and 2: 2407 and 2733 MB (per slice 0.56 of float32's, 3.7 bytes more per parameter).
SIFA+SynthMix takes more (3631 MB where SIFA takes 3078): the estimate is a lower bound for it.
"""
import os

from sifa_synthmix.errors import ToolkitError

PROCESS_MB = 584.0  # Python with TensorFlow imported, before any model
FIXED_MB = 537.0
BYTES_PER_PARAMETER = {"float32": 18.5, "low": 18.5 + 3.7}
PER_SLICE_MB_AT_256 = 63.3
PER_SLICE_MB_AT_256_PER_NGF = 16.08
LOW_PRECISION_SLICE_FACTOR = 0.56


class StepMemoryError(ToolkitError):
    """A training step needs more memory than the machine has available."""


def step_parts(cfg, parameters):
    """(fixed MB, MB per slice of the batch) of a process training SIFA with cfg."""
    low = cfg.runtime.precision != "float32"
    model = cfg.model
    per_slice = (PER_SLICE_MB_AT_256 + PER_SLICE_MB_AT_256_PER_NGF * model.ngf) * (model.image_size / 256) ** 2
    if low:
        per_slice *= LOW_PRECISION_SLICE_FACTOR
    fixed = PROCESS_MB + FIXED_MB + BYTES_PER_PARAMETER["low" if low else "float32"] * parameters / 1e6
    return fixed, per_slice


def step_megabytes(cfg, parameters):
    """Estimated peak resident memory (MB) of a process training SIFA with cfg."""
    fixed, per_slice = step_parts(cfg, parameters)
    return fixed + cfg.batch_size * per_slice


def _read_number(path):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def proc_megabytes(path, key):
    """The `key:` line of a /proc file whose values are in kB (/proc/meminfo, /proc/self/status),
    in MB; None when the file or line is not there."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def resident_megabytes():
    """This process's resident memory now (VmRSS), in MB; None where /proc is not there."""
    return proc_megabytes("/proc/self/status", "VmRSS")


def reachable_megabytes(meminfo="/proc/meminfo", cgroup="/sys/fs/cgroup"):
    """The peak resident memory this process can reach (MB): what it holds now plus the kernel's
    MemAvailable, or less under a cgroup (v2) memory limit, as in a container or a batch job.
    None where neither can be read."""
    available = proc_megabytes(meminfo, "MemAvailable")
    limit, used = _read_number(os.path.join(cgroup, "memory.max")), _read_number(os.path.join(cgroup, "memory.current"))
    if limit is not None and used is not None:
        in_group = (limit - used) / 2 ** 20
        available = in_group if available is None else min(available, in_group)
    return None if available is None else available + (resident_megabytes() or 0.0)


def check_step_fits(cfg, parameters, available_mb):
    """Raises StepMemoryError naming the flags when the estimated peak exceeds `available_mb`
    (what `reachable_megabytes` returns)."""
    needed = step_megabytes(cfg, parameters)
    if available_mb is None or needed <= available_mb:
        return
    fixed, per_slice = step_parts(cfg, parameters)
    fitting = int((available_mb - fixed) // per_slice)
    advice = (f"--batch_size={fitting} would fit" if fitting >= 1 else
              "even one slice does not fit: lower --image_size or the widths (--ngf, --ndf, --encoder_base)")
    raise StepMemoryError(
        f"--batch_size={cfg.batch_size} at {cfg.model.image_size} x {cfg.model.image_size}, "
        f"ngf {cfg.model.ngf}, {cfg.runtime.precision}: a SIFA training step needs about {needed / 1024:.1f} GiB "
        f"({per_slice:.0f} MB per slice, measured peaks in docs/benchmarks.md), and this machine has "
        f"{available_mb / 1024:.1f} GiB available; {advice}")
