"""Where a traced step's time goes: TensorFlow profiler trace of a few calls, op time by op type."""
import collections
import pathlib
import tempfile

import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

# Ops that only call other ops (whose own events are counted) or wait on them.
CONTAINER_OPS = {"If", "StatelessIf", "While", "StatelessWhile", "PartitionedCall", "StatefulPartitionedCall"}


def _op_type(event_name):
    """"scope/name:Type" -> "Type"; None for executor and threading events ("A::B", no colon)."""
    if "::" in event_name or ":" not in event_name:
        return None
    return event_name.rpartition(":")[2]


def op_type_seconds(xspace):
    """{op type: seconds summed over the compute threads} of a parsed XSpace."""
    totals = collections.Counter()
    for plane in xspace.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                kind = _op_type(plane.event_metadata[event.metadata_id].name)
                if kind and kind not in CONTAINER_OPS:
                    totals[kind] += event.duration_ps * 1e-12
    return dict(totals.most_common())


def profile_calls(function, args, calls=2):
    """{op type: seconds per call} of `calls` calls of an already traced function."""
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        for _ in range(calls):
            result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(pathlib.Path(folder).rglob("*.xplane.pb")).read_bytes())
    return {kind: seconds / calls for kind, seconds in op_type_seconds(space).items()}
