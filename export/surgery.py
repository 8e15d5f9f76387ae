"""Graph surgery: replace the RM branch of a portable graph with the single plugin node.

The exporter tags every node with the torch module path it came from, so the branch is exactly
the nodes emitted for ``layover::fused_mix``; onnx-graphsurgeon cuts them out and wires one
``LayoverFusedMix`` node (name, version, namespace and domain from ``kernels/identity.py``,
the same node ``translation_table(plugin=True)`` emits) between the same tensors. The weights
(``head.branch()``: the kernel's W_rs and b_rs, standardisation folded in) and the mix come from
the checkpoint's head, so nothing is read back out of the ReduceMean/Gemm pattern.
"""
from __future__ import annotations

import numpy as np

from layover_edge.core.errors import LayoverError
from layover_edge.kernels.identity import (
    LAYOUT_CODES,
    MIX_CODES,
    PLUGIN_DOMAIN,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)

PLUGIN_NODE = "layover_fused_mix"


def _array(t) -> np.ndarray:
    return t.detach().float().cpu().numpy().copy()


def replace_branch(proto, branch: list[str], head, layout: str):
    """(new ModelProto, plugin node name): ``branch`` node names replaced by one plugin node."""
    import onnx
    import onnx_graphsurgeon as gs

    graph = gs.import_onnx(proto)
    names = set(branch)
    nodes = [n for n in graph.nodes if n.name in names]
    if not nodes or len(nodes) != len(names):
        raise LayoverError("cannot find the fused RM branch in the exported graph (no fused_mix nodes)")
    produced = {id(t) for n in nodes for t in n.outputs}
    consumed = [t for n in nodes for t in n.inputs if id(t) not in produced]
    activations = list({id(t): t for t in consumed if isinstance(t, gs.Variable)}.values())
    reduce = [n for n in nodes if n.op == "ReduceMean"]
    if len(reduce) != 1 or len(activations) != 2:
        raise LayoverError(f"unexpected branch shape: {len(reduce)} ReduceMean, {len(activations)} activation inputs")
    h = reduce[0].inputs[0]
    z = next(t for t in activations if t is not h)
    outside = {id(t) for n in graph.nodes if n.name not in names for t in n.inputs} | {id(t) for t in graph.outputs}
    outputs = [t for n in nodes for t in n.outputs if id(t) in outside]
    if len(outputs) != 1:
        raise LayoverError(f"the branch should have one output, found {len(outputs)}")
    w_rs, b_rs = head.branch()
    weights = [gs.Constant(f"{PLUGIN_NODE}.{k}", _array(v)) for k, v in
               (("w_rs", w_rs), ("b_rs", b_rs), ("w_sl", head.sl.weight.view(-1)), ("b_sl", head.sl.bias))]
    for n in nodes:
        n.outputs.clear()
    graph.nodes.append(gs.Node(op=PLUGIN_NAME, name=PLUGIN_NODE, domain=PLUGIN_DOMAIN,
                               attrs={"layout": LAYOUT_CODES[layout], "mix": MIX_CODES[head.mix_form],
                                      "plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE},
                               inputs=[h, z, *weights], outputs=outputs))
    graph.cleanup().toposort()
    out = gs.export_onnx(graph)
    if not any(o.domain == PLUGIN_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(PLUGIN_DOMAIN, 1))
    out.ir_version = proto.ir_version
    return out, PLUGIN_NODE
