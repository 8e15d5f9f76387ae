"""What only the ONNX forms of fused_mix have: the standard-op graph uses portable ops only and pools
over the reference's axes, the plugin node carries the plugin's identity, and a model's weights
export into the plugin node as initializers, with a dynamic batch. The numbers of both forms are checked, with every
other implementation, in test_fused_mix_conformance.py."""
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime_extensions")

from kernel_cases import make_inputs  # noqa: E402
from kernel_impls import export_onnx, onnx_model  # noqa: E402

from layover_edge.kernels.identity import LAYOUT_CODES, PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION  # noqa: E402
from layover_edge.kernels.op import fused_mix  # noqa: E402
from layover_edge.kernels.ort_plugin import session_options  # noqa: E402
from layover_edge.kernels.reference import LAYOUTS, POOL_AXES, fused_mix_reference, tolerance  # noqa: E402


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

@pytest.mark.parametrize("layout", LAYOUTS)
def test_plugin_node_carries_the_plugin_identity(layout):
    proto, _ = onnx_model(layout, plugin=True)
    (node,) = proto.graph.node
    assert (node.domain, node.op_type) == (PLUGIN_DOMAIN, PLUGIN_NAME)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"layout": LAYOUT_CODES[layout], "plugin_version": PLUGIN_VERSION.encode(),
                     "plugin_namespace": PLUGIN_NAMESPACE.encode()}


class Branch(torch.nn.Module):
    """A tiny model around the op: weights are parameters, so they export as initializers."""

    def __init__(self, w_rs, w_sl, b_sl, layout):
        super().__init__()
        self.w_rs, self.w_sl, self.b_sl = (torch.nn.Parameter(t) for t in (w_rs, w_sl, b_sl))
        self.layout = layout

    def forward(self, h, z):
        return fused_mix(h, z, self.w_rs, self.w_sl, self.b_sl, self.layout)


def test_plugin_model_weights_export_as_initializers_with_a_dynamic_batch():
    # (The portable form of whole models, initializers and dynamic batch included: test_export.py.)
    h, z, w_rs, w_sl, b_sl = make_inputs("NHWC", 2, 6, 3, 4, 10, dtype=torch.float32)
    batch = torch.export.Dim("batch")
    proto = export_onnx(Branch(w_rs, w_sl, b_sl, "NHWC").eval(), (h, z), plugin=True,
                        dynamic_shapes=({0: batch}, {0: batch}))
    assert [i.name for i in proto.graph.input] == ["h", "z"]
    (node,) = proto.graph.node
    assert set(node.input[2:]) <= {i.name for i in proto.graph.initializer}  # the weights travel as initializers
    # Run at another batch size than the export's, through the dynamic axis.
    h3, z3, *_ = make_inputs("NHWC", 3, 6, 3, 4, 10, dtype=torch.float32, seed=1)
    session = ort.InferenceSession(proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    out = session.run(None, {"h": h3.numpy(), "z": z3.numpy()})[0]
    torch.testing.assert_close(torch.from_numpy(out), fused_mix_reference(h3, z3, w_rs, w_sl, b_sl, "NHWC"),
                               **tolerance(torch.float32))

