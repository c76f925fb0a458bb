"""What this CPU computes natively, from /proc/cpuinfo's flags: bfloat16 instructions (AVX512_BF16,
or AMX's bfloat16 tiles) make mixed_bfloat16 steps faster than float32 ones at large sizes."""
BFLOAT16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(path="/proc/cpuinfo"):
    """The flags of the first processor listed in `path` (an empty set where there is none)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bfloat16(flags=None):
    """The CPU's bfloat16 instruction flags (sorted; empty when it has none)."""
    return sorted(set(BFLOAT16_FLAGS) & (cpu_flags() if flags is None else set(flags)))
