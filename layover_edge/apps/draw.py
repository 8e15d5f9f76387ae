"""Tags drawn onto frames, and where the drawn frames go: one image per image, one video per
video or stream. Files appear under their final name only when complete (layover_edge.io)."""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from layover_edge.core.errors import LayoverError
from layover_edge.core.io import atomic_path, make_dir

from .sources import cv2_module

Tags = list[tuple[str, float]]


def annotate(rgb: np.ndarray, tags: Tags, fps: float | None = None) -> np.ndarray:
    """A BGR copy of the frame with one "label score" line per tag (and the FPS) on a dark band,
    scaled to the frame so it stays legible from thumbnails to 4K."""
    cv2 = cv2_module()
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    lines = [f"{label} {score:.2f}" for label, score in tags] or ["(no tags)"]
    if fps is not None:
        lines.append(f"{fps:.1f} FPS")
    scale = max(0.3, min(bgr.shape[:2]) / 640)
    thick = max(1, round(scale * 1.5))
    font = cv2.FONT_HERSHEY_SIMPLEX
    (_, text_h), base = cv2.getTextSize("Ag", font, scale, thick)
    step = text_h + base + 4
    width = max(cv2.getTextSize(t, font, scale, thick)[0][0] for t in lines) + 8
    band = bgr[: step * len(lines) + 4, : width]
    band[:] = (band * 0.35).astype(np.uint8)  # darken, keep the picture visible
    for i, text in enumerate(lines):
        cv2.putText(bgr, text, (4, step * (i + 1) - base), font, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return bgr


class Drawer:
    """Writes annotated frames under ``folder``: images as ``<stem>.jpg``, videos and streams as
    ``<name>.mp4``. Names are made unique within a run. Close it (or use ``with``) to finish videos."""

    def __init__(self, folder: str | Path):
        self.folder = make_dir(folder)
        self.used: set[str] = set()
        self.stack = ExitStack()
        self.videos: dict[str, object] = {}

    def unique(self, stem: str, suffix: str) -> Path:
        name, n = f"{stem}{suffix}", 1
        while name in self.used:
            name, n = f"{stem}_{n}{suffix}", n + 1
        self.used.add(name)
        return self.folder / name

    def image(self, source: str, bgr: np.ndarray) -> Path:
        path = self.unique(Path(source).stem or "image", ".jpg")
        ok, data = cv2_module().imencode(".jpg", bgr)
        if not ok:
            raise LayoverError(f"OpenCV could not encode {path}")
        with atomic_path(path) as tmp:
            tmp.write_bytes(data.tobytes())
        return path

    def video_frame(self, source: str, bgr: np.ndarray, fps: float) -> None:
        writer = self.videos.get(source)
        if writer is None:
            writer = self.videos[source] = self.stack.enter_context(
                _VideoFile(self.unique(_stream_stem(source), ".mp4"), fps, bgr.shape[1], bgr.shape[0]))
        writer.write(bgr)

    def close(self) -> None:
        self.stack.close()

    def __enter__(self) -> "Drawer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _stream_stem(source: str) -> str:
    """clip.mp4 -> clip, /dev/video0 -> video0, csi://0 -> csi0, rtsp://host:8554/cam -> rtsp_host_8554_cam."""
    if "://" in source and not source.startswith("file://"):
        scheme, rest = source.split("://", 1)
        return "".join(c if c.isalnum() else "_" for c in f"{scheme}_{rest}").strip("_")
    return Path(source.removeprefix("file://")).stem


class _VideoFile:
    """An mp4 written to a temporary sibling (OpenCV picks the container from the suffix, so the
    temporary keeps ``.mp4``) and renamed into place when closed, also after Ctrl-C."""

    def __init__(self, path: Path, fps: float, width: int, height: int):
        self.path, self.fps, self.size = path, fps, (width, height)

    def __enter__(self) -> "_VideoFile":
        cv2 = cv2_module()
        self._atomic = atomic_path(self.path)
        self.tmp = self._atomic.__enter__()
        self.video_tmp = self.tmp.with_name(self.tmp.name + ".mp4")
        self.writer = cv2.VideoWriter(str(self.video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
        return self

    def write(self, bgr: np.ndarray) -> None:
        self.writer.write(bgr)

    def __exit__(self, *exc) -> None:
        self.writer.release()
        if self.video_tmp.exists():
            os.replace(self.video_tmp, self.tmp)
        self._atomic.__exit__(*exc)
