"""Picks the task a TrainConfig describes: SIFA (with or without a mixing protocol), the CycleGAN
baseline, or a segmenter alone."""
from sifa_synthmix.training.segmenter_task import SegmenterTask
from sifa_synthmix.training.task import SIFATask

KINDS = ("sifa", "cyclegan", "segmenter")


def build_task(cfg):
    if cfg.kind not in KINDS:
        raise ValueError(f"unknown model kind {cfg.kind!r}; expected one of {KINDS}")
    if cfg.kind == "segmenter":
        return SegmenterTask(cfg)
    if cfg.kind == "cyclegan":
        from sifa_synthmix.training.cyclegan_task import CycleGANTask  # pylint: disable=import-outside-toplevel

        return CycleGANTask(cfg)
    if cfg.synthmix.protocol == "none":
        return SIFATask(cfg)
    from sifa_synthmix.training.synthmix_task import MixingTask  # pylint: disable=import-outside-toplevel

    return MixingTask(cfg)
