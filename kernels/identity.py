"""Who the TensorRT plugin is: its creator name, version and namespace, the ONNX domain of its node,
and the codes of its ``layout`` attribute. Torch-free, so the ONNX Runtime backend can use it."""

PLUGIN_NAME = "LayoverFusedMix"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "layover"
# The only custom domain whose Python ops ONNX Runtime (through onnxruntime-extensions) runs.
PLUGIN_DOMAIN = "ai.onnx.contrib"
# The plugin's integer ``layout`` attribute: the same codes as kernels/fused_mix.h.
LAYOUT_CODES = {"NCHW": 0, "NHWC": 1, "NLC": 2}
