"""What the engine builder and the TensorRT runtime share: loading plugin libraries into TensorRT's
process-wide plugin registry, once per library, with failures reported.

Why a module of its own: ``IPluginRegistry.load_library`` does not raise when it fails, it returns
None, and it also returns None when a library's plugins are already registered ("The call will fail
and return None if any of the plugins are already registered", NVIDIA/TensorRT release/10.3
python/docstrings/infer/pyPluginDoc.h:1005-1011, the same text in 10.13 and 11.1). A build followed
by a backend in one process would load the library twice; so handles are kept per resolved path, and
a None is an error unless every plugin the caller needs is already in the registry.
"""
from __future__ import annotations

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
