"""SynthMix: block masks, mixing, the Mixup Inspector and its losses (plus the Mixup/CutMix baselines)."""
