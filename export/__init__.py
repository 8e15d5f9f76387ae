"""From a checkpoint to deployable files: ONNX export (portable and plugin graphs), INT8 Q/DQ and
FP16 through NVIDIA ModelOpt, TensorRT engines and their sidecars for Jetson Orin and datacenter
GPUs, and the deployment target profiles.

This folder is installed as ``layover_edge.export`` (pyproject's package-dir); it imports the rest
of the package by absolute name, never the runtime (both use ``layover_edge.artifacts``). Modules
import their heavy dependencies (onnx, ModelOpt, TensorRT) only where they are used, so
``targets``, ``trtexec`` and ``precision`` run anywhere.
"""
if __name__ != "layover_edge.export":  # e.g. ``import export`` from the repository root
    raise ImportError(f"this folder is the package layover_edge.export; import it by that name, not {__name__!r}")
