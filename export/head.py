"""The FP32 head inside a TensorRT 10 weakly typed build (FP16 flag, or a DLA build), found by what
the layers compute rather than by their names.

Why not names: onnx-tensorrt names a layer after its ONNX node only when the importer registers it.
The Gemm importer registers the MatrixMultiply but not the bias ElementWise, which keeps a default
"(Unnamed Layer* N) [ElementWise]" name (onnxOpImporters.cpp, Gemm, release/10.1-GA l.2042-2079; same
code in the 10.13 parser); constants get their initializer's name (importerUtils.cpp convertToTensor,
l.434-459) and duplicates a "_<counter>" suffix, so a name prefix also matches unrelated layers.
What survives parsing is every tensor name (each node output and graph input is renamed to its ONNX
name, ModelImporter.cpp/ImporterContext::registerTensor), so the head is found as a walk over tensors:
everything needed for the head's outputs that is not needed for the head's inputs.

Two halves: ``split_biased_gemms`` rewrites the head's Gemm nodes at export as MatMul + Add (a 2-D
bias, so no broadcast layer), giving every head layer its node's name even before parsing (what the
printed trtexec command can name); ``head_layers`` is the walk the Python builder runs on the parsed
network, on plain (name, inputs, outputs) tuples so that it runs, and is tested, without TensorRT.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Layer = tuple[str, Sequence[str | None], Sequence[str]]  # name, input tensor names (None: unset), outputs


def split_biased_gemms(proto, names: list[str]) -> list[str]:
    """Replace each plain Gemm (alpha = beta = 1, no transA, initializer weights) named in ``names``
    by MatMul (same name) + Add (``<name>_bias``); returns the head node names after the rewrite."""
    from onnx import helper, numpy_helper
    inits = {t.name: t for t in proto.graph.initializer}
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for i in node.input:
            uses[i] = uses.get(i, 0) + 1
    out, wanted = [], set(names)
    for node in list(proto.graph.node):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
        if (node.name not in wanted or node.op_type != "Gemm" or len(node.input) < 3 or not plain
                or node.input[1] not in inits or node.input[2] not in inits):
            continue
        a, b, c = node.input
        w, bias = numpy_helper.to_array(inits[b]), numpy_helper.to_array(inits[c])
        weight = np.ascontiguousarray(w.T if attrs.get("transB", 0) else w)
        new = {f"{b}.matmul": weight, f"{c}.row": bias.reshape(1, -1) if bias.ndim == 1 else bias}
        for key, value in new.items():
            proto.graph.initializer.append(numpy_helper.from_array(value, key))
        for old in (b, c):
            uses[old] -= 1
            if not uses[old]:
                proto.graph.initializer.remove(inits[old])
        at = list(proto.graph.node).index(node)
        product = f"{node.output[0]}.matmul"
        proto.graph.node.remove(node)
        proto.graph.node.insert(at, helper.make_node("MatMul", [a, f"{b}.matmul"], [product], name=node.name))
        proto.graph.node.insert(at + 1, helper.make_node("Add", [product, f"{c}.row"], list(node.output),
                                                         name=f"{node.name}_bias"))
        out.append(f"{node.name}_bias")
    return sorted(wanted | set(out))


def head_boundary(graph, head_nodes: set[str]) -> tuple[set[str], set[str], set[str]]:
    """(entry, produced, weights) of the head in an ONNX graph: the activations it takes from the
    rest of the graph, the tensors it makes, and the initializers (or Constant outputs) only it reads."""
    nodes = [n for n in graph.node if n.name in head_nodes]
    produced = {o for n in nodes for o in n.output if o}
    constants = {t.name for t in graph.initializer} | {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    read = {i for n in nodes for i in n.input if i and i not in produced}
    outside = {i for n in graph.node if n.name not in head_nodes for i in n.input}
    return read - constants, produced, (read & constants) - outside


def float_constants(graph, names: set[str]) -> set[str]:
    """Those of ``names`` that are FP32/FP16 initializers or Constant outputs: the head weights a
    printed trtexec command may pin (it pins an exactly named layer whatever its type)."""
    floats = {1, 10}  # TensorProto FLOAT, FLOAT16
    typed = {t.name: t.data_type for t in graph.initializer}
    for n in graph.node:
        if n.op_type == "Constant":
            value = next((a.t for a in n.attribute if a.name == "value"), None)
            typed.update({o: value.data_type if value is not None else 1 for o in n.output})
    return {n for n in names if typed.get(n) in floats}


def head_layers(layers: Sequence[Layer], inputs: set[str], entry: set[str], produced: set[str]) -> list[int]:
    """Indices of the network layers that compute the head: upstream of a tensor the head produces,
    but not upstream of (nor producing) any tensor the head takes in. The head's weights and their
    helper layers come along, since no head input needs them. LookupError when the head's tensors
    are not in the network (a rewritten graph, or an importer that renamed an input tensor away)."""
    producer = {o: i for i, (_, _, outs) in enumerate(layers) for o in outs}
    known = set(producer) | inputs
    missing = sorted(entry - known)
    if missing or not produced & known:
        raise LookupError(f"the head's tensors {missing or sorted(produced)} are not in the TensorRT network")

    def upstream(tensors: set[str]) -> set[int]:
        seen, todo = set(), [producer[t] for t in tensors if t in producer]
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo += [producer[t] for t in layers[i][1] if t is not None and t in producer]
        return seen

    return sorted(upstream(produced & set(producer)) - upstream(entry))


def network_layers(network) -> tuple[list[Layer], set[str]]:
    """A TensorRT INetworkDefinition as (name, inputs, outputs) tuples and its input names."""
    layers = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        layers.append((layer.name, [t.name if t is not None else None for t in ins],
                       [layer.get_output(j).name for j in range(layer.num_outputs)]))
    return layers, {network.get_input(k).name for k in range(network.num_inputs)}


def pin_head(trt, network, graph, head_nodes: list[str]) -> list[str]:
    """TensorRT 10, weakly typed: run the head's layers in FP32 with FP32 outputs. Layers on shape
    tensors or with non-float outputs are left alone, as trtexec does for a wildcard match in
    --layerPrecisions (samples/common/sampleEngines.cpp release/10.3 l.460-490); a name that matches
    exactly trtexec pins as given (l.454-458), so the printed command lists only the head's nodes and
    its float weights (``float_constants``). Returns the pinned layer names; the caller sets OBEY (GPU)
    or PREFER (DLA) precision constraints."""
    entry, produced, _ = head_boundary(graph, set(head_nodes))
    layers, inputs = network_layers(network)
    pinned = []
    for i in head_layers(layers, inputs, entry, produced):
        layer = network.get_layer(i)
        ins = [layer.get_input(j) for j in range(layer.num_inputs)]
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if any(t is not None and t.is_shape_tensor for t in ins) or any(
                t.dtype not in (trt.float32, trt.float16) for t in outs):
            continue
        layer.precision = trt.float32
        for j in range(len(outs)):
            layer.set_output_type(j, trt.float32)
        pinned.append(layer.name)
    return pinned
