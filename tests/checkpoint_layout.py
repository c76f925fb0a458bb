"""The paths by which a run's checkpoint names its variables, for tasks built at tiny widths: the
record that a change to the networks still restores the checkpoints of earlier runs.

    python tests/checkpoint_layout.py   # rewrites tests/data/checkpoint_paths.json.gz

A checkpoint (tf.train.Checkpoint) finds a network's variables by the position of their layer
among the network's operations (`g_A/_operations/5/kernel`), so a layer added, removed or moved
in front of others renames every later one. tests/data/checkpoint_paths.json.gz was written by
this script at commit a258fcf; tests/test_checkpoint_layout.py compares today's paths with it.
"""
import collections
import gzip
import json
import os
import pathlib
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import tensorflow as tf  # noqa: E402  pylint: disable=wrong-import-position
from tensorflow.core.protobuf import trackable_object_graph_pb2  # noqa: E402  pylint: disable=wrong-import-position

from sifa_synthmix.config import (  # noqa: E402  pylint: disable=wrong-import-position
    ModelConfig, SynthMixConfig, TrainConfig)
from sifa_synthmix.training.task_factory import build_task  # noqa: E402  pylint: disable=wrong-import-position

RECORD = pathlib.Path(__file__).resolve().parent / "data" / "checkpoint_paths.json.gz"
# (model kind, mix protocol): SIFA's networks, the SynthMix Inspector, the Mixup baseline's
# ResNet inspector and the CycleGAN baseline.
TASKS = (("sifa", "synthmix"), ("sifa", "mixup"), ("cyclegan", "none"))
MODEL = ModelConfig(image_size=32, ngf=8, ndf=4, encoder_base=4, num_classes=5)
MAX_DEPTH = 6  # deep enough for a variable of a layer of a network of the checkpoint's root


def variable_paths(checkpoint_path):
    """Every path from the checkpoint's root to a saved variable, sorted (a variable reached by
    two objects, a network and an optimizer, has two)."""
    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(tf.train.load_checkpoint(checkpoint_path).get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    paths, queue = [], collections.deque([(0, ())])
    while queue:
        node, prefix = queue.popleft()
        for child in graph.nodes[node].children:
            path = (*prefix, child.local_name)
            if graph.nodes[child.node_id].attributes:
                paths.append("/".join(path))
            if len(path) < MAX_DEPTH:
                queue.append((child.node_id, path))
    return sorted(paths)


def task_paths(kind, protocol):
    cfg = TrainConfig(model=MODEL, synthmix=SynthMixConfig(protocol=protocol, k=4, inspector_ndf=4), kind=kind,
                      batch_size=2, pool_size=3)
    task = build_task(cfg)
    with tempfile.TemporaryDirectory() as folder:
        return variable_paths(tf.train.Checkpoint(**task.checkpoint_items()).write(f"{folder}/checkpoint"))


def layout():
    """{"kind/protocol": [variable paths]} of today's code."""
    return {f"{kind}/{protocol}": task_paths(kind, protocol) for kind, protocol in TASKS}


if __name__ == "__main__":
    RECORD.write_bytes(gzip.compress(json.dumps(layout(), indent=0, sort_keys=True).encode("utf-8"), mtime=0))
