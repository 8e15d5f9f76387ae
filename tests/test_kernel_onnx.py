"""ONNX export of fused_mix in both forms, run in ONNX Runtime (CPU) against the reference."""
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime_extensions")

from kernel_cases import make_inputs  # noqa: E402

from layover_edge.kernels.identity import LAYOUT_CODES, PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION  # noqa: E402
from layover_edge.kernels.onnx_export import translation_table  # noqa: E402
from layover_edge.kernels.op import fused_mix  # noqa: E402
from layover_edge.kernels.ort_plugin import session_options  # noqa: E402
from layover_edge.kernels.reference import fused_mix_reference, tolerance  # noqa: E402


class Branch(torch.nn.Module):
    """A tiny model around the op: weights are parameters, so they export as initializers."""

    def __init__(self, w_rs, w_sl, b_sl, layout):
        super().__init__()
        self.w_rs, self.w_sl, self.b_sl = (torch.nn.Parameter(t) for t in (w_rs, w_sl, b_sl))
        self.layout = layout

    def forward(self, h, z):
        return fused_mix(h, z, self.w_rs, self.w_sl, self.b_sl, self.layout)


def export_and_run(layout, plugin, dtype=torch.float32):
    h, z, w_rs, w_sl, b_sl = make_inputs(layout, 2, 6, 3, 4, 10, dtype=dtype)
    model = Branch(w_rs, w_sl, b_sl, layout).eval()
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(model, (h, z), dynamo=True, custom_translation_table=translation_table(plugin),
                                dynamic_shapes=({0: batch}, {0: batch}))
    proto = program.model_proto
    onnx.checker.check_model(proto)
    # Run at another batch size than the export's, through the dynamic axis.
    h3, z3, *_ = make_inputs(layout, 3, 6, 3, 4, 10, dtype=dtype, seed=1)
    sess = ort.InferenceSession(proto.SerializeToString(), session_options(), providers=["CPUExecutionProvider"])
    out = sess.run(None, {sess.get_inputs()[0].name: h3.numpy(), sess.get_inputs()[1].name: z3.numpy()})[0]
    ref = fused_mix_reference(h3, z3, w_rs, w_sl, b_sl, layout)
    torch.testing.assert_close(torch.from_numpy(out), ref, **tolerance(dtype))
    return proto


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NLC"])
def test_standard_ops_match_pytorch(layout):
    proto = export_and_run(layout, plugin=False)
    ops = {n.op_type for n in proto.graph.node}
    assert ops <= {"ReduceMean", "Gemm", "MatMul", "Sigmoid", "Mul", "Add", "Sub", "Cast", "CastLike",
                   "Reshape", "Constant", "Transpose"}
    assert {"ReduceMean", "Sigmoid"} <= ops


def test_standard_ops_in_half_precision():
    export_and_run("NHWC", plugin=False, dtype=torch.float16)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "NLC"])
def test_plugin_node(layout):
    proto = export_and_run(layout, plugin=True)
    (node,) = proto.graph.node
    assert (node.domain, node.op_type) == (PLUGIN_DOMAIN, PLUGIN_NAME)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"layout": LAYOUT_CODES[layout], "plugin_version": PLUGIN_VERSION.encode(),
                     "plugin_namespace": PLUGIN_NAMESPACE.encode()}
    initializers = {i.name for i in proto.graph.initializer}
    assert set(node.input[2:]) <= initializers  # the weights travel as initializers
