"""What the numbers were measured on: cores, CPU model, memory, TensorFlow version."""
import os
import platform

import tensorflow as tf

from sifa_synthmix import cpu_features


def _first_value(path, key):
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def native_bfloat16():
    return bool(cpu_features.native_bfloat16())


def describe_machine():
    memory_kb = _first_value("/proc/meminfo", "MemTotal").split()[0]
    flags = _first_value("/proc/cpuinfo", "flags").split()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": _first_value("/proc/cpuinfo", "model name"),
        "cpu_vector_flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma"))),
        "memory_gb": round(int(memory_kb) / 2 ** 20, 1) if memory_kb.isdigit() else None,
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
    }
