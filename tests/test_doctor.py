"""`doctor` reports what this machine has, checked against the libraries themselves."""
import ctypes.util
import importlib
import importlib.util
import json

import pytest
import torch

from layover_edge.apps.doctor import run_checks
from layover_edge.cli import main


def by_name(checks):
    return {c.component: c for c in checks}


def test_checks_agree_with_the_libraries():
    checks = by_name(run_checks())
    assert checks["CUDA GPU"].ok == torch.cuda.is_available()
    trt_importable = importlib.util.find_spec("tensorrt") is not None
    if trt_importable:
        try:
            importlib.import_module("tensorrt")
        except Exception:
            trt_importable = False
    assert checks["TensorRT"].ok == trt_importable
    if importlib.util.find_spec("onnxruntime"):
        import onnxruntime
        assert checks["ONNX Runtime"].ok and onnxruntime.__version__ in checks["ONNX Runtime"].detail
        assert all(p in checks["ONNX Runtime"].detail for p in onnxruntime.get_available_providers())
    assert ("GStreamer in OpenCV" in checks) == (importlib.util.find_spec("cv2") is not None)
    assert not checks["TensorRT plugin"].ok and "not given" in checks["TensorRT plugin"].detail


def test_libraries_that_cannot_be_used_say_why(tmp_path):
    missing = by_name(run_checks(kernels_lib=str(tmp_path / "nope.so")))["CUDA kernel library"]
    assert not missing.ok and "cannot load" in missing.detail
    libm = ctypes.util.find_library("m")
    if libm is None:
        pytest.skip("no libm to load")
    foreign = by_name(run_checks(kernels_lib=libm))["CUDA kernel library"]
    assert not foreign.ok and "does not export layover_fused_mix" in foreign.detail


def test_doctor_verb_prints_json_and_a_table(capsys):
    assert main(["doctor", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [c["component"] for c in doc["checks"]] == [c.component for c in run_checks()]
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "components available" in out and "| CUDA GPU |" in out
