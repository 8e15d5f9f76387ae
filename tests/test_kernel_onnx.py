"""What only the ONNX forms of fused_mix have: the standard-op graph uses portable ops only, pools
over the reference's axes and has no Sigmoid or (1 − α) on ĥ in the residual mix, the plugin node
carries the plugin's identity and its mix, and a model's weights export into the plugin node as
initializers, with a dynamic batch. The numbers of both forms are checked, with every
other implementation, in test_fused_mix_conformance.py."""
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime_extensions")

from kernel_cases import make_inputs  # noqa: E402
from kernel_impls import export_onnx, onnx_branches, onnx_model  # noqa: E402

from layover_edge.kernels.identity import (  # noqa: E402
    LAYOUT_CODES,
    MIX_CODES,
    PLUGIN_DOMAIN,
    PLUGIN_NAME,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)
from layover_edge.kernels.op import fused_mix  # noqa: E402
from layover_edge.kernels.ort_plugin import session_options  # noqa: E402
from layover_edge.kernels.reference import LAYOUTS, MIXES, POOL_AXES, fused_mix_reference, tolerance  # noqa: E402


def constant(proto, name: str) -> list:
    """The value of a Constant node's or an initializer's output ``name``."""
    for init in proto.graph.initializer:
        if init.name == name:
            return onnx.numpy_helper.to_array(init).tolist()
    (node,) = [n for n in proto.graph.node if n.op_type == "Constant" and n.output[0] == name]
    value = onnx.helper.get_attribute_value(node.attribute[0])
    return onnx.numpy_helper.to_array(value).tolist() if isinstance(value, onnx.TensorProto) else list(value)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_standard_ops_are_portable_and_pool_the_reference_axes(layout):
    proto, _ = onnx_model(layout, plugin=False)  # the conformance suite's export, one fused_mix per dtype pair
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"ReduceMean", "Gemm", "MatMul", "Sigmoid", "Mul", "Add", "Sub", "Cast", "CastLike",
                   "Reshape", "Constant", "Transpose"}
    assert {"ReduceMean", "Sigmoid"} <= ops
    reduces = [n for n in proto.graph.node if n.op_type == "ReduceMean"]
    assert reduces and all(constant(proto, n.input[1]) == list(POOL_AXES[layout]) for n in reduces)


def branch_ops(mix: str) -> list[str]:
    """The op types of one standard-op fused_mix of the given mix, exported alone."""
    args = make_inputs("NLC", 2, 3, 1, 4, 5, dtype=torch.float32)
    proto = export_onnx(Branch(*args[2:], "NLC", mix).eval(), args[:2], plugin=False)
    return [n.op_type for n in proto.graph.node]


def test_the_residual_graph_has_no_sigmoid_and_no_one_minus_alpha_on_h_hat():
    residual, paper = branch_ops("residual"), branch_ops("paper")
    assert residual.count("Sigmoid") == 1 and "Sub" not in residual  # the Sigmoid is the gate's
    assert paper.count("Sigmoid") == 2 and "Sub" in paper             # sigmoid(W·p + b), 1 − α


@pytest.mark.parametrize("layout", LAYOUTS)
def test_plugin_node_carries_the_plugin_identity_and_its_mix(layout):
    proto, _ = onnx_model(layout, plugin=True)
    nodes = list(proto.graph.node)
    assert [(n.domain, n.op_type) for n in nodes] == [(PLUGIN_DOMAIN, PLUGIN_NAME)] * len(onnx_branches(True))
    for node, (*_, mix) in zip(nodes, onnx_branches(True)):
        assert len(node.input) == 6  # h, z, w_rs, b_rs, w_sl, b_sl
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs == {"layout": LAYOUT_CODES[layout], "mix": MIX_CODES[mix], "plugin_version": PLUGIN_VERSION.encode(),
                         "plugin_namespace": PLUGIN_NAMESPACE.encode()}


class Branch(torch.nn.Module):
    """A tiny model around the op: weights are parameters, so they export as initializers."""

    def __init__(self, w_rs, b_rs, w_sl, b_sl, layout, mix=MIXES[0]):
        super().__init__()
        self.w_rs, self.b_rs, self.w_sl, self.b_sl = (torch.nn.Parameter(t) for t in (w_rs, b_rs, w_sl, b_sl))
        self.layout, self.mix = layout, mix

    def forward(self, h, z):
        return fused_mix(h, z, self.w_rs, self.b_rs, self.w_sl, self.b_sl, self.layout, self.mix)


@pytest.mark.parametrize("mix", MIXES)
def test_plugin_model_weights_export_as_initializers_with_a_dynamic_batch(mix):
    # (The portable form of whole models, initializers and dynamic batch included: test_export.py.)
    h, z, *weights = make_inputs("NHWC", 2, 6, 3, 4, 10, dtype=torch.float32)
    batch = torch.export.Dim("batch")
    proto = export_onnx(Branch(*weights, "NHWC", mix).eval(), (h, z), plugin=True,
                        dynamic_shapes=({0: batch}, {0: batch}))
    assert [i.name for i in proto.graph.input] == ["h", "z"]
    (node,) = proto.graph.node
    assert set(node.input[2:]) <= {i.name for i in proto.graph.initializer}  # the weights travel as initializers
    # Run at another batch size than the export's, through the dynamic axis.
    h3, z3, *_ = make_inputs("NHWC", 3, 6, 3, 4, 10, dtype=torch.float32, seed=1)
    session = ort.InferenceSession(proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"h": h3.numpy(), "z": z3.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), fused_mix_reference(h3, z3, *weights, "NHWC", mix),
                               **tolerance(torch.float32))

