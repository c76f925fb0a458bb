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


def _compute_events(xspace):
    """(op type, start, duration), in picoseconds, of every op event on the compute threads."""
    for plane in xspace.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                kind = _op_type(plane.event_metadata[event.metadata_id].name)
                if kind and kind not in CONTAINER_OPS:
                    yield kind, line.timestamp_ns * 1000 + event.offset_ps, event.duration_ps


def op_type_seconds(xspace):
    """{op type: seconds summed over the compute threads} of a parsed XSpace."""
    totals = collections.Counter()
    for kind, _, duration in _compute_events(xspace):
        totals[kind] += duration * 1e-12
    return dict(totals.most_common())


def is_convolution(kind):
    """Forward and backward convolutions, also those oneDNN fused with a pad, bias or activation."""
    return "Conv2D" in kind


def seconds_without_convolutions(xspace):
    """(wall seconds from the first op's start to the last op's end, the seconds of it in which no
    convolution runs on any compute thread): the time a faster convolution could not shorten."""
    events = list(_compute_events(xspace))
    if not events:
        return 0.0, 0.0
    first = min(start for _, start, _ in events)
    last = max(start + duration for _, start, duration in events)
    covered, reached = 0, first
    for start, end in sorted((s, s + d) for kind, s, d in events if is_convolution(kind)):
        covered += max(0, end - max(start, reached))
        reached = max(reached, end)
    return (last - first) * 1e-12, (last - first - covered) * 1e-12


def profile_calls(function, args, calls=2):
    """({op type: seconds per call}, {"wall": s, "without_convolutions": s} per call) of `calls`
    calls of an already traced function."""
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        for _ in range(calls):
            result = function(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
        tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        space.ParseFromString(next(pathlib.Path(folder).rglob("*.xplane.pb")).read_bytes())
    wall, without = seconds_without_convolutions(space)
    return ({kind: seconds / calls for kind, seconds in op_type_seconds(space).items()},
            {"wall": wall / calls, "without_convolutions": without / calls})
