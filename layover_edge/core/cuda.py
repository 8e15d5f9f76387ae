"""Device memory, streams and CUDA graphs for the TensorRT backend, through cuda-python
(``cuda.bindings.runtime``, or ``cuda.cudart`` in older releases) or, where installed, pycuda.

One small interface, so the backend does not care which library is present: ``malloc``,
``htod``/``dtoh`` (async on the device's stream), ``sync``, ``free``, ``time_ms`` (CUDA events on
the stream) and, with cuda-python only, CUDA graph capture/replay.

cuda-python's major version is the CUDA major it needs from the driver (cuda-bindings "shares the
same major.minor version with the CUDA Toolkit"): pip resolves an unpinned cuda-python to 13.x, which
on JetPack 6 (CUDA 12.6 driver) fails every call with cudaErrorInsufficientDriver (35). That is a
wrong install, not a missing GPU, and ``binding_mismatch`` says so with the fix.
"""
from __future__ import annotations

import ctypes
import importlib.metadata
import re

import numpy as np

from .errors import LayoverError


def cudart():
    try:
        from cuda.bindings import runtime
        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart
        return cudart
    except ImportError:
        return None


INSUFFICIENT_DRIVER, NO_DEVICE = 35, 100
PIN = "pip install 'cuda-python>=12.6,<13'"


def binding_version() -> str | None:
    """The installed cuda-python bindings' version (cuda-bindings 12.x/13.x, or cuda-python < 12.6)."""
    import importlib.metadata
    for dist in ("cuda-bindings", "cuda-python"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def binding_mismatch(driver: int, bindings: str) -> str | None:
    """Why these bindings cannot run on this driver, or None. ``driver`` is cudaDriverGetVersion's
    number (12060 for CUDA 12.6; 0 when no driver is loaded)."""
    if driver == 0:
        return "no NVIDIA driver is loaded: cudaDriverGetVersion reports 0"
    need = int(bindings.split(".")[0])
    if driver // 1000 < need:
        return (f"cuda-python {bindings} needs a CUDA {need} driver; this driver is CUDA {driver // 1000}."
                f"{driver % 1000 // 10} (JetPack 6 is CUDA 12.6): {PIN}")
    return None


def driver_version(rt) -> int:
    err, version = rt.cudaDriverGetVersion()
    return int(version) if int(err) == 0 else 0


def driver_cuda() -> int:
    """The driver's CUDA version from libcuda itself (cuDriverGetVersion, which needs no cuInit: 12060
    for 12.6), whichever Python bindings are installed or broken; 0 without a driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    version = ctypes.c_int(0)
    return version.value if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 else 0


TENSORRT_WHEEL = re.compile(r"^tensorrt[-_]cu(\d+)(?:[-_](?:libs|bindings))?$")


def tensorrt_wheel_cuda() -> tuple[str, int] | None:
    """(distribution, CUDA major) of a pip-installed TensorRT (tensorrt-cu12, tensorrt_cu13_libs, ...);
    None for JetPack's or a tarball's TensorRT, built for the CUDA beside it. The plain ``tensorrt``
    metapackage only pulls one in: 11.4.0.106 requires tensorrt_cu13 (its pyproject.toml)."""
    for dist in importlib.metadata.distributions():
        m = TENSORRT_WHEEL.match(dist.metadata["Name"] or "")
        if m:
            return dist.metadata["Name"], int(m.group(1))
    return None


def cuda_mismatches(driver: int, tensorrt: tuple[str, int] | None, bindings: str | None) -> list[str]:
    """Why a pip-installed TensorRT or cuda-python cannot run on this driver (each needs a driver of at
    least its CUDA major; CUDA 13 needs driver 580 or newer); ``driver`` as cuDriverGetVersion gives it."""
    if driver == 0:
        return []
    major, found = driver // 1000, []
    cuda = f"CUDA {major}.{driver % 1000 // 10}"
    if tensorrt is not None and tensorrt[1] > major:
        found.append(f"{tensorrt[0]} is built for CUDA {tensorrt[1]}, this driver is {cuda}: pip uninstall "
                     f"{tensorrt[0]} and pip install 'layover-edge[tensorrt-cu{major}]' (or update the driver)")
    if bindings is not None and (why := binding_mismatch(driver, bindings)):
        found.append(why)
    return found


class CudaDevice:
    """A GPU, its compute capability and one stream."""

    def __init__(self, index: int = 0):
        self.rt = cudart()
        if self.rt is not None:
            self.lib = "cuda-python"
            self._call(self.rt.cudaSetDevice, index)
            props = self._call(self.rt.cudaGetDeviceProperties, index)
            self.name = props.name.decode().rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
            self.compute_capability = f"{props.major}.{props.minor}"
            self.stream = self._call(self.rt.cudaStreamCreate)
            return
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise LayoverError("no CUDA Python binding: pip install cuda-python (or pycuda)") from None
        self.lib, self.cuda = "pycuda", cuda
        cuda.init()
        dev = cuda.Device(index)
        self.context = dev.retain_primary_context()
        self.context.push()
        self.name = dev.name()
        self.compute_capability = "{}.{}".format(*dev.compute_capability())
        self.stream = cuda.Stream()
        self._allocs: dict[int, object] = {}

    def _call(self, fn, *args):
        err, *rest = fn(*args)
        if int(err) != 0:
            _, text = self.rt.cudaGetErrorString(err)
            why = binding_mismatch(driver_version(self.rt), binding_version() or "0") \
                if int(err) == INSUFFICIENT_DRIVER else ("no CUDA GPU is visible" if int(err) == NO_DEVICE else None)
            raise LayoverError(f"CUDA {fn.__name__} failed: {text.decode() if isinstance(text, bytes) else text}"
                               + (f" ({why})" if why else ""))
        return rest[0] if len(rest) == 1 else (rest or None)

    @property
    def stream_handle(self) -> int:
        return int(self.stream) if self.rt is not None else self.stream.handle

    def malloc(self, nbytes: int) -> int:
        if self.rt is not None:
            return int(self._call(self.rt.cudaMalloc, nbytes))
        buf = self.cuda.mem_alloc(nbytes)
        self._allocs[int(buf)] = buf
        return int(buf)

    def free(self, ptr: int) -> None:
        if self.rt is not None:
            self._call(self.rt.cudaFree, ptr)
        else:
            self._allocs.pop(ptr).free()

    def htod(self, ptr: int, host: np.ndarray) -> None:
        if self.rt is not None:
            kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._call(self.rt.cudaMemcpyAsync, ptr, host.ctypes.data, host.nbytes, kind, self.stream)
        else:
            self.cuda.memcpy_htod_async(ptr, host, self.stream)

    def dtoh(self, host: np.ndarray, ptr: int) -> None:
        if self.rt is not None:
            kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._call(self.rt.cudaMemcpyAsync, host.ctypes.data, ptr, host.nbytes, kind, self.stream)
        else:
            self.cuda.memcpy_dtoh_async(host, ptr, self.stream)

    def sync(self) -> None:
        if self.rt is not None:
            self._call(self.rt.cudaStreamSynchronize, self.stream)
        else:
            self.stream.synchronize()

    def capture(self, launch) -> object:
        """An executable CUDA graph of what ``launch()`` enqueues on the stream (cuda-python only)."""
        if self.rt is None:
            raise LayoverError("CUDA graphs need cuda-python (pip install cuda-python)")
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._call(self.rt.cudaStreamBeginCapture, self.stream, mode)
        launch()
        graph = self._call(self.rt.cudaStreamEndCapture, self.stream)
        executable = self._call(self.rt.cudaGraphInstantiate, graph, 0)
        self._call(self.rt.cudaGraphDestroy, graph)
        return executable

    def replay(self, executable) -> None:
        self._call(self.rt.cudaGraphLaunch, executable, self.stream)

    def time_ms(self, launch) -> float:
        """Device time of what ``launch()`` enqueues on the stream, in ms, from two CUDA events
        recorded around it; waits for the second, so the number is one request's latency."""
        if self.rt is None:
            start, end = self.cuda.Event(), self.cuda.Event()
            start.record(self.stream)
            launch()
            end.record(self.stream)
            end.synchronize()
            return float(start.time_till(end))
        if getattr(self, "_events", None) is None:
            self._events = (self._call(self.rt.cudaEventCreate), self._call(self.rt.cudaEventCreate))
        start, end = self._events
        self._call(self.rt.cudaEventRecord, start, self.stream)
        launch()
        self._call(self.rt.cudaEventRecord, end, self.stream)
        self._call(self.rt.cudaEventSynchronize, end)
        return float(self._call(self.rt.cudaEventElapsedTime, start, end))
