"""ONNX -> TensorRT engine + sidecar JSON, through the TensorRT Python API (10.x and 11.x).

``prepare_build`` checks everything that does not need TensorRT (the ONNX, its precision against
the request, plugins, target, DLA) and yields the equivalent trtexec command; ``build_engine``
then runs the builder: optimisation profile (min/opt/max batch), workspace limit, timing cache,
plugin library, strongly typed network where the precision mode says so (always on TensorRT 11), the FP16
flag and FP32-pinned head only on TensorRT 10.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from layover_edge.artifacts.onnx_metadata import get_metadata
from layover_edge.artifacts.sidecar import FORMAT, sidecar_path
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import atomic_path, sha256, write_json

from .onnx import check_onnx
from .precision import PrecisionMode, precision_mode
from .targets import Target, check_dla
from .trtexec import trtexec_command

TRT_MISSING = ("TensorRT is not installed here (JetPack ships it; elsewhere pip install tensorrt): "
               "build on the device with the trtexec command above")


@dataclass
class BuildRequest:
    onnx: Path
    engine: Path
    precision: str
    target: Target
    trt_version: str
    mode: PrecisionMode
    meta: dict
    batch: tuple[int, int, int]
    workspace_gb: float
    plugins: list[Path] = field(default_factory=list)
    plugin_nodes: list[tuple[str, str, str]] = field(default_factory=list)
    timing_cache: Path | None = None
    dla_core: int | None = None

    def trtexec(self) -> str:
        return trtexec_command(self.onnx, self.engine, self.mode, self.trt_version, self.meta["input"],
                               self.meta["image_size"], self.batch, self.workspace_gb,
                               self.meta["high_precision_nodes"], [str(p) for p in self.plugins],
                               str(self.timing_cache) if self.timing_cache else None, self.dla_core)


def installed_tensorrt() -> str | None:
    try:
        import tensorrt
    except ImportError:
        return None
    return tensorrt.__version__


def engine_path(onnx_path: str | Path, precision: str, target: Target) -> Path:
    """ONNX.PRECISION.TARGET.engine beside the ONNX file (model.int8.onnx stays model.int8...)."""
    stem = Path(onnx_path).stem
    stem = stem if stem.endswith(precision) else f"{stem}.{precision}"
    return Path(onnx_path).with_name(f"{stem}.{target.name}.engine")


def plugin_nodes(onnx_path: Path) -> list[tuple[str, str, str]]:
    """(name, version, namespace) of every plugin node in the graph."""
    import onnx
    from onnx.helper import get_attribute_value
    found = set()
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        if node.domain not in ("", "ai.onnx"):
            attrs = {a.name: get_attribute_value(a) for a in node.attribute}
            dec = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            found.add((node.op_type, dec.get("plugin_version", "1"), dec.get("plugin_namespace", "")))
    return sorted(found)


def prepare_build(onnx_path: str | Path, engine: str | Path, precision: str, target: Target,
                  trt_version: str, batch: tuple[int, int, int] | None = None, workspace_gb: float | None = None,
                  plugins: list[str] = (), timing_cache: str | None = None,
                  dla_core: int | None = None) -> BuildRequest:
    """Validate a build without TensorRT; LayoverError naming the first problem."""
    import onnx
    onnx_path = Path(onnx_path)
    check_onnx(onnx_path)
    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = get_metadata(proto, onnx_path)
    mode = precision_mode(meta["precision"], precision, trt_version)
    static = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value  # 0: dynamic batch axis
    batch = tuple(batch or ((static,) * 3 if static else target.batch))
    if static and batch != (static,) * 3:
        raise LayoverError(f"{onnx_path.name} has a fixed batch of {static}: the profile must be {static}/{static}/"
                           f"{static}, got {'/'.join(map(str, batch))}")
    if not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise LayoverError(f"batch sizes must satisfy 1 ≤ min ≤ opt ≤ max, got {batch}")
    check_dla(target, dla_core, precision, trt_version, batch)
    libs = [Path(p) for p in plugins]
    for lib in libs:
        if not lib.is_file():
            raise LayoverError(f"plugin library not found: {lib} (build it: cmake -S . -B build "
                               f"-DTENSORRT_ROOT=... && cmake --build build)")
    nodes = plugin_nodes(onnx_path)
    if nodes and not libs:
        names = ", ".join("/".join(n) for n in nodes)
        raise LayoverError(f"{onnx_path.name} holds plugin node(s) {names}: pass --plugins build/liblayover_plugins.so")
    return BuildRequest(onnx_path, Path(engine), precision, target, trt_version, mode, meta, batch,
                        workspace_gb or target.workspace_gb, libs, nodes,
                        Path(timing_cache) if timing_cache else None, dla_core)


def _load_plugins(trt, logger, req: BuildRequest) -> None:
    trt.init_libnvinfer_plugins(logger, "")
    registry = trt.get_plugin_registry()
    for lib in req.plugins:
        try:
            registry.load_library(str(lib))
        except Exception as e:  # TensorRT raises RuntimeError/TypeError for unloadable libraries
            raise LayoverError(f"TensorRT cannot load plugin library {lib}: {e}") from None
    get = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    for name, version, namespace in req.plugin_nodes:
        if get(name, version, namespace) is None:
            raise LayoverError(f"plugin {name} version {version} namespace {namespace!r} is not in "
                               f"{', '.join(map(str, req.plugins))}: wrong or stale library")


def _pin_head(trt, network, names: list[str]) -> int:
    """TensorRT 10 FP16: the head's layers (named after their ONNX nodes) run and output FP32."""
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if any(layer.name == n or layer.name.startswith(n + "_") for n in names):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def plan_engine(onnx_path: str | Path, precision: str, target: str, out: str | Path | None = None,
                min_batch: int = 1, opt_batch: int | None = None, max_batch: int | None = None,
                workspace_gb: float | None = None, plugins: list[str] = (), timing_cache: str | None = None,
                dla_core: int | None = None, trt_version: str | None = None) -> BuildRequest:
    """The build ``layover-edge build`` runs: for the installed TensorRT, else ``trt_version``, else
    the target's; the engine beside the ONNX file unless ``out``; the target's batch profile unless
    ``max_batch`` is given."""
    from .targets import get_target
    t = get_target(target)
    version = installed_tensorrt() or trt_version or t.tensorrt
    batch = (min_batch, opt_batch or max_batch, max_batch) if max_batch else None
    return prepare_build(onnx_path, out or engine_path(onnx_path, precision, t), precision, t, version, batch,
                         workspace_gb, list(plugins), timing_cache, dla_core)


def build_text(sidecar: dict, engine: Path) -> str:
    from layover_edge.core.tables import format_table
    rows = {engine.name: {"precision": sidecar["precision"], "target": sidecar["target"], "gpu": sidecar["gpu"],
                          "tensorrt": sidecar["tensorrt"], "batch": "/".join(map(str, sidecar["batch"])),
                          "seconds": sidecar["build_seconds"]}}
    return format_table(rows, columns=("precision", "target", "gpu", "tensorrt", "batch", "seconds"), first="engine")


def build_engine(req: BuildRequest, device_index: int = 0, any_gpu: bool = False) -> dict:
    """Build the engine and its sidecar; returns the sidecar."""
    try:
        import tensorrt as trt
    except ImportError:
        raise LayoverError(TRT_MISSING) from None
    from layover_edge.core.cuda import CudaDevice
    if trt.__version__ != req.trt_version:
        raise LayoverError(f"the build was planned for TensorRT {req.trt_version}, this is {trt.__version__}")
    device = CudaDevice(device_index)
    if device.compute_capability != req.target.compute_capability and not any_gpu:
        raise LayoverError(f"target {req.target.name} is compute capability {req.target.compute_capability}, this "
                           f"GPU ({device.name}) is {device.compute_capability}: build on the target device "
                           f"(the trtexec command above), or pass --any-gpu for an engine for this GPU")
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    _load_plugins(trt, logger, req)
    builder = trt.Builder(logger)
    flags = 0
    if req.mode.strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # ignored (always on) in 11
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(req.onnx)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LayoverError(f"TensorRT cannot parse {req.onnx}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    s = req.meta["image_size"]
    profile.set_shape(req.meta["input"], *[(b, 3, s, s) for b in req.batch])
    config.add_optimization_profile(profile)
    if req.mode.fp16_flag:  # TensorRT 10 only: BuilderFlag.FP16 is gone in 11 (precision_mode refuses it there)
        config.set_flag(trt.BuilderFlag.FP16)
    if req.mode.pin_fp32:
        if not _pin_head(trt, network, req.meta["high_precision_nodes"]):
            raise LayoverError("no head layer found to keep in FP32: the ONNX node names did not survive parsing")
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    if req.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = req.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    cache_bytes = req.timing_cache.read_bytes() if req.timing_cache and req.timing_cache.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LayoverError("TensorRT failed to build the engine (see the TensorRT messages above)")
    with atomic_path(req.engine) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if req.timing_cache:
        with atomic_path(req.timing_cache) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    sidecar = make_sidecar(req, trt.__version__, device.name, device.compute_capability,
                           round(time.perf_counter() - t0, 1))
    write_json(sidecar_path(req.engine), sidecar)
    return sidecar


def make_sidecar(req: BuildRequest, trt_version: str, gpu: str, compute_capability: str, seconds: float) -> dict:
    """The engine's sidecar: build facts plus the ONNX metadata the runtime needs."""
    meta = req.meta
    return {"format": FORMAT, "tensorrt": trt_version, "gpu": gpu, "compute_capability": compute_capability,
            "precision": req.precision, "target": req.target.name, "dla_core": req.dla_core,
            "strongly_typed": req.mode.strongly_typed, "input": meta["input"], "outputs": meta["outputs"],
            "batch": list(req.batch), "input_shape": [-1, 3, meta["image_size"], meta["image_size"]],
            "workspace_gb": req.workspace_gb, "plugins": [str(p.resolve()) for p in req.plugins],
            "onnx": str(req.onnx), "onnx_sha256": sha256(req.onnx), "engine_sha256": sha256(req.engine),
            "labels": meta["labels"], "thresholds": meta.get("thresholds"), "image_size": meta["image_size"],
            "mean": meta["mean"], "std": meta["std"], "interpolation": meta["interpolation"],
            "method": meta["method"], "backbone": meta["backbone"], "form": meta["form"],
            "graph_precision": meta["precision"], "build_seconds": seconds, "trtexec": req.trtexec()}
