"""Imports TensorFlow without its start-up noise on stderr.

TensorFlow 2.21 writes C++ log lines when it is imported and when it first looks for devices
(the oneDNN notice, the CUDA probe of a machine without a GPU, the CPU feature guard). They
come before absl::InitializeLog runs, so TF_CPP_MIN_LOG_LEVEL does not silence them. Here file
descriptor 2 goes to a temporary file while TensorFlow is imported and lists its devices;
afterwards every line that is not known start-up noise is written to stderr again, so a real
warning or error still shows. Later C++ INFO lines are hidden unless the user set
TF_CPP_MIN_LOG_LEVEL.

It also switches TensorFlow's oneDNN kernels on for every x86-64 CPU (`use_onednn`, which the
package runs when it is imported, before anything imports TensorFlow).
"""
import os
import platform
import re
import sys
import tempfile

# Start-up lines of a CPU-only machine, and the continuation line of the CPU feature guard.
NOISE = re.compile("|".join((
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"port\.cc:\d+\] oneDNN custom operations are on",
    r"cudart_stub\.cc:\d+\]",
    r"cuda_platform\.cc:\d+\] failed call to cuInit",
    r"cpu_feature_guard\.cc:\d+\]",
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation_placer\.cc:\d+\] computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
)))


def use_onednn():
    """TF_ENABLE_ONEDNN_OPTS=1 on x86-64, unless the user set it.

    TensorFlow 2.21 turns its oneDNN kernels on by itself only on CPUs with AVX-512 VNNI, bfloat16
    or AMX. Elsewhere (AVX2-only CPUs) it runs Eigen's convolutions, whose gradients ran 2.5-3.4 times
    slower per FLOP than their forward passes here: the paper-scale SIFA step took 25.3 s instead
    of 22.2 s (docs/benchmarks.md, "The AVX2-only EPYC"). Read when TensorFlow is imported, so it
    has no effect once TensorFlow is loaded."""
    if platform.machine().lower() in ("x86_64", "amd64"):
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def import_tensorflow():
    """`import tensorflow` with its start-up noise filtered out of stderr; returns the module.

    Does nothing more than the import once TensorFlow is loaded (it has spoken by then)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # later C++ INFO lines
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf  # pylint: disable=import-outside-toplevel

            tf.config.list_physical_devices()  # the CUDA probe, without starting the runtime
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
    return tf
