"""ONNX -> TensorRT engine + sidecar JSON, through the TensorRT Python API (10.x and 11.x).

``prepare_build`` checks everything that does not need TensorRT (the ONNX, its precision against
the request, plugins, target, DLA) and yields the equivalent trtexec command; ``build_engine``
then runs the builder: optimisation profile (min/opt/max batch; none for a static graph), workspace
limit, timing cache, plugin library, strongly typed network where the precision mode says so (always
on TensorRT 11), and on TensorRT 10 weak typing with the head pinned to FP32 (``head.pin_head``).
Every TensorRT call that reports failure by its return value (a bool, an index, None) is checked.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from layover_edge.artifacts.onnx_metadata import check_onnx, get_metadata
from layover_edge.artifacts.sidecar import FORMAT, sidecar_path
from layover_edge.core.errors import LayoverError, NotFound
from layover_edge.core.io import atomic_path, sha256, write_json
from layover_edge.core.tensorrt import library_identity, load_plugins

from .head import float_constants, head_boundary, pin_head
from .precision import PrecisionMode, precision_mode
from .targets import Target, check_dla
from .trtexec import trtexec_command

TRT_MISSING = ("TensorRT is not installed here (JetPack ships it; elsewhere pip install 'layover-edge[tensorrt-cu12]' "
               "for a CUDA 12 driver, [tensorrt-cu13] for CUDA 13, driver 580 or newer): build on the device with "
               "the trtexec command above")


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
    dynamic: bool = True                           # the ONNX input has a dynamic batch axis
    pinned: list[str] = field(default_factory=list)  # layer names kept FP32 (after parsing: TensorRT's own)

    def trtexec(self) -> str:
        return trtexec_command(self.onnx, self.engine, self.mode, self.trt_version, self.meta["input"],
                               self.meta["image_size"], self.batch, self.workspace_gb, self.dynamic, self.pinned,
                               [str(p) for p in self.plugins], str(self.timing_cache) if self.timing_cache else None,
                               self.dla_core)

    def dla_note(self) -> str | None:
        """What a DLA build leaves on the GPU, said before the build (the builder lists every layer)."""
        if self.dla_core is None:
            return None
        plugin = f"; plugin layers {', '.join('/'.join(n) for n in self.plugin_nodes)}" if self.plugin_nodes else ""
        return (f"DLA core {self.dla_core} runs FP16/INT8 layers only, so the FP32 head "
                f"({len(self.meta['high_precision_nodes'])} ONNX nodes){plugin} run on the GPU (GPU fallback is on); "
                f"the builder reports each layer DLA cannot take")


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
    if meta.get("quantizer") == "onnxruntime-qoperator":
        raise LayoverError(f"{onnx_path.name} is ONNX Runtime's CPU INT8 graph (QLinear ops), which TensorRT does "
                           f"not build: build model.int8.onnx (explicit Q/DQ) instead")
    mode = precision_mode(meta["precision"], precision, trt_version, dla=dla_core is not None)
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
            raise NotFound(f"plugin library not found: {lib} (build it: cmake -S . -B build "
                               f"-DTENSORRT_ROOT=... && cmake --build build)")
    nodes = plugin_nodes(onnx_path)
    if nodes and not libs:
        names = ", ".join("/".join(n) for n in nodes)
        raise LayoverError(f"{onnx_path.name} holds plugin node(s) {names}: pass --plugins build/liblayover_plugins.so")
    # Before parsing, the head's layers carry their ONNX node names (the export splits its Gemms,
    # head.split_biased_gemms) and its weights their initializer names: the trtexec list (float
    # weights only: trtexec pins an exact name whatever its type).
    head = set(meta["high_precision_nodes"])
    weights = float_constants(proto.graph, head_boundary(proto.graph, head)[2])
    pinned = sorted(head | weights) if mode.pin_fp32 else []
    return BuildRequest(onnx_path, Path(engine), precision, target, trt_version, mode, meta, batch,
                        workspace_gb or target.workspace_gb, libs, nodes,
                        Path(timing_cache) if timing_cache else None, dla_core, dynamic=not static, pinned=pinned)


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
    load_plugins(trt, logger, req.plugins, req.plugin_nodes)
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
    if req.dynamic:  # a static graph takes no profile (trtexec refuses shapes for one)
        profile = builder.create_optimization_profile()
        s = req.meta["image_size"]
        profile.set_shape(req.meta["input"], *[(b, 3, s, s) for b in req.batch])
        if config.add_optimization_profile(profile) < 0:
            raise LayoverError(f"TensorRT refused the optimisation profile {req.batch} for input {req.meta['input']}")
    _set_precision(trt, network, config, req)
    if req.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = req.dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        gpu = [network.get_layer(i).name for i in range(network.num_layers)
               if not config.can_run_on_DLA(network.get_layer(i))]
        print(f"DLA core {req.dla_core}: {network.num_layers - len(gpu)} of {network.num_layers} layers can run on "
              f"DLA; on the GPU: {', '.join(gpu) or 'none'}", file=sys.stderr)
    cache_bytes = req.timing_cache.read_bytes() if req.timing_cache and req.timing_cache.is_file() else b""
    if not config.set_timing_cache(config.create_timing_cache(cache_bytes), ignore_mismatch=False):
        raise LayoverError(f"TensorRT refused the timing cache {req.timing_cache}: it was made on another GPU or "
                           f"TensorRT version; delete it or pass another --timing-cache")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise LayoverError("TensorRT failed to build the engine (see the TensorRT messages above)")
    with atomic_path(req.engine) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if req.timing_cache:
        with atomic_path(req.timing_cache) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    sidecar = make_sidecar(req, trt.__version__, device.name, device.compute_capability,
                           round(time.perf_counter() - t0, 1), library_identity())
    write_json(sidecar_path(req.engine), sidecar)
    return sidecar


def _set_precision(trt, network, config, req: BuildRequest) -> None:
    """TF32 off for FP32 builds; TensorRT 10 weak typing (precision_mode): INT8/FP16 flags, the head
    pinned to FP32 by walking the parsed network, obey (GPU) or prefer (DLA) constraints. The pinned names replace the
    pre-parse list, so the sidecar's trtexec command is exactly this build."""
    if not req.mode.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; FP32 parity is |Δlogit| ≤ 1e-3
    if req.mode.int8_flag:
        config.set_flag(trt.BuilderFlag.INT8)
    if req.mode.fp16_flag:
        config.set_flag(trt.BuilderFlag.FP16)
    if not req.mode.pin_fp32:
        return
    import onnx
    graph = onnx.load(str(req.onnx), load_external_data=False).graph
    try:
        req.pinned = pin_head(trt, network, graph, req.meta["high_precision_nodes"])
    except LookupError as e:
        raise LayoverError(f"cannot keep the head in FP32: {e}") from None
    if not req.pinned:
        raise LayoverError("cannot keep the head in FP32: no float layer found between its input and output tensors")
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS if req.mode.constraints == "obey"
                    else trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)


def make_sidecar(req: BuildRequest, trt_version: str, gpu: str, compute_capability: str, seconds: float,
                 library: dict | None = None) -> dict:
    """The engine's sidecar: build facts plus the ONNX metadata the runtime needs; ``library``: the
    libnvinfer that built it (core.tensorrt.library_identity)."""
    meta = req.meta
    return {"format": FORMAT, "tensorrt": trt_version, "tensorrt_library": library, "gpu": gpu,
            "compute_capability": compute_capability, "precision": req.precision, "target": req.target.name,
            "dla_core": req.dla_core, "strongly_typed": req.mode.strongly_typed, "tf32": req.mode.tf32,
            "input": meta["input"], "outputs": meta["outputs"],
            "batch": list(req.batch), "input_shape": [-1, 3, meta["image_size"], meta["image_size"]],
            "workspace_gb": req.workspace_gb, "plugins": [str(p.resolve()) for p in req.plugins],
            "onnx": str(req.onnx), "onnx_sha256": sha256(req.onnx), "engine_sha256": sha256(req.engine),
            "labels": meta["labels"], "thresholds": meta.get("thresholds"), "image_size": meta["image_size"],
            "mean": meta["mean"], "std": meta["std"], "interpolation": meta["interpolation"],
            "method": meta["method"], "backbone": meta["backbone"], "form": meta["form"],
            "graph_precision": meta["precision"], "fp32_layers": req.pinned, "build_seconds": seconds,
            "trtexec": req.trtexec()}
