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
    plugin = by_name(run_checks(plugins_lib=libm))["TensorRT plugin"]
    assert not plugin.ok and "does not export getCreators (--plugins takes liblayover_plugins.so" in plugin.detail


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


def extras():
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    return project, {k: [Requirement(r) for r in v] for k, v in project["optional-dependencies"].items()}


def applying(requirements, **env):
    """name -> requirement of those whose marker holds in ``env`` (a platform's marker values)."""
    from packaging.markers import default_environment
    full = default_environment() | env
    return {r.name: r for r in requirements if r.marker is None or r.marker.evaluate(full)}


JETPACK6 = {"platform_machine": "aarch64", "python_version": "3.10", "python_full_version": "3.10.12"}
X86 = {"platform_machine": "x86_64", "python_version": "3.11", "python_full_version": "3.11.7"}


def test_device_extra_pins_cuda_python_and_numpy_for_jetpack_6():
    from packaging.requirements import Requirement
    project, extra = extras()
    device = applying(extra["device"], **JETPACK6)
    assert not device["cuda-python"].specifier.contains("13.0.0") and device["cuda-python"].specifier.contains("12.9.10")
    assert not device["numpy"].specifier.contains("2.0.0") and device["numpy"].specifier.contains("1.26.4")
    core = {Requirement(r).name for r in project["dependencies"]} | set(device)
    assert not core & {"torch", "torchvision", "timm"}


def test_device_extra_leaves_the_users_torch_alone_on_x86():
    """torch 2.14.1 requires cuda-bindings>=13.0.3,<14 (its metadata); a device extra capping cuda-python
    below 13 there made `pip install -e .[train,device]` replace torch with an older build. cuda-python
    X.Y.Z requires cuda-bindings of its own version, so the cap must admit torch's range on x86."""
    import importlib.metadata

    from packaging.requirements import Requirement
    _, extra = extras()
    device = applying(extra["device"], **X86)
    assert "numpy" not in device
    try:
        wanted = [Requirement(r) for r in importlib.metadata.requires("torch") or []]
        bindings = next(r for r in wanted if r.name == "cuda-bindings" and (r.marker is None or r.marker.evaluate()))
    except (importlib.metadata.PackageNotFoundError, StopIteration):
        bindings = Requirement("cuda-bindings>=13.0.3,<14")  # torch 2.14.1's, as its metadata says
    versions = ("12.9.10", "13.0.3", "13.4.4")
    assert any(bindings.specifier.contains(v) and device["cuda-python"].specifier.contains(v) for v in versions)


def test_tensorrt_extras_pair_tensorrt_and_cuda_python_of_one_cuda_major():
    _, extra = extras()
    for major in (12, 13):
        reqs = applying(extra[f"tensorrt-cu{major}"], **X86)
        assert f"tensorrt-cu{major}" in reqs
        assert reqs["cuda-python"].specifier.contains(f"{major}.9.0") and not reqs["cuda-python"].specifier.contains(
            f"{major + 1}.0.0") and not reqs["cuda-python"].specifier.contains(f"{major - 1}.9.0")
    assert "tensorrt" not in extra  # pip install tensorrt is 11.4 -> tensorrt_cu13: no extra names it


def test_wheels_built_for_a_newer_cuda_than_the_driver_are_named():
    from layover_edge.core.cuda import TENSORRT_WHEEL, cuda_mismatches
    assert [TENSORRT_WHEEL.match(n).group(1) for n in ("tensorrt-cu12", "tensorrt_cu13", "tensorrt_cu13_libs",
                                                      "tensorrt-cu12-bindings")] == ["12", "13", "13", "12"]
    assert TENSORRT_WHEEL.match("tensorrt") is None and TENSORRT_WHEEL.match("tensorrt-cu12-plugins") is None
    [trt] = cuda_mismatches(12060, ("tensorrt_cu13", 13), "12.9.10")
    assert "tensorrt_cu13 is built for CUDA 13" in trt and "layover-edge[tensorrt-cu12]" in trt
    assert len(cuda_mismatches(12060, ("tensorrt_cu13", 13), "13.4.4")) == 2
    assert cuda_mismatches(12060, ("tensorrt-cu12", 12), "12.9.10") == []
    assert cuda_mismatches(13000, ("tensorrt-cu12", 12), "13.4.4") == []  # an older CUDA major runs on a newer driver
    assert cuda_mismatches(0, ("tensorrt_cu13", 13), "13.4.4") == []      # no driver: the GPU row says so
    from layover_edge.core.cuda import binding_version, driver_cuda, tensorrt_wheel_cuda
    row = by_name(run_checks())["CUDA driver vs wheels"]
    if driver_cuda() == 0:
        assert not row.ok and "no NVIDIA driver" in row.detail
    else:
        assert row.ok == (cuda_mismatches(driver_cuda(), tensorrt_wheel_cuda(), binding_version()) == [])


def test_numpy_2_beside_jetpack_packages_is_named(tmp_path):
    from layover_edge.apps.doctor import numpy_check, system_numpy
    jp6 = "NVIDIA Jetson AGX Orin Developer Kit, R36 (release), REVISION: 4.0, GCID: 37537400"
    thor = "NVIDIA Jetson AGX Thor Developer Kit, R38 (release), REVISION: 2.0"
    bad = numpy_check("2.1.3", jp6, None)
    assert not bad.ok and "pip install 'numpy<2'" in bad.detail and "numpy 1.x" in bad.detail
    assert numpy_check("1.26.4", jp6, None).ok and numpy_check("2.1.3", None, "1.21.5").ok
    assert numpy_check("2.1.3", thor, None).ok                       # unknown: nothing to compare with
    assert not numpy_check("2.1.3", thor, "1.26.4").ok               # Ubuntu 24.04's python3-numpy is 1.26
    assert numpy_check("2.1.3", thor, "2.1.0").ok
    (tmp_path / "numpy-1.21.5.egg-info").mkdir()                     # Ubuntu 22.04's python3-numpy
    assert system_numpy(tmp_path) == "1.21.5" and system_numpy(tmp_path / "none") is None
    import numpy
    assert by_name(run_checks())["numpy"].detail.startswith(f"numpy {numpy.__version__}")


def test_the_binding_row_matches_the_driver_here():
    from layover_edge.core.cuda import binding_mismatch, binding_version, cudart, driver_version
    rt = cudart()
    if rt is None:
        pytest.skip("cuda-python is not installed here")
    row = by_name(run_checks())["CUDA Python binding"]
    why = binding_mismatch(driver_version(rt), binding_version())
    assert row.ok == (why is None or driver_version(rt) == 0) and (why is None or why in row.detail)
