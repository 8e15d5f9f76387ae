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


def test_cuda_python_too_new_for_the_driver_is_named():
    """JetPack 6's driver is CUDA 12.6 (cudaDriverGetVersion 12060); an unpinned cuda-python is 13.x, whose
    calls fail with error 35 (insufficient driver): a wrong install, not a missing GPU."""
    from layover_edge.core.cuda import binding_mismatch
    assert "pip install 'cuda-python>=12.6,<13'" in binding_mismatch(12060, "13.4.4")
    assert "CUDA 12.6" in binding_mismatch(12060, "13.4.4")
    assert binding_mismatch(12060, "12.9.10") is None and binding_mismatch(13000, "12.9.10") is None
    assert "no NVIDIA driver" in binding_mismatch(0, "12.9.10")


def test_device_extra_pins_cuda_python_for_jetpack_6():
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    device = {r.name: r for r in map(Requirement, project["optional-dependencies"]["device"])}
    assert not device["cuda-python"].specifier.contains("13.0.0") and device["cuda-python"].specifier.contains("12.9.10")
    core = {Requirement(r).name for r in project["dependencies"]} | set(device)
    assert not core & {"torch", "torchvision", "timm"}


def test_the_binding_row_matches_the_driver_here():
    from layover_edge.core.cuda import binding_mismatch, binding_version, cudart, driver_version
    rt = cudart()
    if rt is None:
        pytest.skip("cuda-python is not installed here")
    row = by_name(run_checks())["CUDA Python binding"]
    why = binding_mismatch(driver_version(rt), binding_version())
    assert row.ok == (why is None or driver_version(rt) == 0) and (why is None or why in row.detail)
