"""From a checkpoint to a deployable model whose accuracy is proven: ONNX export (portable and
plugin graphs), INT8 Q/DQ and FP16 through NVIDIA ModelOpt, TensorRT engines for Jetson Orin and
datacenter GPUs, and parity reports against PyTorch FP32. Imported as ``layover_edge.export``.

Modules import their heavy dependencies (onnx, ModelOpt, TensorRT) only where they are used, so
``targets``, ``trtexec`` and the build planning run anywhere.
"""
