"""Every default in one place: the model a checkpoint describes, its preprocessing, and the
paper's training recipe. The CLI's defaults and the Python API's are read from here."""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import checks
from .errors import LayoverError

METHODS = ("lp", "rm", "ft", "concat")
# sweep: a grid of heads from the cache, steps scaled to the data, the best on validation (the default);
# paper: appendix A.2 exactly (30 epochs, OneCycle 0.1), for reproducing the paper's tables
RECIPES = ("sweep", "paper")
# The sweep's (and FT's) default length: MIN_EPOCHS passes over the training split, never fewer than MIN_STEPS
# steps (training/schedule.py says why)
MIN_STEPS = 300
MIN_EPOCHS = 30
# linear: pool, Linear C→N (the official BiT code); pool1d: the paper's eq. 3 for tokens
RS_VARIANTS = ("linear", "pool1d")
# How the RM branch ĥ meets the pre-logits z (kernels/reference.py has the maths), the default
# first: residual z' = z + α·ĥ with a linear ĥ on the standardised tap; paper, eq. 5-6 exactly:
# z' = α·sigmoid(W_rs·p) + (1−α)·z. README "The method" says why residual is the default.
MIXES = ("residual", "paper")
# What a checkpoint written before the mix existed used: the paper's form.
LEGACY_MIX = "paper"
# torchvision's InterpolationMode values, which build_transform takes
INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
# Images declaring more pixels than this are refused before decoding (a 97 KB PNG can declare
# 10000 x 10000 and take a gigabyte); LAYOVER_MAX_PIXELS overrides it.
MAX_PIXELS = 64_000_000
# The largest batch a verb accepts (tag --batch-size, export --static-batch, predict's batch_size):
# one batch of 4096 images at 224 px is 2.5 GB of float32 input before the model runs.
MAX_BATCH = 4096
# INT8 calibration images: fewer than MIN_CALIB cannot give stable activation ranges (an error),
# fewer than RECOMMENDED_CALIB get a warning; TensorRT recommends about 500 for CNNs and ViTs.
MIN_CALIB, RECOMMENDED_CALIB = 32, 300
# The float type of an INT8 graph's ops outside its Q/DQ pairs, the default first; the head stays FP32
# (export/quantize.py says why FP16 is the default).
INT8_FLOATS = ("fp16", "fp32")


def check_preprocess(image_size: Any, mean: Any, std: Any, interpolation: Any) -> None:
    """LayoverError unless these describe a transform (None: not resolved yet, allowed)."""
    if image_size is not None:
        checks.positive_int(image_size, "image_size")
    for name, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if not isinstance(values, (list, tuple)) or len(values) != 3:
            raise LayoverError(f"{name} must be 3 numbers (R, G, B), got {values!r}")
        for v in values:
            checks.number(v, name, 0, low_open=name == "std")
    if interpolation is not None and interpolation not in INTERPOLATIONS:
        raise LayoverError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")


def check_labels(labels: Any, thresholds: Any, num_classes: int) -> None:
    """Distinct label names, one per class; thresholds None or one probability per class."""
    if not isinstance(labels, list) or not all(isinstance(n, str) and n for n in labels):
        raise LayoverError(f"labels must be a list of non-empty names, got {str(labels)[:80]}")
    if labels and len(labels) != num_classes:
        raise LayoverError(f"{len(labels)} label names for {num_classes} classes")
    if len(set(labels)) != len(labels):
        raise LayoverError(f"duplicate label names {sorted({n for n in labels if labels.count(n) > 1})}")
    if thresholds is not None:
        if not isinstance(thresholds, list):
            raise LayoverError(f"thresholds must be a list of {num_classes} probabilities, got {str(thresholds)[:80]}")
        if len(thresholds) != num_classes:
            raise LayoverError(f"{len(thresholds)} thresholds for {num_classes} classes")
        for t in thresholds:
            checks.probability(t, "every threshold")


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the model's input: a square resize, scaling to [0, 1], then
    normalisation. Stored in every checkpoint, ONNX file and engine sidecar."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        check_preprocess(self.image_size, self.mean, self.std, self.interpolation)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model: stored as ``config.json`` in every checkpoint.

    ``image_size``, ``mean``, ``std`` and ``interpolation`` left as None mean "the backbone's
    pretrained config"; ``models.resolve_config`` fills them in, once, before anything is built.
    """

    backbone: str
    num_classes: int
    method: str = "rm"
    tap: int = 1
    rs: str = "linear"
    mix: str = MIXES[0]
    # "pretrained" (timm hub), "none" (random), a weights package (efficientnet-lite0) or a file path
    weights: str = "pretrained"
    image_size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str | None = None
    labels: list[str] = field(default_factory=list)
    thresholds: list[float] | None = None  # per class; None means 0.5 for every class

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LayoverError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.rs not in RS_VARIANTS:
            raise LayoverError(f"unknown RS variant {self.rs!r}; choose one of {RS_VARIANTS}")
        if self.mix not in MIXES:
            raise LayoverError(f"unknown mix {self.mix!r}; choose one of {MIXES}")
        for name in ("backbone", "weights"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise LayoverError(f"{name} must be a name, got {getattr(self, name)!r}")
        checks.positive_int(self.num_classes, "num_classes")
        checks.positive_int(self.tap, "tap")
        check_preprocess(self.image_size, self.mean, self.std, self.interpolation)
        check_labels(self.labels, self.thresholds, self.num_classes)
        if not self.labels:
            self.labels = [f"class_{i}" for i in range(self.num_classes)]

    @property
    def fused_branch(self) -> bool:
        """Whether the model holds the fused RM branch (``torch.ops.layover.fused_mix``, the plugin)."""
        return self.method in ("rm", "ft") and self.rs == "linear"

    @property
    def resolved(self) -> bool:
        return None not in (self.image_size, self.mean, self.std, self.interpolation)

    @property
    def preprocess(self) -> Preprocess:
        if not self.resolved:
            raise LayoverError("the model config's preprocessing is not resolved (models.resolve_config)")
        return Preprocess(self.image_size, tuple(self.mean), tuple(self.std), self.interpolation)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        if not isinstance(d, dict):
            raise LayoverError(f"the model config must be an object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LayoverError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        d.setdefault("mix", LEGACY_MIX)  # written before the field existed: the paper's form it was
        for key in ("mean", "std"):
            if isinstance(d.get(key), list):
                d[key] = tuple(d[key])
        try:
            return cls(**d)
        except TypeError as e:  # a required key missing
            raise LayoverError(f"incomplete model config: {e}") from None


@dataclass
class TrainConfig:
    """How heads train. ``recipe`` ``sweep`` (the default) trains the heads that train from the
    feature cache (LP, concat, RM with the linear RS) as a grid of ``sweep_lrs`` × ``sweep_weight_decays``
    for ``steps`` optimiser steps and keeps the best on validation (``training/sweep.py``); FT trains
    for ``steps`` steps, within ``budget_s`` when given. ``paper`` is appendix A.2 exactly (plus the
    official code's unstated choices): ``epochs`` of OneCycle SGD at ``lr`` and ``weight_decay``,
    the best epoch kept."""

    recipe: str = RECIPES[0]
    steps: int | None = None        # sweep and FT: None chooses from the data set's size (training/schedule.py)
    sweep_lrs: tuple[float, ...] = (0.3, 1.0)
    sweep_weight_decays: tuple[float, ...] = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    budget_s: float | None = None   # FT: wall-clock seconds; its epochs are planned from timed first steps
    epochs: int = 30                # paper: every method's epochs; sweep: FT's epochs at most
    batch_size: int = 64
    lr: float = 0.1                 # OneCycle max lr for the head
    backbone_lr: float = 0.01       # OneCycle max lr for fine-tuned backbone weights (FT)
    momentum: float = 0.9
    weight_decay: float = 1e-4      # official code, commit ec54d1a
    pct_start: float = 0.2          # official code
    grad_clip: float = 1.0          # official code; 0 disables
    num_workers: int = 0
    seed: int = 0
    amp: bool = True                # autocast on CUDA only
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise LayoverError(f"unknown recipe {self.recipe!r}; choose one of {RECIPES}")
        if self.steps is not None:
            checks.positive_int(self.steps, "steps")
        for name in ("sweep_lrs", "sweep_weight_decays"):
            values = getattr(self, name)
            if not isinstance(values, (list, tuple)) or not values:
                raise LayoverError(f"{name} must be a non-empty list of numbers, got {values!r}")
            for v in values:
                (checks.positive_number if name == "sweep_lrs" else checks.nonnegative_number)(v, name)
            setattr(self, name, tuple(float(v) for v in values))
        if self.budget_s is not None:
            checks.positive_number(self.budget_s, "budget_s")
        checks.positive_int(self.epochs, "epochs")
        checks.positive_int(self.batch_size, "batch_size")
        checks.positive_number(self.lr, "lr")
        checks.positive_number(self.backbone_lr, "backbone_lr")
        checks.number(self.momentum, "momentum", 0, 1, high_open=True)
        checks.nonnegative_number(self.weight_decay, "weight_decay")
        checks.number(self.pct_start, "pct_start", 0, 1, low_open=True, high_open=True)
        checks.nonnegative_number(self.grad_clip, "grad_clip")
        checks.nonnegative_int(self.num_workers, "num_workers")
        checks.integer(self.seed, "seed")
        check_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_device(name: Any) -> str:
    if not isinstance(name, str) or not DEVICE.fullmatch(name):
        raise LayoverError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")
    return name


@dataclass
class ExportConfig:
    """What ``export`` writes beside the portable graph, and how INT8 is calibrated."""

    forms: tuple[str, ...] | None = None  # None: portable, plus plugin where the checkpoint has a fused branch
    int8: bool = False
    fp16: bool = False
    calib_data: str | None = None   # NAME:SPLIT[:key=value,...] or a .npy of preprocessed images
    calib_size: int = 512           # TensorRT recommends about 500 images
    calib_method: str = "entropy"
    int8_float: str = INT8_FLOATS[0]
    opset: int = 18                 # torch's dynamo exporter writes 18; its down-conversion to 17 fails
    static_batch: int | None = None  # fix the batch axis (DLA) instead of a dynamic one
    triton_repo: str | None = None   # also write a Triton model repository here (export/triton_repo.py)
    triton_engine: str | None = None  # ... with this TensorRT engine as a second model
    triton_max_batch: int | None = None  # None: the engine profile's maximum, else ServeConfig.max_batch
    overwrite: bool = False          # replace another checkpoint's export in the folder (its files removed first)

    def __post_init__(self) -> None:
        checks.positive_int(self.calib_size, "calib_size")
        checks.positive_int(self.opset, "opset")
        if self.int8_float not in INT8_FLOATS:
            raise LayoverError(f"int8_float must be one of {INT8_FLOATS}, got {self.int8_float!r}")
        for name in ("static_batch", "triton_max_batch"):
            if getattr(self, name) is not None:
                checks.integer(getattr(self, name), name, 1, MAX_BATCH)


@dataclass
class ServeConfig:
    """How ``serve`` runs Triton (through PyTriton) and how a generated repository batches.
    A port of 0 picks a free one."""

    host: str = "127.0.0.1"         # loopback unless told otherwise
    http_port: int = 8000           # Triton's own defaults
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8              # images per model execution, gathered by Triton's dynamic batcher
    max_queue_delay_us: int = 0     # Triton's default: batch what is queued, never wait for more
    max_image_pixels: int = MAX_PIXELS  # decoding bound per image (192 MB of RGB); PIL's own bomb limit is 89 MP
    threshold: float | None = None  # one threshold for every class instead of the model's
    topk: int = 0
    log_file: str | None = None     # tritonserver's log (default: a new layover-edge-serve-PID-*.log in the temp dir)
    max_request_mb: int = 64        # the largest HTTP request body; Triton 2.59's --http-max-input-size default

    def __post_init__(self) -> None:
        if ":" in self.host:
            # tritonserver 2.51 joins address and port as "::1:8001", which gRPC cannot parse: it
            # exits "already in use" and PyTriton waits two minutes (server src/grpc/grpc_server.cc)
            raise LayoverError(f"--host {self.host}: the bundled tritonserver cannot listen for gRPC on an IPv6 "
                               "address; use an IPv4 one (127.0.0.1, 0.0.0.0)")
        ports = {}
        for name in ("http", "grpc", "metrics"):
            port = checks.integer(getattr(self, f"{name}_port"), f"{name}_port", 0, 65535)
            if port and port in ports:
                raise LayoverError(f"--{ports[port]}-port and --{name}-port are both {port}: each needs its own "
                                   "port (0 picks a free one)")
            ports[port] = name
        checks.positive_int(self.max_batch, "max_batch")
        checks.nonnegative_int(self.max_queue_delay_us, "max_queue_delay_us")
        checks.positive_int(self.max_image_pixels, "max_image_pixels")
        checks.nonnegative_int(self.topk, "topk")
        checks.positive_int(self.max_request_mb, "max_request_mb")
        if self.threshold is not None:
            checks.probability(self.threshold, "threshold")
