"""Checkpoints of earlier runs still restore: the paths naming every variable of a checkpoint
(SIFA, SIFA+SynthMix, the Mixup and CycleGAN baselines) are those recorded at commit a258fcf."""
import gzip
import json

import pytest

from checkpoint_layout import RECORD, TASKS, task_paths


@pytest.mark.parametrize("kind,protocol", TASKS)
def test_checkpoint_paths_are_those_of_earlier_runs(kind, protocol):
    recorded = set(json.loads(gzip.decompress(RECORD.read_bytes()))[f"{kind}/{protocol}"])
    current = set(task_paths(kind, protocol))
    assert not recorded - current and not current - recorded, (
        f"missing: {sorted(recorded - current)[:5]}, new: {sorted(current - recorded)[:5]}")
