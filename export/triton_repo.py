"""A Triton Inference Server model repository from an exported model, for a deployment without
Python in the request path (NVIDIA's Triton container, or its JetPack release on a Jetson):

    DIR/tagger_onnx/config.pbtxt  labels.txt  1/model.onnx     ONNX Runtime backend (the portable graph)
    DIR/tagger_trt/config.pbtxt   labels.txt  1/model.plan     TensorRT backend, when an engine is given

Input ``image`` FP32 (3, S, S), preprocessed as the file's metadata says (a client reads it from
the config's ``layover_edge`` parameter); outputs ``logits`` and ``probabilities``, the latter with
the labels file for Triton's classification extension. ``max_batch_size`` is the engine profile's
maximum where there is one; a static-batch graph or a fixed-batch engine gets 0 (no batching).
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from layover_edge.artifacts.onnx_metadata import get_metadata
from layover_edge.artifacts.sidecar import read_sidecar
from layover_edge.core.config import ServeConfig
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import atomic_path, sha256, write_text
from layover_edge.kernels.identity import PLUGIN_LIBRARY, PLUGIN_LIBRARY_SELF_REGISTERING

ONNX_MODEL, TRT_MODEL = "tagger_onnx", "tagger_trt"
LABELS_FILE = "labels.txt"
# ONNX TensorProto element types -> Triton's DataType names
TRITON_TYPES = {1: "TYPE_FP32", 10: "TYPE_FP16", 16: "TYPE_BF16", 11: "TYPE_FP64", 7: "TYPE_INT64",
                6: "TYPE_INT32", 3: "TYPE_INT8", 2: "TYPE_UINT8", 9: "TYPE_BOOL"}
PREPROCESS_KEYS = ("image_size", "mean", "std", "interpolation", "thresholds", "precision")
log = logging.getLogger(__name__)


def graph_io(proto) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
    """(name, Triton type, dims) of the graph's inputs and outputs; a symbolic dim is -1."""
    initializers = {i.name for i in proto.graph.initializer}

    def describe(v) -> tuple[str, str, list[int]]:
        t = v.type.tensor_type
        if t.elem_type not in TRITON_TYPES:
            raise LayoverError(f"graph tensor {v.name} has ONNX element type {t.elem_type}, which Triton has no "
                               "type for")
        return v.name, TRITON_TYPES[t.elem_type], [d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim]
    return ([describe(v) for v in proto.graph.input if v.name not in initializers],
            [describe(v) for v in proto.graph.output])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(name: str, platform: str, max_batch: int, inputs, outputs, delay_us: int, meta: dict,
                dla_core: int | None = None) -> str:
    """config.pbtxt: inputs/outputs as (name, type, dims without the batch axis when max_batch > 0);
    ``dla_core``: the engine runs on that DLA core. Triton's tensorrt backend sets the runtime's DLA
    core only from an instance group's KIND_NVDLA secondary device, else it leaves it unset (-1)
    (tensorrt_backend src/tensorrt_model_instance.cc l.46-76, src/loader.cc l.65-79; the message
    ModelInstanceGroup.SecondaryDevice in common's protobuf/model_config.proto)."""
    def tensor(n: str, t: str, dims: list[int], labels: bool = False) -> str:
        extra = f" label_filename: {_quote(LABELS_FILE)}" if labels else ""
        return f"  {{ name: {_quote(n)} data_type: {t} dims: [ {', '.join(map(str, dims))} ]{extra} }}"
    lines = [f"name: {_quote(name)}", f"platform: {_quote(platform)}", f"max_batch_size: {max_batch}",
             "input [", ",\n".join(tensor(*i) for i in inputs), "]",
             "output [", ",\n".join(tensor(*o, labels=o[0] == "probabilities") for o in outputs), "]"]
    if max_batch > 0:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {delay_us} }}")
    if dla_core is not None:
        lines.append(f"instance_group [ {{ kind: KIND_GPU count: 1 secondary_devices [ {{ kind: KIND_NVDLA "
                     f"device_id: {int(dla_core)} }} ] }} ]")
    description = json.dumps({k: meta.get(k) for k in PREPROCESS_KEYS})
    lines.append(f"parameters {{ key: \"layover_edge\" value {{ string_value: {_quote(description)} }} }}")
    return "\n".join(lines) + "\n"


def _write_model(out: Path, name: str, model_file: Path, filename: str, config: str, labels: list[str]) -> None:
    """Our three files, each replaced atomically; anything else a user keeps in the model folder stays."""
    folder = out / name
    with atomic_path(folder / "1" / filename) as tmp:
        shutil.copyfile(model_file, tmp)
    write_text(folder / LABELS_FILE, "\n".join(labels) + "\n")
    write_text(folder / "config.pbtxt", config)


def write_repository(onnx_path: str | Path, out: str | Path, engine: str | Path | None = None,
                     max_batch: int | None = None, delay_us: int = ServeConfig.max_queue_delay_us) -> dict[str, dict]:
    """Write ``tagger_onnx`` (and, with ``engine``, ``tagger_trt``) into the repository ``out``,
    each model's files replaced (other files in its folder are left alone). Returns one row per
    model, as the export table shows them."""
    import onnx
    onnx_path, out = Path(onnx_path), Path(out)
    t0 = time.perf_counter()
    proto = onnx.load(str(onnx_path), load_external_data=False)
    meta = get_metadata(proto, onnx_path)
    if meta["form"] != "portable":
        raise LayoverError(f"{onnx_path} holds the LayoverFusedMix plugin node, which Triton's ONNX Runtime backend "
                           "cannot run: give the portable graph (model.onnx)")
    side = _engine_sidecar(Path(engine), meta) if engine is not None else None
    if max_batch is None:
        max_batch = int(side["batch"][2]) if side and side["batch"][0] == 1 else ServeConfig.max_batch
    if max_batch < 1:
        raise LayoverError(f"the repository's max batch must be at least 1, got {max_batch}")
    inputs, outputs = graph_io(proto)
    if any(not dims or dims[0] != -1 for _, _, dims in inputs + outputs):
        max_batch = 0  # a static batch axis (export --static-batch): Triton passes whole tensors, no batching
    strip = (lambda d: d[1:]) if max_batch else (lambda d: d)
    rows = {}
    _write_model(out, ONNX_MODEL, onnx_path, "model.onnx",
                 config_text(ONNX_MODEL, "onnxruntime_onnx", max_batch, [(n, t, strip(d)) for n, t, d in inputs],
                             [(n, t, strip(d)) for n, t, d in outputs], delay_us, meta), meta["labels"])
    rows[f"triton {ONNX_MODEL}"] = {"file": str(out / ONNX_MODEL), "precision": meta["precision"],
                                    "seconds": f"{time.perf_counter() - t0:.1f}", "max_batch": max_batch}
    if side is not None:
        t0 = time.perf_counter()
        s, k = int(side["image_size"]), len(side["labels"])
        low, high = int(side["batch"][0]), int(side["batch"][2])
        fixed = [low] if low == high else []  # a fixed-batch engine (DLA): whole tensors, no batching
        engine_batch = 0 if fixed else high
        # the engine's I/O stays FP32 at every precision (the Q/DQ and FP16 graphs keep FP32 inputs and outputs)
        config = config_text(TRT_MODEL, "tensorrt_plan", engine_batch,
                             [(side["input"], "TYPE_FP32", [*fixed, 3, s, s])],
                             [(o, "TYPE_FP32", [*fixed, k]) for o in side["outputs"]], delay_us, side,
                             side.get("dla_core"))
        _write_model(out, TRT_MODEL, Path(engine), "model.plan", config, side["labels"])
        rows[f"triton {TRT_MODEL}"] = {"file": str(out / TRT_MODEL), "precision": side["precision"],
                                       "seconds": f"{time.perf_counter() - t0:.1f}", "max_batch": engine_batch}
    return rows


def _engine_sidecar(engine: Path, meta: dict) -> dict:
    """The engine's sidecar, after checking the engine can be Triton's second model of this export."""
    side = read_sidecar(engine)
    if sha256(engine) != side["engine_sha256"]:
        raise LayoverError(f"{engine} is not the engine its sidecar describes (sha256 differs): rebuild it")
    if side["labels"] != meta["labels"] or int(side["image_size"]) != int(meta["image_size"]):
        raise LayoverError(f"{engine} was built from another model (labels or image size differ from the export)")
    low, high = int(side["batch"][0]), int(side["batch"][2])
    if low != 1 and low != high:
        raise LayoverError(f"{engine} takes batches of {low} to {high}; Triton's dynamic batcher sends single "
                           "requests: rebuild it with --min-batch 1")
    if side["plugins"]:
        libs = [str(triton_plugin_library(p)) for p in side["plugins"]]
        log.warning("%s holds plugin layers: start tritonserver with --backend-config=tensorrt,plugins=\"%s\" "
                    "(paths as the server sees them; LD_PRELOAD=%s works too). Triton only dlopens these "
                    "libraries, so it needs the self-registering %s (built beside %s where CMake finds "
                    "libnvinfer), not %s, which registers its plugin only when IPluginRegistry::loadLibrary "
                    "asks it to", engine, ";".join(libs), ":".join(libs), PLUGIN_LIBRARY_SELF_REGISTERING,
                    PLUGIN_LIBRARY, PLUGIN_LIBRARY)
    return side


def triton_plugin_library(built_with: str | Path) -> Path:
    """The library Triton's tensorrt backend must load for a plugin library an engine was built with:
    the backend's ``plugins`` option only calls dlopen(path, RTLD_NOW | RTLD_LOCAL) (tensorrt_backend
    src/tensorrt.cc l.134-153, src/shared_library.cc l.135), so liblayover_plugins.so, which registers
    through getCreators, is swapped for its self-registering twin beside it."""
    path = Path(built_with)
    return path.with_name(PLUGIN_LIBRARY_SELF_REGISTERING) if path.name == PLUGIN_LIBRARY else path
