"""What the engine builder and the TensorRT runtime share: loading plugin libraries into TensorRT's
process-wide plugin registry, once per library, with failures reported; and which TensorRT build the
process runs (``library_identity``), recorded in and checked against each engine's sidecar.

Why a module of its own: ``IPluginRegistry.load_library`` does not raise when it fails, it returns
None, and it also returns None when a library's plugins are already registered ("The call will fail
and return None if any of the plugins are already registered", NVIDIA/TensorRT release/10.3
python/docstrings/infer/pyPluginDoc.h:1005-1011, the same text in 10.13 and 11.1). A build followed
by a backend in one process would load the library twice; so handles are kept per resolved path, and
a None is an error unless every plugin the caller needs is already in the registry.
"""
from __future__ import annotations

import ctypes
import os
import re
from pathlib import Path

from .errors import LayoverError, NotFound

_loaded: dict[str, object] = {}  # resolved path -> the handle TensorRT returned (keeps the library loaded)


def load_plugins(trt, logger, libraries: list[str | Path], needed: list[tuple[str, str, str]] = ()) -> None:
    """Register TensorRT's own plugins and each library's; ``needed`` (name, version, namespace) must
    then be in the registry. LayoverError naming the library or the plugin otherwise."""
    if not trt.init_libnvinfer_plugins(logger, ""):
        raise LayoverError("TensorRT could not register its own plugins (init_libnvinfer_plugins failed)")
    registry = trt.get_plugin_registry()
    for lib in libraries:
        key = str(Path(lib).resolve())
        if key in _loaded:
            continue
        if not Path(key).is_file():
            raise NotFound(f"plugin library not found: {lib}")
        handle = registry.load_library(key)
        if handle is None and not (needed and all(_creator(registry, *n) for n in needed)):
            raise LayoverError(f"TensorRT could not load plugin library {lib} (see its messages above): "
                               f"built for another TensorRT, or its plugins are already registered")
        _loaded[key] = handle
    for name, version, namespace in needed:
        if _creator(registry, name, version, namespace) is None:
            raise LayoverError(f"plugin {name} version {version} namespace {namespace!r} is not in "
                               f"{', '.join(map(str, libraries)) or 'the registry'}: wrong or stale library")


def _creator(registry, name: str, version: str, namespace: str):
    # get_creator (10.0+) finds IPluginCreatorV3One creators too; get_plugin_creator is gone in 11.
    return registry.get_creator(name, version, namespace)


def library_identity(maps: Path = Path("/proc/self/maps")) -> dict | None:
    """The libnvinfer this process has loaded: {"version", "bytes"}, or None when none is.

    Why not ``tensorrt.__version__``: the bindings' string can lack the build number (JetPack's and the
    10.3.0 wheel's say "10.3.0"), while TensorRT refuses a plan from another build of the same version
    and ``deserialize_cuda_engine`` then only returns None. The library itself says more:
    getInferLib{Major,Minor,Patch,Build}Version from 10.13 (include/NvInferRuntime.h, release/10.13
    l.5649-5661, 11.1 l.5385-5401), only getInferLibVersion, (major·100 + minor)·100 + patch, before
    (release/10.3 NvInferRuntimeBase.h l.1233-1238); where the build number is missing, the file's
    size tells two builds apart."""
    try:
        text = maps.read_text()
    except OSError:
        return None
    paths = sorted({m.group(1) for m in re.finditer(r"(/\S*/libnvinfer\.so\.[\d.]+)$", text, re.M)})
    if not paths:
        return None
    lib = ctypes.CDLL(paths[0])  # already loaded: the same handle
    if hasattr(lib, "getInferLibBuildVersion"):
        version = ".".join(str(getattr(lib, f"getInferLib{p}Version")()) for p in ("Major", "Minor", "Patch", "Build"))
    elif hasattr(lib, "getInferLibVersion"):
        v = lib.getInferLibVersion()
        version = f"{v // 10000}.{v // 100 % 100}.{v % 100}"
    else:
        return None
    return {"version": version, "bytes": os.path.getsize(os.path.realpath(paths[0]))}
