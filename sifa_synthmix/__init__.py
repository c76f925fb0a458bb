"""SIFA and SIFA+SynthMix for cross-modality domain adaptation in TensorFlow 2."""
from sifa_synthmix.tensorflow_start import use_onednn

use_onednn()
