"""SIFA and SIFA+SynthMix for cross-modality domain adaptation in TensorFlow 2."""
