"""Picks the task a TrainConfig describes: plain SIFA, or SIFA with a mixing protocol."""
from sifa_synthmix.task import SIFATask


def build_task(cfg):
    if cfg.synthmix.protocol == "none":
        return SIFATask(cfg)
    from sifa_synthmix.synthmix.task import MixingTask  # pylint: disable=import-outside-toplevel

    return MixingTask(cfg)
