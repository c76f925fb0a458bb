"""What this CPU computes natively, from /proc/cpuinfo's flags: bfloat16 instructions (AVX512_BF16,
or AMX's bfloat16 tiles) make mixed_bfloat16 steps faster than float32 ones at large sizes; and
what a timing was measured on. Without TensorFlow, so that a benchmark of another framework
(benchmarks/peer_step_time.py) describes the machine alike."""
import os
import platform

BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")
UNKNOWN = "unknown"


def proc_value(path, key):
    """The value of the first "key: value" line of a /proc file (UNKNOWN where there is none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return UNKNOWN


def cpu_flags(path="/proc/cpuinfo"):
    """The flags of the first processor listed in `path` (an empty set where there is none)."""
    value = proc_value(path, "flags")
    return set() if value == UNKNOWN else set(value.split())


def describe_cpu():
    """Cores, CPU model, its vector instruction flags, memory and Python version."""
    memory_kb = proc_value("/proc/meminfo", "MemTotal").split()[0]
    return {
        "cpus": os.cpu_count(),
        "cpu_model": proc_value("/proc/cpuinfo", "model name"),
        "cpu_vector_flags": sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma"))),
        "memory_gb": round(int(memory_kb) / 2 ** 20, 1) if memory_kb.isdigit() else None,
        "python": platform.python_version(),
    }


def native_bfloat16(flags=None):
    """The CPU's bfloat16 instruction flags (sorted; empty when it has none)."""
    return sorted(set(BFLOAT16_FLAGS) & (cpu_flags() if flags is None else set(flags)))
