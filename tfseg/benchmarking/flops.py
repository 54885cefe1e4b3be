"""FLOPs of a Keras model, counted on its traced TensorFlow graph."""

import math

from tfseg.deploy.runtimes import model_state_shape, step_outputs

# Graph ops whose work is multiply-adds (counted 2 FLOPs each, as the papers do); element-wise
# work (bias, batch norm, activations, resizing, pooling) is left out.
MULTIPLY_ADD_OPS = ("Conv2D", "Conv2DBackpropInput", "DepthwiseConv2dNative", "MatMul",
                    "BatchMatMulV2", "BatchMatMulV3")


def count_flops(model, shape):
    """FLOPs (2 x multiply-adds) of `model(x, training=False)` on a float32 input of `shape`;
    for a recurrent step model (inputs a frame and `"state"`), of one step: the frame of
    `shape` and the state of its static shape, with the same batch.

    Counted on the traced TensorFlow graph, so every convolution, transposed convolution and
    dense layer counts as often as it runs (a shared trunk twice) at the size it runs at. A
    transposed convolution counts 2 x input pixels x k x k x C_in x C_out: each input pixel is
    spread over a k x k window.
    """
    import tensorflow as tf

    specs = [tf.TensorSpec(shape, tf.float32)]
    state_shape = model_state_shape(model)
    if state_shape is None:
        function = tf.function(lambda pixels: model(pixels, training=False))
    else:
        specs.append(tf.TensorSpec((shape[0], *state_shape), tf.float32))
        function = tf.function(lambda pixels, state: step_outputs(model, pixels, state))
    graph = function.get_concrete_function(*specs).graph
    return sum(_op_flops(op) for op in _operations(graph) if op.type in MULTIPLY_ADD_OPS)


def _operations(graph):
    """The graph's ops, with those of the functions it calls (Keras runs a grouped
    convolution as a nested XLA function) in place of each call."""
    for op in graph.get_operations():
        if op.type in ("PartitionedCall", "StatefulPartitionedCall"):
            yield from _operations(graph._get_function(op.get_attr("f").name).graph)
        else:
            yield op


def _op_flops(op):
    if op.type == "Conv2DBackpropInput":  # inputs: output sizes, filter, the layer's input
        return 2 * math.prod(op.inputs[2].shape[:-1]) * math.prod(op.inputs[1].shape)
    if op.type in ("Conv2D", "DepthwiseConv2dNative"):  # per output pixel: the whole filter
        # (a depthwise filter is (kh, kw, C, multiplier); a grouped one (kh, kw, C/g, C_out))
        return 2 * math.prod(op.outputs[0].shape[:-1]) * math.prod(op.inputs[1].shape)
    # Matrix products: output elements x the contracted dimension.
    transposed = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
    return 2 * math.prod(op.outputs[0].shape) * op.inputs[0].shape[-2 if transposed else -1]
