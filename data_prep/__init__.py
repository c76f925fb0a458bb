"""Raw-data converters and the embedded phantom (python -m data_prep.mmwhs, .abdominal, .folder,
.phantom).

TensorFlow is imported here, before any converter module imports it, so that its start-up
noise is filtered out of stderr (sifa_synthmix/tensorflow_start.py).
"""
from sifa_synthmix.tensorflow_start import import_tensorflow

import_tensorflow()
