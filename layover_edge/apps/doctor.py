"""What this machine can run: the GPU, the fused kernels, TensorRT, ONNX Runtime, INT8 export and
video input, each with its version or the reason it is missing, and what it unlocks.

Meant as the first command after installing on a Jetson: every later verb needs one of these,
and an import error three steps into a build is a worse place to learn it. It imports no torch unless
torch is installed: the device install (``pip install ".[device]"``) has none, and finds the GPU
through cuda-python instead.
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import re
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    component: str
    ok: bool
    detail: str   # the version or device when ok, else why not
    enables: str  # what works when ok


def _version(*dists: str) -> str:
    """The first of these distributions that is installed, with its version."""
    for dist in dists:
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return "installed"


def _module(component: str, module: str, dist: str, enables: str, install: str) -> tuple[Check, object | None]:
    """Import ``module``: any failure (missing, or present but unloadable) is the reason."""
    if importlib.util.find_spec(module) is None:
        return Check(component, False, f"not installed ({install})", enables), None
    try:
        mod = importlib.import_module(module)
    except Exception as e:  # a wheel without its native libraries raises ImportError or OSError
        return Check(component, False, f"installed but not importable: {type(e).__name__}: {e}", enables), None
    return Check(component, True, getattr(mod, "__version__", None) or _version(dist), enables), mod


def jetson_model() -> str | None:
    """The Jetson module and L4T release, or None off a Jetson."""
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return None
    model = Path("/proc/device-tree/model")
    name = model.read_text(errors="replace").strip("\x00\n ") if model.exists() else "Jetson"
    return f"{name}, {release.read_text(errors='replace').splitlines()[0].lstrip('# ').strip()}"


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _gpu() -> Check:
    from layover_edge.export.targets import TARGETS
    enables = "engine builds, TensorRT and GPU inference (PyTorch fp16/bf16, CUDA graphs where torch is installed)"
    torch = _torch()
    if torch is not None and torch.cuda.is_available():
        cc, name, cuda = "{}.{}".format(*torch.cuda.get_device_capability()), torch.cuda.get_device_name(), \
            f"CUDA {torch.version.cuda}"
    else:
        found = _cuda_python_gpu()
        if isinstance(found, str):
            return Check("CUDA GPU", False, found, enables)
        cc, name, cuda = found
    matching = [t.name for t in TARGETS.values() if t.compute_capability == cc]
    detail = f"{name}, sm_{cc.replace('.', '')}, {cuda}"
    if matching:
        detail += f"; --target {' / '.join(matching)}"
    jetson = jetson_model()
    return Check("CUDA GPU", True, f"{detail}; {jetson}" if jetson else detail, enables)


def _cuda_python_gpu() -> tuple[str, str, str] | str:
    """(compute capability, name, driver CUDA) of GPU 0 through cuda-python, or why there is none."""
    from layover_edge.core.cuda import CudaDevice, cudart, driver_version
    from layover_edge.core.errors import LayoverError
    torch = _torch()
    rt = cudart()
    if rt is None:
        return (f"none visible to torch {torch.__version__}" if torch is not None else "no torch, no cuda-python") \
            + " (pip install 'cuda-python>=12.6,<13' to look)"
    try:
        device = CudaDevice(0)
    except LayoverError as e:
        return str(e)
    driver = driver_version(rt)
    return device.compute_capability, device.name, f"driver CUDA {driver // 1000}.{driver % 1000 // 10}"


def _cuda_binding() -> Check:
    from layover_edge.core.cuda import binding_mismatch, binding_version, cudart, driver_version
    enables = "the TensorRT runtime's device memory, streams and CUDA graphs"
    rt = cudart()
    if rt is not None:
        version = binding_version() or "0"
        why = binding_mismatch(driver_version(rt), version)
        if why and driver_version(rt):  # a driver too old for these bindings: the JetPack 6 trap
            return Check("CUDA Python binding", False, why, enables)
        return Check("CUDA Python binding", True, f"cuda-python {version}" + (f" ({why})" if why else ""), enables)
    if importlib.util.find_spec("pycuda") is not None:
        return Check("CUDA Python binding", True, f"{_version('pycuda')} (no CUDA graphs)", enables)
    return Check("CUDA Python binding", False, "neither cuda-python nor pycuda (pip install 'cuda-python>=12.6,<13' "
                                               "on JetPack 6)", enables)


def _cuda_majors() -> Check:
    """pip's TensorRT and cuda-python each need a driver of at least their CUDA major: tensorrt (11.4)
    resolves to tensorrt_cu13 and an unpinned cuda-python to 13.x, neither of which a CUDA 12 driver runs."""
    from layover_edge.core.cuda import binding_version, cuda_mismatches, driver_cuda, tensorrt_wheel_cuda
    enables = "TensorRT and cuda-python wheels that this driver can run"
    driver, wheel, bindings = driver_cuda(), tensorrt_wheel_cuda(), binding_version()
    if driver == 0:
        return Check("CUDA driver vs wheels", False, "no NVIDIA driver (libcuda.so.1) to compare with", enables)
    problems = cuda_mismatches(driver, wheel, bindings)
    if problems:
        return Check("CUDA driver vs wheels", False, "; ".join(problems), enables)
    found = [f"{wheel[0]} (CUDA {wheel[1]})" if wheel else "TensorRT from the system or none from pip",
             f"cuda-python {bindings}" if bindings else "no cuda-python"]
    return Check("CUDA driver vs wheels", True, f"driver CUDA {driver // 1000}.{driver % 1000 // 10}: "
                 + ", ".join(found), enables)


def system_numpy(dist_packages: Path = Path("/usr/lib/python3/dist-packages")) -> str | None:
    """The version of the Ubuntu numpy JetPack's Python packages were built against (python3-numpy's
    numpy-X.egg-info or .dist-info), or None."""
    for info in sorted(dist_packages.glob("numpy-*.*-info")):
        m = re.match(r"numpy-(\d+(?:\.\d+)*)", info.name)
        if m:
            return m.group(1)
    return None


def numpy_check(numpy_version: str, jetson: str | None, system: str | None) -> Check:
    """numpy 2 beside JetPack's own Python packages (python3-opencv, onnxruntime-gpu, jetson-utils),
    built against the system's numpy 1.x: they fail to import beside 2.x. Compared with ``system``
    (``system_numpy``); without it, JetPack 5/6 (L4T R35/R36, Ubuntu 20.04/22.04: numpy 1.x) is assumed."""
    enables = "JetPack's OpenCV, onnxruntime-gpu and jetson-utils beside this environment's numpy"
    release = re.search(r"\bR(\d+)\b", jetson or "")
    built_for = system or ("1.x" if release and int(release.group(1)) <= 36 else None)
    if jetson is not None and built_for is not None and int(numpy_version.split(".")[0]) >= 2 \
            and int(built_for.split(".")[0]) < 2:
        return Check("numpy", False, f"numpy {numpy_version} here, but JetPack's packages are built for numpy "
                     f"{built_for} (OpenCV, onnxruntime-gpu, jetson-utils fail to import): pip install 'numpy<2'",
                     enables)
    return Check("numpy", True, f"numpy {numpy_version}" + (f" (system numpy {system})" if jetson and system else ""),
                 enables)


def _library(component: str, path: str | None, symbol: str, enables: str, hint: str, wrong: str = "") -> Check:
    """``wrong``: what to add when ``path`` loads but lacks ``symbol``."""
    if not path:
        return Check(component, False, f"not given ({hint})", enables)
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        return Check(component, False, f"cannot load {path}: {e}", enables)
    if not hasattr(lib, symbol):
        return Check(component, False, f"{path} does not export {symbol}{wrong}", enables)
    return Check(component, True, path, enables)


def run_checks(kernels_lib: str | None = None, plugins_lib: str | None = None) -> list[Check]:
    torch = _torch()
    checks = [Check("Python", True, f"Python {platform.python_version()}, {platform.machine()}",
                    "doctor, build, tag and parity with ONNX Runtime and TensorRT (the device install)"),
              Check("PyTorch", torch is not None, torch.__version__ if torch is not None else
                    "not installed (the device install needs none; training and export do: .[train])",
                    "training, eval, export, the PyTorch backend"),
              _gpu()]
    triton, _ = _module("Triton", "triton", "triton", "the fused branch as Triton kernels (else PyTorch ops)",
                        "pip install 'layover-edge[triton]'")
    if triton.ok and not (torch is not None and torch.cuda.is_available()):
        triton = Check(triton.component, True, f"{triton.detail} (runs on a CUDA GPU; here the PyTorch reference)",
                       triton.enables)
    checks.append(triton)
    checks.append(_library("CUDA kernel library", kernels_lib or os.environ.get("LAYOVER_KERNELS_LIB"),
                           "layover_fused_mix", "the CUDA C++ fused branch (kernels/cuda_lib.py, benchmarks)",
                           "cmake -S . -B build && cmake --build build; --kernels-lib or LAYOVER_KERNELS_LIB"))
    trt, trt_mod = _module("TensorRT", "tensorrt", "tensorrt", "build, parity and tag with .engine files",
                           "JetPack's python3-libnvinfer on a Jetson; elsewhere pip install "
                           "'layover-edge[tensorrt-cu12]' for a CUDA 12 driver, [tensorrt-cu13] for CUDA 13 "
                           "(driver 580 or newer)")
    checks.append(trt)
    checks.append(_cuda_binding())
    checks.append(_cuda_majors())
    plugin = _library("TensorRT plugin", plugins_lib, "getCreators",
                      "engines from model.plugin.onnx (one LayoverFusedMix node)",
                      "cmake -S . -B build -DTENSORRT_ROOT=...; --plugins build/liblayover_plugins.so",
                      " (--plugins takes liblayover_plugins.so, which TensorRT's loadLibrary reads; "
                      "liblayover_plugins_static.so exports nothing: it registers itself when loaded, for "
                      "LD_PRELOAD, Triton and trtexec --staticPlugins)")
    if plugin.ok and trt_mod is None:
        plugin = Check(plugin.component, False, f"{plugin.detail} loads, but TensorRT is missing", plugin.enables)
    checks.append(plugin)
    ort, ort_mod = _module("ONNX Runtime", "onnxruntime", "onnxruntime", "run and check .onnx files",
                           "pip install 'layover-edge[export]'")
    if ort_mod is not None:
        ort = Check(ort.component, True, f"{ort.detail}; {', '.join(ort_mod.get_available_providers())}", ort.enables)
    checks.append(ort)
    import numpy
    checks.append(numpy_check(numpy.__version__, jetson_model(), system_numpy()))
    checks.append(_module("ONNX export", "onnx", "onnx", "export to ONNX", "pip install 'layover-edge[export]'")[0])
    checks.append(_module("ModelOpt", "modelopt", "nvidia-modelopt", "export --int8 (explicit Q/DQ calibration)",
                          "pip install 'layover-edge[int8]'")[0])
    cv, cv_mod = _module("OpenCV", "cv2", "opencv-python-headless", "video files, /dev/videoN cameras",
                         "pip install 'layover-edge[video]', or JetPack's python3-opencv")
    checks.append(cv)
    if cv_mod is not None:
        from .sources import has_gstreamer
        gst = has_gstreamer()
        checks.append(Check("GStreamer in OpenCV", gst, "yes" if gst else "no: pip's OpenCV wheels are built without it",
                            "csi:// cameras, hardware-decoded rtsp://"))
    return checks


def as_dict(checks: list[Check]) -> dict:
    return {"checks": [asdict(c) for c in checks], "jetson": jetson_model()}


def checks_text(checks: list[Check]) -> str:
    from layover_edge.core.tables import format_table
    table = format_table({c.component: {"ok": "✅" if c.ok else "❌", "detail": c.detail, "enables": c.enables}
                          for c in checks}, columns=("ok", "detail", "enables"), first="component")
    return f"{sum(c.ok for c in checks)} of {len(checks)} components available\n\n{table}"
