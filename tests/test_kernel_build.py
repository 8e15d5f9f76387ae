"""The root CMakeLists.txt builds the CUDA kernel (and, given TensorRT headers, the plugin).

One build for sm_87 and sm_90 with ptxas's resource report on (-Xptxas=-v), so the library,
the plugin and the no-spill check share one compile; nothing here needs a GPU. The plugin part
needs the TensorRT 10+ headers: set TENSORRT_INCLUDE_DIR (e.g. the include/ folder of the
NVIDIA/TensorRT repository at tag v10.3.0) or TENSORRT_ROOT. CI has no such headers, so there
the plugin tests skip; they were run by hand against v10.3.0 and v11.1 (kernels/README.md). With the
headers, libnvinfer is a recording stand-in built from tests/plugin_registry_stub.cpp (TensorRT's
libraries cannot be installed here), so the self-registering library is built and loaded too.
"""
import ctypes
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from layover_edge.kernels import cuda_lib, identity

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not (shutil.which("cmake") and shutil.which("nvcc")),
                                reason="needs cmake and nvcc on PATH")


def registry_stub(include: str, out: Path) -> Path:
    """libnvinfer.so.<major> exporting only a recording getPluginRegistry() (tests/plugin_registry_stub.cpp)."""
    # "#define NV_TENSORRT_MAJOR 10" (10.x) or "... TRT_MAJOR_ENTERPRISE" with that defined as 11 (11.x)
    major = re.search(r"#define (?:NV_TENSORRT_MAJOR|TRT_MAJOR_ENTERPRISE) (\d+)\b",
                      (Path(include) / "NvInferVersion.h").read_text()).group(1)
    lib = out / f"libnvinfer.so.{major}"
    # through nvcc for the CUDA headers TensorRT's include
    subprocess.run(["nvcc", "-shared", "-Xcompiler", "-fPIC", "-std=c++17", f"-I{include}",
                    f"-Xlinker=-soname,libnvinfer.so.{major}", "-o", str(lib),
                    str(ROOT / "tests" / "plugin_registry_stub.cpp")], check=True)
    return lib


@pytest.fixture(scope="module")
def build_dir(tmp_path_factory):
    build = tmp_path_factory.mktemp("cmake-build")
    configure = ["cmake", "-S", str(ROOT), "-B", str(build), "-DCMAKE_CUDA_ARCHITECTURES=87;90",
                 "-DCMAKE_CUDA_FLAGS=-Xptxas=-v"]
    if os.environ.get("TENSORRT_INCLUDE_DIR"):
        stub = registry_stub(os.environ["TENSORRT_INCLUDE_DIR"], tmp_path_factory.mktemp("nvinfer-stub"))
        configure += [f"-DTENSORRT_INCLUDE_DIR={os.environ['TENSORRT_INCLUDE_DIR']}",
                      f"-DTENSORRT_NVINFER_LIBRARY={stub}"]
    subprocess.run(configure, check=True, capture_output=True, text=True)
    result = subprocess.run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 2)], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (build / "build.log").write_text(result.stdout + result.stderr)
    return build


def test_kernel_library_exports_the_c_launcher(build_dir):
    lib = cuda_lib.load(str(build_dir / "liblayover_kernels.so"))
    for name in ("layover_fused_mix", "layover_fused_mix_workspace_size",
                 "layover_fused_mix_max_workspace_size"):
        assert hasattr(lib, name)


def test_workspace_bound_covers_every_batch_and_format(build_dir):
    # The TensorRT plugin sizes its workspace once, at build time, from this bound.
    lib = cuda_lib.load(str(build_dir / "liblayover_kernels.so"))
    lib.layover_fused_mix_max_workspace_size.restype = ctypes.c_size_t
    lib.layover_fused_mix_max_workspace_size.argtypes = [ctypes.c_int64, ctypes.c_int64]
    for C, S in ((768, 112 * 112), (128, 96 * 96), (1024, 144), (3, 1)):
        bound = lib.layover_fused_mix_max_workspace_size(32, C)
        for B in (1, 2, 7, 8, 31, 32):
            for channels_last in (False, True):
                args = cuda_lib.FusedMixArgs(B=B, C=C, S1=1, S2=S, N=16, h_stride_c=1 if channels_last else S,
                                             h_stride_s2=C if channels_last else 1)
                need = lib.layover_fused_mix_workspace_size(ctypes.byref(args))
                assert 0 < need <= bound, (C, S, B, channels_last)


def test_invalid_arguments_need_no_workspace(build_dir):
    lib = cuda_lib.load(str(build_dir / "liblayover_kernels.so"))
    args = cuda_lib.FusedMixArgs(B=1, C=4, S1=1, S2=4, N=2, h_dtype=9)
    assert lib.layover_fused_mix_workspace_size(ctypes.byref(args)) == 0


def test_tensorrt_plugin_builds_and_passes_host_checks(build_dir):
    plugin = build_dir / identity.PLUGIN_LIBRARY
    if not plugin.exists():
        pytest.skip("TensorRT headers not found: set TENSORRT_INCLUDE_DIR to build the plugin")
    lib = ctypes.CDLL(str(plugin))
    assert hasattr(lib, "getCreators") and hasattr(lib, "setLoggerFinder")
    result = subprocess.run([str(build_dir / "layover_plugin_check")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The identity CMake compiled in from the schema, as the creator reports it: what identity.py read.
    assert (f"identity: name={identity.PLUGIN_NAME} version={identity.PLUGIN_VERSION} "
            f"namespace={identity.PLUGIN_NAMESPACE}") in result.stdout.splitlines()


LOAD = r"""
import ctypes, sys
stub = ctypes.CDLL(sys.argv[1])  # the registry stand-in, under the soname the plugin libraries need
ctypes.CDLL(sys.argv[2])         # what Triton's tensorrt backend does: dlopen(path, RTLD_NOW | RTLD_LOCAL)
buf = ctypes.create_string_buffer(512)
for i in range(stub.stub_registered(0, buf, 512)):
    stub.stub_registered(i, buf, 512)
    print(buf.value.decode())
"""


def registered_on_dlopen(build_dir, library: str) -> list[str]:
    stub = subprocess.run(["grep", "-m1", "TENSORRT_NVINFER_LIBRARY:FILEPATH=", str(build_dir / "CMakeCache.txt")],
                          capture_output=True, text=True).stdout.strip().partition("=")[2]
    run = subprocess.run([sys.executable, "-c", LOAD, stub, str(build_dir / library)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


def test_static_plugin_library_registers_its_creator_when_dlopened(build_dir):
    """Triton's tensorrt backend and LD_PRELOAD only dlopen a plugin library: the creator must reach the
    registry then, under the plugin's namespace (the one the engine records), not REGISTER_TENSORRT_PLUGIN's ""."""
    if not os.environ.get("TENSORRT_INCLUDE_DIR"):
        pytest.skip("TensorRT headers not found: set TENSORRT_INCLUDE_DIR to build the plugin")
    assert registered_on_dlopen(build_dir, identity.PLUGIN_LIBRARY_SELF_REGISTERING) == [
        f"PLUGIN CREATOR_V3ONE {identity.PLUGIN_NAME} {identity.PLUGIN_VERSION} {identity.PLUGIN_NAMESPACE} "
        f"namespace={identity.PLUGIN_NAMESPACE}"]
    # the loadLibrary library registers nothing by being opened: what Triton was given before
    assert registered_on_dlopen(build_dir, identity.PLUGIN_LIBRARY) == []
    # and the self-registering one offers no getCreators, so loadLibrary cannot register it a second time
    exported = subprocess.run(["nm", "-D", "--defined-only", str(build_dir / identity.PLUGIN_LIBRARY_SELF_REGISTERING)],
                              capture_output=True, text=True, check=True).stdout.split()
    assert "getCreators" not in exported and "getCreators" in subprocess.run(
        ["nm", "-D", "--defined-only", str(build_dir / identity.PLUGIN_LIBRARY)],
        capture_output=True, text=True, check=True).stdout.split()


def test_configures_with_nvcc_only_under_usr_local_cuda(tmp_path):
    """JetPack puts nvcc in /usr/local/cuda/bin, not on PATH; CMake alone looks in CUDACXX, PATH and
    $CUDA_PATH/bin only (Modules/CMakeDetermineCUDACompiler.cmake)."""
    if not Path("/usr/local/cuda/bin/nvcc").is_file():
        pytest.skip("no /usr/local/cuda/bin/nvcc here")
    env = {k: v for k, v in os.environ.items() if k not in ("CUDACXX", "CUDA_PATH", "CUDAToolkit_ROOT")}
    env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep) if not (Path(d) / "nvcc").exists())
    run = subprocess.run([shutil.which("cmake"), "-S", str(ROOT), "-B", str(tmp_path), "-DCMAKE_CUDA_ARCHITECTURES=87"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    found = [f.read_text() for f in tmp_path.glob("CMakeFiles/*/CMakeCUDACompiler.cmake")]
    assert len(found) == 1 and 'set(CMAKE_CUDA_COMPILER "/usr/local/cuda/bin/nvcc")' in found[0]


def test_cuda_kernels_keep_everything_in_registers(build_dir):
    # ptxas's resource report for Orin and Hopper, from the build: a spill or a stack frame in the
    # hot loops would turn the bandwidth-bound pooling into local-memory traffic.
    report = (build_dir / "build.log").read_text()
    entries = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", report)
    # pool_sum for float, half and bfloat16, and mix, on each architecture
    assert sorted({a for _, a in entries}) == ["sm_87", "sm_90"] and len(entries) == 8
    assert len(re.findall(r"0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads", report)) == 8, report
    for smem in re.findall(r"(\d+) bytes smem", report):
        assert int(smem) <= 48 * 1024


def test_doctor_finds_the_built_kernel_library(build_dir):
    from layover_edge.apps.doctor import run_checks
    check = next(c for c in run_checks(kernels_lib=str(build_dir / "liblayover_kernels.so"))
                 if c.component == "CUDA kernel library")
    assert check.ok, check.detail
