"""Benchmarks of the toolkit (docs/benchmarks.md). TensorFlow runs here as the package runs it:
with its oneDNN kernels on (sifa_synthmix/tensorflow_start.py), set before any benchmark imports it."""
from sifa_synthmix.tensorflow_start import use_onednn

use_onednn()
