"""Runtime backends behind one interface: ``run(batch) -> logits, probabilities``.

Imported by name (``layover_edge.runtime.onnx_backend``), so the ONNX Runtime and TensorRT backends
load without torch; ``open_backend`` picks the backend a model file needs.
"""
