"""Floating-point operations of a traced TensorFlow graph, counted from its convolution and
matrix-multiply ops' static shapes (forward and backward), and TensorFlow's own profiler count.

Elementwise ops, normalisation and the optimizer's updates are left out: they move memory more
than they compute (the profiler, which counts some of them, gives the comparison).
"""
import math

import tensorflow as tf

# Convolution ops, and the input index of their filter (None: the filter shape is the output's).
_CONV_FILTER_INPUT = {"Conv2D": 1, "Conv2DBackpropInput": 1, "Conv2DBackpropFilter": None,
                      "DepthwiseConv2dNative": 1}
# The tensor whose every element takes one multiply-add per filter tap and input channel.
_CONV_PER_ELEMENT_TENSOR = {"Conv2D": "output", "Conv2DBackpropInput": 2, "Conv2DBackpropFilter": 2,
                            "DepthwiseConv2dNative": "output"}


def _shape(tensor):
    shape = tensor.shape
    if shape.rank is None or not shape.is_fully_defined():
        raise ValueError(f"{tensor.name} has no static shape ({shape}); trace with fixed input shapes")
    return shape.as_list()


def op_flops(op):
    """FLOPs (2 per multiply-add) of one conv / matmul op; 0 for any other op."""
    if op.type in _CONV_FILTER_INPUT:
        index = _CONV_FILTER_INPUT[op.type]
        kernel_h, kernel_w, channels_in, _ = _shape(op.outputs[0] if index is None else op.inputs[index])
        which = _CONV_PER_ELEMENT_TENSOR[op.type]
        elements = math.prod(_shape(op.outputs[0] if which == "output" else op.inputs[which]))
        if op.type == "DepthwiseConv2dNative":
            channels_in = 1
        return 2 * elements * kernel_h * kernel_w * channels_in
    if op.type in ("MatMul", "BatchMatMulV2", "BatchMatMulV3"):
        transpose_a = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        inner = _shape(op.inputs[0])[-2 if transpose_a else -1]
        return 2 * math.prod(_shape(op.outputs[0])) * inner
    return 0


def live_operations(graph):
    """The ops a call of the function runs: those its outputs and stateful ops depend on. The rest
    (e.g. filter gradients of networks an update does not train) is pruned when TF instantiates it."""
    operations = graph.get_operations()
    stack = ([t.op for t in graph.outputs] + list(graph.control_outputs)
             + [op for op in operations if op._is_stateful])  # pylint: disable=protected-access
    live = set()
    while stack:
        op = stack.pop()
        if op not in live:
            live.add(op)
            stack.extend(t.op for t in op.inputs)
            stack.extend(op.control_inputs)
    return [op for op in operations if op in live]


def graph_flops(graph):
    """{op type: FLOPs} of the graph's live conv and matmul ops (functions it calls are not entered)."""
    totals = {}
    for op in live_operations(graph):
        flops = op_flops(op)
        if flops:
            totals[op.type] = totals.get(op.type, 0) + flops
    return totals


def network_name(op_name):
    """"gradient_tape/d_P_ll_3/c1_1/convolution/..." -> "d_P_ll" (Keras numbers repeated calls)."""
    scope = op_name.removeprefix("gradient_tape/").split("/")[0]
    stem, _, number = scope.rpartition("_")
    return stem if number.isdigit() and stem else scope


def flops_by_network(graph):
    """{network: {"forward": FLOPs, "backward": FLOPs}} of the graph's live conv and matmul ops
    (backward: built by a GradientTape; a transposed conv's forward op is a Conv2DBackpropInput)."""
    totals = {}
    for op in live_operations(graph):
        flops = op_flops(op)
        if flops:
            passes = totals.setdefault(network_name(op.name), {"forward": 0, "backward": 0})
            passes["backward" if op.name.startswith("gradient_tape/") else "forward"] += flops
    return totals


def nested_conv_ops(graph):
    """How many conv / matmul ops sit in functions the graph calls (cond branches, ...), uncounted."""
    count = 0
    for function in graph._functions.values():  # pylint: disable=protected-access
        definition = function.cached_definition if hasattr(function, "cached_definition") else function.definition
        count += sum(node.op in _CONV_FILTER_INPUT or "MatMul" in node.op for node in definition.node_def)
    return count


def profiler_flops(graph):
    """TensorFlow's profiler's float_operation count of the graph (0 when it fails)."""
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    result = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return int(result.total_float_ops) if result is not None else 0


def function_flops(function, *specs):
    """{op type: FLOPs} of a Python function traced on tensor specs."""
    return graph_flops(tf.function(function, autograph=False).get_concrete_function(*specs).graph)
