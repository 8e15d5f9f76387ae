"""Deterministic synthetic data: a multi-label "hard instance" target task and a
single-label source task to pre-train a small backbone on.

Why: the paper's premise (its section 1 and Figure 5) is that a backbone pre-trained on
large, centred objects still responds to a small object in its early feature maps but
loses it in its final pooled features, where the large object dominates; mixing a
pooled early feature into the pre-logits (Layover) recovers it. COCO-scale data is
not available in tests or CI, so this module draws tasks with that structure in well
under a millisecond per image, with no files and no downloads.

What an image holds:

* Background clutter: a smooth, low-saturation colour field (a 6x6 grid upsampled
  bilinearly), grey pixel noise and 6-12 grey bars 1-3 px thick. Edges and texture
  everywhere, but no saturated colour, so a class colour appears only where its
  object is.
* Objects: a shape mask in a square box of side ``size`` px, filled with one of 10
  saturated palette colours (brightness jitter 0.8-1.0) and darkened by a texture
  whose period is >= 3 px so that it survives on small objects.

``SyntheticScenes`` (target, multi-label): 1 large object (side 35-70 % of the image)
and 1-4 small ones (5-12 %), all of different classes; the large class is uniform and
the small ones uniform among the rest, so label frequencies are balanced. Class c is
(colour c mod 10, shape c mod 7, texture c mod 3) over the vocabulary below; the
moduli are coprime, so every class is a distinct triple (up to 210 classes) and two
classes that share a colour differ in shape or texture (in both up to 70 classes).
Small objects go where they do not overlap the large object's box or each other when
one of 16 sampled spots allows (all but ~0.02 % do at 96 px), otherwise on top (an
occluder).

``SyntheticSource`` (source, single label): one large, roughly centred object (side
45-80 %, centre jittered by up to 10 % of the side), like an ImageNet photo. Its class
is (shape, texture) from a *different* vocabulary and its colour is random from the
same palette: pre-training makes late layers colour-invariant shape/texture
detectors, while early layers keep colour and edge responses, the primitives the
target task shares with it (so transfer is meaningful but not trivial).

Image i of a split is a pure function of (task, seed, split, i): its generator is
``np.random.default_rng([task, seed, split_id, i])``, so any item can be drawn alone,
in any order, by any worker. Bump ``GENERATOR_VERSION`` whenever the output changes;
it is part of ``fingerprint()``, which keys feature caches.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import json
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

GENERATOR_VERSION = 1
SPLITS = {"train": 0, "val": 1, "test": 2}
COLOURS = ("red", "orange", "chartreuse", "green", "spring", "cyan", "azure", "blue", "violet", "rose")
PALETTE = np.array([colorsys.hsv_to_rgb(k / len(COLOURS), 0.85, 0.95) for k in range(len(COLOURS))], np.float32) * 255

# Shapes as inequalities on box coordinates u (right), v (down) in [-1, 1].
_SHAPES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # target vocabulary
    "disk": lambda u, v: u * u + v * v <= 1,
    "square": lambda u, v: np.maximum(abs(u), abs(v)) <= 0.85,
    "triangle": lambda u, v: abs(u) <= (v + 1) / 2,
    "diamond": lambda u, v: abs(u) + abs(v) <= 1,
    "cross": lambda u, v: np.minimum(abs(u), abs(v)) <= 0.3,
    "ring": lambda u, v: (u * u + v * v <= 1) & (u * u + v * v >= 0.3),
    "halfdisk": lambda u, v: (u * u + v * v <= 1) & (v >= -0.2),
    # source vocabulary
    "hexagon": lambda u, v: (abs(v) <= 0.87) & (0.87 * abs(u) + 0.5 * abs(v) <= 0.87),
    "star": lambda u, v: np.hypot(u, v) <= 0.6 + 0.4 * np.cos(5 * np.arctan2(u, -v)),
    "ellipse": lambda u, v: u * u + (v / 0.55) ** 2 <= 1,
    "frame": lambda u, v: (np.maximum(abs(u), abs(v)) <= 0.95) & (np.maximum(abs(u), abs(v)) >= 0.55),
    "crescent": lambda u, v: (u * u + v * v <= 1) & ((u - 0.45) ** 2 + v * v >= 0.55),
    "tee": lambda u, v: (v <= -0.45) | (abs(u) <= 0.3),
    "hourglass": lambda u, v: abs(u) <= abs(v) * 0.95,
}
# Textures as a darkening pattern in {0, 1} on pixel coordinates y (row), x (column), period p.
_TEXTURES: dict[str, Callable[[np.ndarray, np.ndarray, int], np.ndarray]] = {
    "solid": lambda y, x, p: y * 0,
    "hstripes": lambda y, x, p: y % p < p / 2,
    "checker": lambda y, x, p: (y // max(p // 2, 2) + x // max(p // 2, 2)) % 2,
    "vstripes": lambda y, x, p: x % p < p / 2,
    "dots": lambda y, x, p: (y % p - p / 2 + 0.5) ** 2 + (x % p - p / 2 + 0.5) ** 2 <= (p / 3) ** 2,
    "diagonal": lambda y, x, p: (y + x) % p < p / 2,
}
TARGET_SHAPES = ("disk", "square", "triangle", "diamond", "cross", "ring", "halfdisk")
TARGET_TEXTURES = ("solid", "hstripes", "checker")
SOURCE_SHAPES = ("hexagon", "star", "ellipse", "frame", "crescent", "tee", "hourglass")
SOURCE_TEXTURES = ("vstripes", "dots", "diagonal")


class SceneObject(NamedTuple):
    """One drawn object: its class, box side in pixels and whether it is a small one."""

    class_index: int
    size: int
    is_small: bool


class _Placed(NamedTuple):
    cls: int
    size: int
    y: int
    x: int
    colour: np.ndarray  # RGB, float32


@lru_cache(maxsize=4096)
def _fill(shape: str, texture: str, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask, shade) of an object of this size: mask (size, size) bool, shade in [0.5, 1].

    Cached: sizes are integers <= image size, so there are few distinct entries.
    """
    g = (np.arange(size) + 0.5) / size * 2 - 1
    mask = np.broadcast_to(_SHAPES[shape](g[None, :], g[:, None]), (size, size))
    px = np.arange(size)
    pattern = np.broadcast_to(_TEXTURES[texture](px[:, None], px[None, :], max(3, round(size / 6))), (size, size))
    shade = (1 - 0.5 * pattern).astype(np.float32)[..., None]
    shade.setflags(write=False)
    return mask, shade


class _SyntheticBase:  # torch-free, like files.FileDataset
    """Split bookkeeping, per-item generator, background, painting, fingerprint."""

    _task: int
    shapes: tuple[str, ...]
    textures: tuple[str, ...]

    def __init__(self, split: str, num_images: int, image_size: int, num_classes: int, seed: int,
                 transform: Callable[[Image.Image], Any] | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
        if image_size < 32:
            raise ValueError("image_size must be >= 32 so that small objects are a few pixels wide")
        self.split, self.num_images, self.image_size = split, num_images, image_size
        self.num_classes, self.seed, self.transform = num_classes, seed, transform
        self.classes = [self._name(c) for c in range(num_classes)]

    def __len__(self) -> int:
        return self.num_images

    def _rng(self, i: int) -> np.random.Generator:
        if not 0 <= i < self.num_images:
            raise IndexError(f"index {i} out of range for {self.num_images} images")
        return np.random.default_rng([self._task, self.seed, SPLITS[self.split], i])

    def _style(self, c: int) -> tuple[str, str]:
        """(shape, texture) of class c: coprime moduli give distinct pairs/triples."""
        return self.shapes[c % len(self.shapes)], self.textures[c % len(self.textures)]

    def _name(self, c: int) -> str:
        shape, texture = self._style(c)
        return f"{texture}-{shape}"

    def _colour(self, rng: np.random.Generator, index: int) -> np.ndarray:
        return PALETTE[index] * np.float32(rng.uniform(0.8, 1.0))

    def _render(self, rng: np.random.Generator, objects: list[_Placed]) -> Image.Image:
        s = self.image_size
        grid = rng.uniform(70, 180, (6, 6, 1)) + rng.uniform(-12, 12, (6, 6, 3))
        img = np.asarray(Image.fromarray(grid.astype(np.uint8)).resize((s, s), Image.BILINEAR), np.float32)
        img = img + rng.integers(-10, 11, (s, s, 1), dtype=np.int16)
        n_bars = int(rng.integers(6, 13))
        bars = np.column_stack([rng.integers(0, s, (n_bars, 2)), rng.integers(s // 8, s // 2, n_bars),
                                rng.integers(1, 4, n_bars), rng.integers(0, 2, n_bars), rng.integers(40, 220, n_bars)])
        for y, x, length, width, vertical, grey in bars:
            if vertical:
                img[y:y + length, x:x + width] = grey
            else:
                img[y:y + width, x:x + length] = grey
        for o in objects:
            mask, shade = _fill(*self._style(o.cls), o.size)
            patch = img[o.y:o.y + o.size, o.x:o.x + o.size]
            np.copyto(patch, o.colour * shade, where=mask[..., None])
        return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")

    def fingerprint(self) -> str:
        """Stable 16-hex-digit hash of everything that determines the items."""
        params = {"generator": type(self).__name__, "version": GENERATOR_VERSION, "split": self.split,
                  "num_images": self.num_images, "image_size": self.image_size,
                  "num_classes": self.num_classes, "seed": self.seed}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]


class SyntheticScenes(_SyntheticBase):
    """Target task: 1 large + 1-4 small objects of distinct classes; multi-hot targets."""

    _task = 1
    shapes, textures = TARGET_SHAPES, TARGET_TEXTURES
    MAX_CLASSES = len(COLOURS) * len(TARGET_SHAPES) * len(TARGET_TEXTURES)

    def __init__(self, split: str = "train", num_images: int = 2000, image_size: int = 96, num_classes: int = 10,
                 seed: int = 0, transform: Callable[[Image.Image], Any] | None = None) -> None:
        if not 5 <= num_classes <= self.MAX_CLASSES:
            raise ValueError(f"num_classes must be in [5, {self.MAX_CLASSES}] (5 = 1 large + up to 4 small)")
        super().__init__(split, num_images, image_size, num_classes, seed, transform)

    def _name(self, c: int) -> str:
        return f"{COLOURS[c % len(COLOURS)]}-{super()._name(c)}"

    def _layout(self, rng: np.random.Generator) -> list[_Placed]:
        s = self.image_size
        n_small = int(rng.integers(1, 5))
        classes = rng.choice(self.num_classes, 1 + n_small, replace=False)
        sizes = np.concatenate([rng.uniform(0.35, 0.70, 1), rng.uniform(0.05, 0.12, n_small)]) * s
        sizes = np.maximum(np.rint(sizes).astype(int), 3)
        candidates = rng.random((1 + n_small, 16, 2))  # 16 spots per object, first free one wins
        boxes: list[tuple[int, int, int]] = []
        for n, spots in zip(sizes, candidates):
            yx = np.floor(spots * (s - n + 1)).astype(int)
            free = np.ones(len(yx), bool)
            for by, bx, bn in boxes:  # overlap test with a 1 px gap, all spots at once
                free &= ~((yx[:, 0] < by + bn + 1) & (by < yx[:, 0] + n + 1)
                          & (yx[:, 1] < bx + bn + 1) & (bx < yx[:, 1] + n + 1))
            y, x = yx[int(np.argmax(free))]  # argmax of all-False is 0: overlap allowed
            boxes.append((int(y), int(x), int(n)))
        colours = [self._colour(rng, c % len(COLOURS)) for c in classes]
        return [_Placed(int(c), n, y, x, col) for c, (y, x, n), col in zip(classes, boxes, colours)]

    def objects(self, i: int) -> list[SceneObject]:
        """The objects of image i, large first, without rendering it (for galleries/analysis)."""
        return [SceneObject(o.cls, o.size, k > 0) for k, o in enumerate(self._layout(self._rng(i)))]

    def size_masks(self, indices=None) -> tuple[np.ndarray, np.ndarray]:
        """(small, large): (len(indices), K) bool, whether each image holds a small / large object of
        each class (``training.metrics.size_ap``). A class is never both in one image here."""
        indices = range(len(self)) if indices is None else indices
        small = np.zeros((len(indices), self.num_classes), bool)
        large = np.zeros_like(small)
        for row, i in enumerate(indices):
            for obj in self.objects(int(i)):
                (small if obj.is_small else large)[row, obj.class_index] = True
        return small, large

    def __getitem__(self, i: int) -> tuple[Any, np.ndarray]:
        rng = self._rng(i)
        layout = self._layout(rng)
        target = np.zeros(self.num_classes, np.float32)
        target[[o.cls for o in layout]] = 1
        img = self._render(rng, layout)
        return (self.transform(img) if self.transform else img), target

    def save(self, root: str | Path) -> Path:
        """Write the split as ``root/images/<split>_<i>.png`` + ``root/labels.csv``.

        labels.csv has columns ``path,labels``: the path relative to root and the class
        names joined by ';', so the split also works as a plain image folder.
        """
        root = Path(root)
        (root / "images").mkdir(parents=True, exist_ok=True)
        with open(root / "labels.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "labels"])
            for i in range(len(self)):
                rng = self._rng(i)
                layout = self._layout(rng)
                rel = f"images/{self.split}_{i:06d}.png"
                self._render(rng, layout).save(root / rel)
                writer.writerow([rel, ";".join(self.classes[c] for c in sorted(o.cls for o in layout))])
        return root / "labels.csv"


class SyntheticSource(_SyntheticBase):
    """Source task for pre-training: one large, roughly centred object; integer label."""

    _task = 2
    shapes, textures = SOURCE_SHAPES, SOURCE_TEXTURES
    MAX_CLASSES = len(SOURCE_SHAPES) * len(SOURCE_TEXTURES)

    def __init__(self, split: str = "train", num_images: int = 10000, image_size: int = 96, num_classes: int = 21,
                 seed: int = 0, transform: Callable[[Image.Image], Any] | None = None) -> None:
        if not 2 <= num_classes <= self.MAX_CLASSES:
            raise ValueError(f"num_classes must be in [2, {self.MAX_CLASSES}]")
        super().__init__(split, num_images, image_size, num_classes, seed, transform)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        rng = self._rng(i)
        s = self.image_size
        label = int(rng.integers(self.num_classes))
        n = int(round(rng.uniform(0.45, 0.80) * s))
        y, x = np.clip(np.rint((s - n) / 2 + rng.uniform(-0.1, 0.1, 2) * s), 0, s - n).astype(int)
        colour = self._colour(rng, int(rng.integers(len(COLOURS))))
        img = self._render(rng, [_Placed(label, n, int(y), int(x), colour)])
        return (self.transform(img) if self.transform else img), label
