"""Rewrites of tf2onnx's graphs into exactly equivalent ones: those OpenCV DNN 4.x imports
wrongly or not at all (TOOLCHAIN.md trap 5b), into graphs that every OpenCV from 4.6 on
imports and computes right; and `conv_transpose_to_conv`, for onnxruntime's int8 kernels.

Each rewrite changes the ModelProto in place and needs static shapes, which tfseg's exports
have; `rewrite_for_opencv` applies the OpenCV ones, after conversion
(`tfseg.deploy.onnx_conversion`).
"""

import itertools

import numpy as np
import onnx
import onnx.reference
from onnx import helper, numpy_helper

# "To the end of the axis" in a Slice: the int32 maximum, as tf2onnx writes it (OpenCV reads
# Slice bounds as int32).
TO_THE_END = np.iinfo(np.int32).max
# Pure data-movement ops that tf2onnx writes `tf.repeat` (nearest-neighbour upsampling) with.
_MOVES = {"Unsqueeze", "Tile", "Transpose", "Reshape", "Squeeze"}
# Initializers up to this many elements are read as constants (bounds, axes, shapes, repeats);
# larger ones are weights.
_SMALL = 64


def rewrite_for_opencv(proto):
    """Applies every rewrite below to `proto` (in place) and returns it."""
    crop_asymmetric_conv_transpose(proto)
    repeats_to_resize(proto)
    reduce_mean_to_average_pool(proto)
    order_slice_axes(proto)
    _drop_unused_initializers(proto.graph)
    return proto


def crop_asymmetric_conv_transpose(proto):
    """ConvTranspose with asymmetric pads -> unpadded ConvTranspose, then a Slice that crops.

    tf2onnx writes Keras' stride-2 'same' Conv2DTranspose with pads [0, 0, 1, 1], which OpenCV
    4.6 to 4.14 refuse ("Unsupported asymmetric padding in deconvolution layer"). The pads of a
    transposed convolution only crop its full output, so the Slice computes the same. (Pads
    given by `output_shape` or `auto_pad` instead are left as they are.)
    """
    graph = proto.graph
    for node in list(graph.node):
        pads = _attribute(node, "pads")
        if (node.op_type != "ConvTranspose" or pads is None
                or _attribute(node, "output_shape") is not None
                or _attribute(node, "auto_pad", b"NOTSET") != b"NOTSET"):
            continue
        begin, end = pads[:len(pads) // 2], pads[len(pads) // 2:]
        if begin == end:
            continue
        _set_attribute(node, "pads", [0] * len(pads))
        cropped = node.output[0]
        node.output[0] = f"{cropped}_uncropped"
        ends = [-pad if pad else TO_THE_END for pad in end]
        axes = list(range(2, 2 + len(begin)))
        _insert_after(graph, node, _slice(graph, f"{node.name}_crop", node.output[0], cropped,
                                          begin, ends, axes))


def repeats_to_resize(proto):
    """Nearest-neighbour upsampling written as Unsqueeze/Tile/Transpose/Reshape chains -> one
    Resize (nearest, exact integer sizes), then the Transpose the chain ended with, if any.

    Keras' UpSampling2D(interpolation="nearest") is `tf.repeat`, which tf2onnx writes with
    Tile: OpenCV 4.6 has no Tile layer, and 4.8.1's Tile copies the wrong blocks (no error).
    A chain is replaced only if it moves every element exactly as the upsampling (and
    transpose) does, which is checked by running it on the element indices (memory: about
    three times the chain's output as int64, 1.5 GB for SR from 256x256 to 1024x1024).
    """
    graph = proto.graph
    while (found := _repeat_chain(proto)) is not None:
        chain, sizes, perm = found
        position = list(graph.node).index(chain[0])
        for node in chain:
            graph.node.remove(node)
        name, output = f"{chain[-1].name}_resize", chain[-1].output[0]
        resized = output if perm == [0, 1, 2, 3] else f"{name}_output"
        graph.initializer.append(numpy_helper.from_array(np.asarray(sizes, np.int64),
                                                         f"{name}_sizes"))
        replacement = [helper.make_node(
            "Resize", [chain[0].input[0], "", "", f"{name}_sizes"], [resized], name=name,
            mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
        if resized != output:
            replacement.append(helper.make_node("Transpose", [resized], [output],
                                                name=f"{name}_transpose", perm=perm))
        for node in reversed(replacement):
            graph.node.insert(position, node)


def reduce_mean_to_average_pool(proto):
    """ReduceMean over H and/or W of an NCHW tensor, keeping dims -> AveragePool with a kernel
    as large as the reduced axes.

    OpenCV 4.8's Reduce layer is wrong when it runs on several threads, which it does above a
    size (opencv/opencv#24044, fixed after 4.8.1): ICNet's pyramid-pooling means came out as
    garbage, without an error. AveragePool is right in every OpenCV from 4.6 on.
    """
    shapes = _static_shapes(proto)
    constants = _constants(proto.graph)
    for node in proto.graph.node:
        if node.op_type != "ReduceMean" or _attribute(node, "keepdims", 1) != 1:
            continue
        shape = shapes.get(node.input[0], [])
        axes = _attribute(node, "axes")
        if axes is None and len(node.input) > 1 and node.input[1] in constants:
            axes = constants[node.input[1]].tolist()     # opset 18: axes as an input
        axes = {axis % len(shape) for axis in axes or ()}
        if len(shape) != 4 or 0 in shape or not axes or not axes <= {2, 3}:
            continue
        kernel = [shape[axis] if axis in axes else 1 for axis in (2, 3)]
        replacement = helper.make_node("AveragePool", node.input[:1], node.output,
                                       name=node.name, kernel_shape=kernel)
        node.CopyFrom(replacement)


def order_slice_axes(proto):
    """Slice -> a Slice over only the axes it cuts, ascending and consecutive.

    tf2onnx writes a strided slice of an NHWC tensor in an NCHW graph with axes [0, 2, 3, 1];
    OpenCV 4.6 requires consecutive ascending axes ("axes[i - 1] == axes[i] - 1" in
    parseSlice). Axes taken whole are dropped, the rest sorted (starts, ends and steps alike),
    and gaps between them filled with whole axes.
    """
    graph = proto.graph
    shapes = _static_shapes(proto)
    constants = _constants(graph)
    for node in list(graph.node):
        inputs = list(node.input)
        if node.op_type != "Slice" or len(inputs) < 4 or not all(
                name in constants for name in inputs[1:]):
            continue
        shape = shapes.get(inputs[0])
        if not shape or 0 in shape:
            continue
        starts, ends, axes = (constants[name].tolist() for name in inputs[1:4])
        steps = constants[inputs[4]].tolist() if len(inputs) > 4 else [1] * len(axes)
        cuts = {axis % len(shape): (start, end, step)
                for start, end, step, axis in zip(starts, ends, steps, axes)
                if not _takes_whole(start, end, step, shape[axis % len(shape)])}
        ordered = sorted(cuts) or [axes[0] % len(shape)]
        ordered = list(range(ordered[0], ordered[-1] + 1))
        if ordered == axes:
            continue
        bounds = [cuts.get(axis, (0, TO_THE_END, 1)) for axis in ordered]
        starts, ends, steps = (list(values) for values in zip(*bounds))
        replacement = _slice(graph, node.name, inputs[0], node.output[0], starts, ends,
                             ordered, steps if any(step != 1 for step in steps) else None)
        node.CopyFrom(replacement)


def _repeat_chain(proto):
    """The first chain of data-movement nodes (containing a Tile) from an NCHW tensor to the
    same tensor upsampled by integer factors (nearest neighbour), possibly transposed; with the
    upsampled sizes and the transpose's perm. None if there is no such chain."""
    graph = proto.graph
    shapes = _static_shapes(proto)
    constants = _constants(graph)
    consumers = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    producers = {output: node for node in graph.node for output in node.output}
    outputs = {output.name for output in graph.output}

    def movable(node):
        return node.op_type in _MOVES and all(name in constants for name in node.input[1:])

    def sole_consumer(name):
        users = consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in outputs else None

    for tile in graph.node:
        if tile.op_type != "Tile" or not movable(tile):
            continue
        chain = [tile]
        while ((before := producers.get(chain[0].input[0])) is not None and movable(before)
               and sole_consumer(before.output[0]) is chain[0]):
            chain.insert(0, before)
        while ((after := sole_consumer(chain[-1].output[0])) is not None and movable(after)
               and after.input[0] == chain[-1].output[0]):
            chain.append(after)
        position = chain.index(tile)
        for start in range(position + 1):
            for stop in range(len(chain), position, -1):
                upsampling = _as_upsampling(chain[start:stop], shapes, constants,
                                            proto.opset_import)
                if upsampling is not None:
                    return (chain[start:stop], *upsampling)
    return None


def _as_upsampling(chain, shapes, constants, opset_import):
    """(sizes, perm) if `chain` computes Transpose(perm) of its NCHW input upsampled to `sizes`
    by integer factors as nearest neighbour does (checked on element indices), else None."""
    source, result = shapes.get(chain[0].input[0]), shapes.get(chain[-1].output[0])
    if len(source or ()) != 4 or len(result or ()) != 4 or 0 in source + result:
        return None
    moved = None
    for perm in itertools.permutations(range(4)):
        sizes = [result[perm.index(axis)] for axis in range(4)]
        factors = np.divide(sizes, source)
        if any(factors[:2] != 1) or any(factors % 1) or all(factors == 1):
            continue
        if moved is None:
            indices = np.arange(np.prod(source), dtype=np.int64).reshape(source)
            moved = _run_on(chain, indices, constants, opset_import)
        upsampled = indices.repeat(int(factors[2]), axis=2).repeat(int(factors[3]), axis=3)
        if np.array_equal(moved, upsampled.transpose(perm)):
            return sizes, list(perm)
    return None


def _run_on(chain, data, constants, opset_import):
    """Output of the node chain `chain` (whose other inputs are constants) on `data`."""
    names = {name for node in chain for name in node.input[1:]}
    graph = helper.make_graph(
        chain, "chain",
        [helper.make_tensor_value_info(chain[0].input[0], onnx.TensorProto.INT64, data.shape)],
        [helper.make_tensor_value_info(chain[-1].output[0], onnx.TensorProto.INT64, None)],
        [numpy_helper.from_array(constants[name], name) for name in names])
    evaluator = onnx.reference.ReferenceEvaluator(
        helper.make_model(graph, opset_imports=opset_import))
    return evaluator.run(None, {chain[0].input[0]: data})[0]


def conv_transpose_to_conv(proto):
    """ConvTranspose -> Conv (stride 1), or Conv + DepthToSpace (stride s), exactly.

    onnxruntime has no int8 ConvTranspose kernel: a quantized one runs in float32 between a
    DequantizeLinear and a QuantizeLinear. Output row s q + r of a stride-s transposed
    convolution with a k-tap kernel W is sum_m x[q - m] W[s m + r]: an ordinary convolution
    of x with the taps r, s + r, ... of W, reversed. One Conv computes the s x s phases as
    channels, DepthToSpace interleaves them, and a Slice keeps the (H - 1) s + k rows and
    columns of the transposed convolution. A stride-1 ConvTranspose with pads p is a Conv
    with the kernel flipped and pads k - 1 - p. Handles 2-D nodes with constant weights,
    group 1, dilation 1 and no output_shape, output_padding or auto_pad (with stride > 1:
    no pads, as `crop_asymmetric_conv_transpose` leaves them, and equal strides); others are
    left as they are.
    """
    graph = proto.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    shapes = _static_shapes(proto)
    for node in list(graph.node):
        if node.op_type != "ConvTranspose" or not _plain_conv_transpose(node, weights):
            continue
        kernel = numpy_helper.to_array(weights[node.input[1]])   # (C in, C out, kh, kw)
        bias = (numpy_helper.to_array(weights[node.input[2]])
                if len(node.input) > 2 and node.input[2] else None)
        strides = list(_attribute(node, "strides", [1, 1]))
        pads = list(_attribute(node, "pads", [0, 0, 0, 0]))
        size = kernel.shape[2:]
        if strides == [1, 1]:
            if any(pad > k - 1 for pad, k in zip(pads, [*size, *size])):
                continue
            flipped = kernel[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
            conv_pads = [k - 1 - pad for pad, k in zip(pads, [*size, *size])]
            replacement = _conv(graph, node, node.output[0], flipped, bias, conv_pads)
        elif (strides[0] == strides[1] and not any(pads)
              and all(shapes.get(node.input[0], [0, 0, 0, 0])[2:])):   # a static H, W
            replacement = _sub_pixel_conv(graph, node, kernel, bias, strides[0],
                                          shapes[node.input[0]][2:])
        else:
            continue
        index = list(graph.node).index(node)
        graph.node.remove(node)
        for offset, new in enumerate(replacement):
            graph.node.insert(index + offset, new)
    _drop_unused_initializers(graph)
    return proto


def _plain_conv_transpose(node, weights):
    return (node.input[1] in weights and len(weights[node.input[1]].dims) == 4
            and (len(node.input) < 3 or not node.input[2] or node.input[2] in weights)
            and _attribute(node, "group", 1) == 1
            and list(_attribute(node, "dilations", [1, 1])) == [1, 1]
            and _attribute(node, "output_shape") is None
            and not any(_attribute(node, "output_padding", []))
            and _attribute(node, "auto_pad", b"NOTSET") == b"NOTSET")


def _sub_pixel_conv(graph, node, kernel, bias, stride, input_size):
    """[Conv, DepthToSpace(, Slice)] computing the unpadded stride-`stride` ConvTranspose
    `node` of `kernel` (C in, C out, kh, kw) on an input of `input_size` (H, W)."""
    channels_out, size = kernel.shape[1], kernel.shape[2:]
    taps = [-(-k // stride) for k in size]                     # ceil(k / s) per axis
    phases = np.zeros((stride * stride * channels_out, kernel.shape[0], *taps), kernel.dtype)
    for row, column in itertools.product(range(stride), repeat=2):
        first = (row * stride + column) * channels_out
        for j, i in itertools.product(range(taps[0]), range(taps[1])):
            ty, tx = stride * (taps[0] - 1 - j) + row, stride * (taps[1] - 1 - i) + column
            if ty < size[0] and tx < size[1]:
                phases[first:first + channels_out, :, j, i] = kernel[:, :, ty, tx].T
    output = node.output[0]
    full = [(n - 1) * stride + k for n, k in zip(input_size, size)]
    interleaved = [stride * (n + t - 1) for n, t in zip(input_size, taps)]
    shuffled = output if interleaved == full else f"{output}_interleaved"
    nodes = _conv(graph, node, f"{output}_phases",
                  phases, None if bias is None else np.tile(bias, stride * stride),
                  [t - 1 for t in taps] * 2)
    nodes.append(helper.make_node("DepthToSpace", [f"{output}_phases"], [shuffled],
                                  name=f"{node.name}_interleave", blocksize=stride,
                                  mode="DCR"))
    if shuffled != output:
        nodes.append(_slice(graph, f"{node.name}_phases_crop", shuffled, output, [0, 0], full,
                            [2, 3]))
    return nodes


def _conv(graph, node, output, kernel, bias, pads):
    """[a Conv node] of `kernel` (+ `bias`) with `pads` on `node`'s input, its weights added
    to the graph's initializers."""
    inputs = [node.input[0]]
    for role, values in (("kernel", kernel), ("bias", bias)):
        if values is not None:
            graph.initializer.append(numpy_helper.from_array(
                np.ascontiguousarray(values), f"{node.name}_as_conv_{role}"))
            inputs.append(f"{node.name}_as_conv_{role}")
    return [helper.make_node("Conv", inputs, [output], name=f"{node.name}_as_conv",
                             kernel_shape=list(kernel.shape[2:]), pads=pads)]


def _takes_whole(start, end, step, size):
    """Whether a Slice bound pair keeps all of an axis of `size` elements."""
    return step == 1 and (start == 0 or start <= -size) and end >= size


def _slice(graph, name, data, output, starts, ends, axes, steps=None):
    """A Slice node (its bounds added to the graph's initializers as int64)."""
    bounds = {"starts": starts, "ends": ends, "axes": axes}
    if steps is not None:
        bounds["steps"] = steps
    inputs = [data]
    for key, values in bounds.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(values, np.int64),
                                                         f"{name}_{key}"))
        inputs.append(f"{name}_{key}")
    return helper.make_node("Slice", inputs, [output], name=name)


def _insert_after(graph, node, new):
    graph.node.insert(list(graph.node).index(node) + 1, new)


def _attribute(node, name, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _set_attribute(node, name, value):
    for attribute in node.attribute:
        if attribute.name == name:
            attribute.CopyFrom(helper.make_attribute(name, value))


def _constants(graph):
    """The graph's initializers as numpy arrays, by name (small ones only are read: large
    weights are never bounds, axes or shapes)."""
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer
            if np.prod(tensor.dims) <= _SMALL}


def _static_shapes(proto):
    """Static shapes of the graph's inputs and intermediate tensors, inferred afresh.

    Initializers enter the probe as typed inputs except small ones (bounds, axes, shapes, which
    inference reads), so large weights are not serialised for it.
    """
    graph = proto.graph
    small = [tensor for tensor in graph.initializer if np.prod(tensor.dims) <= _SMALL]
    typed = [helper.make_tensor_value_info(tensor.name, tensor.data_type, tensor.dims)
             for tensor in graph.initializer if np.prod(tensor.dims) > _SMALL]
    probe = helper.make_model(
        helper.make_graph(graph.node, "probe", [*graph.input, *typed], graph.output, small),
        opset_imports=proto.opset_import, ir_version=proto.ir_version)
    inferred = onnx.shape_inference.infer_shapes(probe).graph
    return {info.name: [d.dim_value for d in info.type.tensor_type.shape.dim]
            for info in [*inferred.input, *inferred.value_info, *inferred.output]}


def _drop_unused_initializers(graph):
    used = {name for node in graph.node for name in node.input}
    for tensor in [tensor for tensor in graph.initializer if tensor.name not in used]:
        graph.initializer.remove(tensor)
