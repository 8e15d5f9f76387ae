"""Every default in one place: the model a checkpoint describes, its preprocessing, and the
paper's training recipe. The CLI's defaults and the Python API's are read from here."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .errors import LayoverError

METHODS = ("lp", "rm", "ft", "concat")
# linear: pool, Linear C→N (the official BiT code); pool1d: the paper's eq. 3 for tokens
RS_VARIANTS = ("linear", "pool1d")
# How the RM branch ĥ meets the pre-logits z (kernels/reference.py has the maths), the default
# first: residual z' = z + α·ĥ with a linear ĥ on the standardised tap; paper, eq. 5-6 exactly:
# z' = α·sigmoid(W_rs·p) + (1−α)·z. README "The method" says why residual is the default.
MIXES = ("residual", "paper")
# What a checkpoint written before the mix existed used: the paper's form.
LEGACY_MIX = "paper"


@dataclass(frozen=True)
class Preprocess:
    """How an RGB image becomes the model's input: a square resize, scaling to [0, 1], then
    normalisation. Stored in every checkpoint, ONNX file and engine sidecar."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


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
        if self.labels and len(self.labels) != self.num_classes:
            raise LayoverError(f"{len(self.labels)} label names for {self.num_classes} classes")
        if not self.labels:
            self.labels = [f"class_{i}" for i in range(self.num_classes)]
        if self.thresholds is not None and len(self.thresholds) != self.num_classes:
            raise LayoverError(f"{len(self.thresholds)} thresholds for {self.num_classes} classes")

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
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise LayoverError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        d.setdefault("mix", LEGACY_MIX)  # written before the field existed: the paper's form it was
        for key in ("mean", "std"):
            if d.get(key) is not None:
                d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class TrainConfig:
    """The paper's recipe (appendix A.2) plus the official code's unstated choices."""

    epochs: int = 30
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExportConfig:
    """What ``export`` writes beside the portable graph, and how INT8 is calibrated."""

    forms: tuple[str, ...] | None = None  # None: portable, plus plugin where the checkpoint has a fused branch
    int8: bool = False
    fp16: bool = False
    calib_data: str | None = None   # NAME:SPLIT[:key=value,...] or a .npy of preprocessed images
    calib_size: int = 512           # TensorRT recommends about 500 images
    calib_method: str = "entropy"
    opset: int = 18                 # torch's dynamo exporter writes 18; its down-conversion to 17 fails
    static_batch: int | None = None  # fix the batch axis (DLA) instead of a dynamic one
