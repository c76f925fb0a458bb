"""SynthMix: block masks, mixing, the Mixup Inspector and its losses (plus the Mixup/CutMix baselines).
The task that trains with them is training/synthmix_task.py."""
