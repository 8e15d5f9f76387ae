"""A tiny hand-built ONNX model with layover-edge metadata, shared by the export/runtime tests."""
import numpy as np
import onnx

from layover_edge.artifacts.onnx_metadata import FORMAT, set_metadata
from layover_edge.kernels.identity import PLUGIN_DOMAIN, PLUGIN_NAME, PLUGIN_NAMESPACE, PLUGIN_VERSION


def metadata(**changes) -> dict:
    """The layover-edge metadata of these hand-built 8 px, two-label graphs."""
    return {"format": FORMAT, "labels": ["a", "b"], "thresholds": None, "image_size": 8, "mean": [0.5] * 3,
            "std": [0.5] * 3, "interpolation": "bilinear", "method": "lp", "backbone": "tiny", "tap": 1,
            "rs": "linear", "opset": 18, "form": "portable", "precision": "fp32", "input": "image",
            "outputs": ["logits", "probabilities"],
            "high_precision_nodes": ["node_linear_0", "node_linear_0_bias", "node_sigmoid"]} | changes


def tiny_onnx(path, precision="fp32", plugin=False, batch="batch"):
    """image (B,3,8,8) -> GlobalAveragePool -> Flatten -> MatMul + Add -> logits, Sigmoid -> probabilities
    (the head as export writes it: a Gemm split into MatMul + Add, export/head.py)."""
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("GlobalAveragePool", ["image"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["wx"], name="node_linear_0"),
             helper.make_node("Add", ["wx", "b"], ["logits"], name="node_linear_0_bias"),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="node_sigmoid")]
    opsets = [helper.make_opsetid("", 18)]
    extra = []
    if precision != "fp32":  # the graph is what its metadata says (readers check): Q/DQ, or an FP16 round trip
        nodes[2].input[0] = "f2"
        if precision == "int8":
            nodes[2:2] = [helper.make_node("QuantizeLinear", ["f", "scale", "zero"], ["fq"], name="quant"),
                          helper.make_node("DequantizeLinear", ["fq", "scale", "zero"], ["f2"], name="dequant")]
            extra = [numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                     numpy_helper.from_array(np.array(0, np.int8), "zero")]
        else:
            nodes[2:2] = [helper.make_node("Cast", ["f"], ["fh"], name="to_half", to=TensorProto.FLOAT16),
                          helper.make_node("Cast", ["fh"], ["f2"], name="to_float", to=TensorProto.FLOAT)]
    if plugin:
        nodes[1] = helper.make_node(PLUGIN_NAME, ["p"], ["f"], name="layover_fused_mix", domain=PLUGIN_DOMAIN,
                                    plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE)
        opsets.append(helper.make_opsetid(PLUGIN_DOMAIN, 1))
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [batch, 2]) for n in ("logits", "probabilities")],
        [numpy_helper.from_array(np.ones((3, 2), np.float32), "w"), numpy_helper.from_array(np.zeros((1, 2), np.float32), "b"),
         *extra])
    model = helper.make_model(graph, opset_imports=opsets)
    set_metadata(model, metadata(form="plugin" if plugin else "portable", precision=precision))
    onnx.save(model, str(path))
    return path


def fake_engine(tmp_path, **changes):
    """An engine file with a sidecar as build_engine writes it (the engine bytes are not real)."""
    import json

    from layover_edge.artifacts.sidecar import sidecar_path
    from layover_edge.export.build import make_sidecar, prepare_build
    from layover_edge.export.targets import get_target
    path = tiny_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real engine")
    req = prepare_build(path, engine, "fp32", get_target("orin-agx"), "10.3.0")
    sidecar = make_sidecar(req, "10.3.0", "Orin", "8.7", 1.0) | changes
    sidecar_path(engine).write_text(json.dumps(sidecar))
    return engine, sidecar


def fp16_qdq_conv_onnx(path):
    """image (B,3,8,8) -> FP16 -> Q/DQ -> 1x1 Conv (per-channel Q/DQ weights, float bias) -> Clip 0..6
    -> Q/DQ -> GlobalAveragePool -> Flatten -> FP32 head: an INT8 graph FP16 outside its Q/DQ pairs, as
    export --int8 writes it, with scales whose product is subnormal in FP16 (input 0.05 × weight 1e-4)
    and a bias that is large against that product. Returns the path and the NumPy reference of it."""
    from onnx import TensorProto, helper, numpy_helper
    h = np.float16
    w_scale = np.array([1e-4, 2e-4, 3e-4, 5e-4], h)
    w_int = np.arange(-48, 48, 8, dtype=np.int8).reshape(4, 3, 1, 1)
    bias, a_scale, y_scale, head = np.array([2.0, -1.0, 3.5, 0.5], h), h(0.05), h(6 / 127), np.ones((4, 2), np.float32)
    nodes = [helper.make_node("Cast", ["image"], ["xh"], to=TensorProto.FLOAT16, name="to_half"),
             helper.make_node("QuantizeLinear", ["xh", "a_scale", "zero"], ["xq"], name="x_q"),
             helper.make_node("DequantizeLinear", ["xq", "a_scale", "zero"], ["xd"], name="x_dq"),
             helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=0, name="w_dq"),
             helper.make_node("Conv", ["xd", "wd", "bias"], ["c"], name="conv"),
             helper.make_node("Clip", ["c", "lo", "hi"], ["r"], name="relu6"),
             helper.make_node("QuantizeLinear", ["r", "y_scale", "zero"], ["rq"], name="r_q"),
             helper.make_node("DequantizeLinear", ["rq", "y_scale", "zero"], ["rd"], name="r_dq"),
             helper.make_node("GlobalAveragePool", ["rd"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["fh"], name="flat"),
             helper.make_node("Cast", ["fh"], ["f"], to=TensorProto.FLOAT, name="to_float"),
             helper.make_node("MatMul", ["f", "head"], ["logits"], name="node_linear_0"),
             helper.make_node("Sigmoid", ["logits"], ["probabilities"], name="node_sigmoid")]
    inits = [numpy_helper.from_array(v, n) for n, v in (
        ("a_scale", a_scale), ("y_scale", y_scale), ("zero", np.array(0, np.int8)), ("w", w_int),
        ("w_scale", w_scale), ("w_zero", np.zeros(4, np.int8)), ("bias", bias), ("lo", h(0)), ("hi", h(6)),
        ("head", head))]
    graph = helper.make_graph(
        nodes, "fp16_qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 2]) for n in ("logits", "probabilities")],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 9
    set_metadata(model, metadata(opset=19, precision="int8", high_precision_nodes=["node_linear_0", "node_sigmoid"]))
    onnx.save(model, str(path))

    def reference(x):
        f = np.float64
        xd = np.clip(np.rint(x.astype(h).astype(f) / f(a_scale)), -128, 127) * f(a_scale)
        wd = w_int[:, :, 0, 0].astype(f) * w_scale.astype(f)[:, None]
        c = np.einsum("oc,bchw->bohw", wd, xd) + bias.astype(f)[None, :, None, None]
        rd = np.clip(np.rint(np.clip(c, 0, 6) / f(y_scale)), -128, 127) * f(y_scale)
        return rd.mean((2, 3)) @ head.astype(f)
    return path, reference
