"""Where frames come from: image files, globs, folders, video files, V4L2 cameras, Jetson CSI
cameras and RTSP streams, named like jetson-inference's ``videoSource`` URIs.

    photo.jpg   'shots/*.png'   shots/   clip.mp4   file://clip.mp4
    /dev/video0   v4l2:///dev/video0   csi://0   rtsp://host:8554/stream

Every source yields ``Frame``s: an RGB uint8 (H, W, 3) array, or the reason it could not be
read, so one bad file is reported and skipped instead of ending the run. Images decode with
PIL, as in training; video and cameras decode with OpenCV (imported only when needed, so
tagging images does not need it). CSI and hardware-decoded RTSP go through GStreamer, which
JetPack's OpenCV has and pip's ``opencv-python`` wheels lack.
"""
from __future__ import annotations

import glob
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np

from layover_edge.core.errors import LayoverError
from layover_edge.core.images import open_rgb

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".h264", ".h265"})
GLOB_CHARS = frozenset("*?[")
NO_SUCH_FILE = "no such file or folder"  # the reason of a SOURCE naming nothing (tag exits 3 when all are)


@dataclass
class Frame:
    source: str                     # the file or URI the frame came from
    index: int                      # frame number in a video or stream; 0 for an image
    image: np.ndarray | None        # RGB uint8 (H, W, 3); None when unreadable
    error: str | None = None


@dataclass
class CaptureOptions:
    """Camera and stream settings (jetson-inference's --input-width/--input-height/--input-rate)."""

    width: int = 1280
    height: int = 720
    framerate: int = 30
    flip: int = 0              # nvvidconv flip-method, CSI only
    codec: str = "h264"        # RTSP payload: h264 or h265
    latency_ms: int = 200      # RTSP jitter buffer


def cv2_module():
    try:
        import cv2
    except ImportError:
        raise LayoverError("video, camera and stream sources need OpenCV: pip install opencv-python-headless "
                           "(on a Jetson use JetPack's python3-opencv, which has GStreamer)") from None
    return cv2


@lru_cache(maxsize=1)
def has_gstreamer() -> bool:
    info = cv2_module().getBuildInformation()
    return any(line.split(":")[0].strip() == "GStreamer" and "YES" in line for line in info.splitlines())


def is_jetson() -> bool:
    return Path("/etc/nv_tegra_release").exists()


def csi_pipeline(sensor_id: int, o: CaptureOptions) -> str:
    """nvarguscamerasrc (the Argus ISP) into BGR frames for OpenCV's appsink, as jetson-inference's
    gstCamera builds it; appsink keeps only the newest frame so the tagger never falls behind."""
    return (f"nvarguscamerasrc sensor-id={sensor_id} ! "
            f"video/x-raw(memory:NVMM), width=(int){o.width}, height=(int){o.height}, "
            f"framerate=(fraction){o.framerate}/1, format=(string)NV12 ! "
            f"nvvidconv flip-method={o.flip} ! video/x-raw, format=(string)BGRx ! "
            "videoconvert ! video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")


def rtsp_pipeline(url: str, o: CaptureOptions, jetson: bool) -> str:
    """rtspsrc, depayload, decode (NVDEC through nvv4l2decoder on a Jetson, libav elsewhere), BGR."""
    if o.codec not in ("h264", "h265"):
        raise LayoverError(f"unknown RTSP codec {o.codec!r}; choose h264 or h265")
    decode = ("nvv4l2decoder ! nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert" if jetson
              else f"avdec_{o.codec} ! videoconvert")
    return (f"rtspsrc location={url} latency={o.latency_ms} ! rtp{o.codec}depay ! {o.codec}parse ! {decode} ! "
            "video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")


class Source(ABC):
    """A finite (files) or live (camera, stream) sequence of frames."""

    uri: str
    live: bool = False

    def open(self) -> None:
        """Raise LayoverError with a clear message when the source cannot be opened."""

    @property
    def total(self) -> int | None:
        """Number of frames if known (progress bars), else None."""
        return None

    @abstractmethod
    def frames(self) -> Iterator[Frame]:
        ...

    def close(self) -> None:
        pass


def decode_image(file, max_pixels: int | None = None) -> np.ndarray:
    """RGB uint8 (H, W, 3) of an image file or file object, decoded by PIL as training reads it.
    An image larger than ``max_pixels`` (default: the LAYOVER_MAX_PIXELS limit) is refused from its
    header, before the pixels are decoded."""
    return np.array(open_rgb(file, max_pixels))


def read_image(path: str) -> Frame:
    try:
        return Frame(path, 0, decode_image(path))
    except (OSError, ValueError) as e:
        return Frame(path, 0, None, f"not a readable image: {e}")


class ImageFileSource(Source):
    """Image files read with PIL, batched together."""

    def __init__(self, paths: list[str], uri: str):
        self.paths, self.uri = paths, uri

    @property
    def total(self) -> int:
        return len(self.paths)

    def frames(self) -> Iterator[Frame]:
        for path in self.paths:
            yield read_image(path)


class Capture(Source):
    """Anything OpenCV's VideoCapture opens: a file, a V4L2 device, a GStreamer pipeline, a URL."""

    def __init__(self, uri: str, target: str | int, api: str, live: bool, size: tuple[int, int] | None = None):
        self.uri, self.target, self.api, self.live, self.size = uri, target, api, live, size
        self.cap = None

    def open(self) -> None:
        cv2 = cv2_module()
        cap = cv2.VideoCapture(self.target, getattr(cv2, self.api))
        if self.size is not None:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        if not cap.isOpened():
            cap.release()
            raise LayoverError(f"cannot open {self.uri}: OpenCV ({self.api}) could not open it")
        self.cap = cap

    @property
    def total(self) -> int | None:
        if self.live or self.cap is None:
            return None
        n = int(self.cap.get(cv2_module().CAP_PROP_FRAME_COUNT))
        return n if n > 0 else None

    @property
    def fps(self) -> float:
        fps = self.cap.get(cv2_module().CAP_PROP_FPS) if self.cap is not None else 0.0
        return fps if 0 < fps < 1000 else 30.0

    def frames(self) -> Iterator[Frame]:
        cv2 = cv2_module()
        index = 0
        while True:
            ok, bgr = self.cap.read()
            if not ok:  # end of a file, or a stream that stopped delivering
                return
            yield Frame(self.uri, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            index += 1

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
            self.cap = None


class Missing(Source):
    """A SOURCE that names nothing readable: opening it reports why."""

    def __init__(self, uri: str, reason: str):
        self.uri, self.reason = uri, reason

    def open(self) -> None:
        raise LayoverError(self.reason)

    def frames(self) -> Iterator[Frame]:
        return iter(())


def camera_source(spec: str, o: CaptureOptions) -> Source:
    device = spec.removeprefix("v4l2://")
    if not os.path.exists(device):
        return Missing(spec, f"camera {device} not found (no such device; `ls /dev/video*` lists cameras)")
    index = int(device.removeprefix("/dev/video")) if device.removeprefix("/dev/video").isdigit() else device
    return Capture(spec, index, "CAP_V4L2", live=True, size=(o.width, o.height))


def csi_source(spec: str, o: CaptureOptions) -> Source:
    sensor = spec.removeprefix("csi://")
    if not sensor.isdigit():
        return Missing(spec, f"bad CSI URI {spec!r}: expected csi://N with N the sensor id")
    if not has_gstreamer():
        return Missing(spec, f"{spec} needs OpenCV built with GStreamer: JetPack's python3-opencv has it, pip's "
                             "opencv wheels do not (on a Jetson, pip uninstall opencv-python-headless so the "
                             "system cv2 is imported)")
    return Capture(spec, csi_pipeline(int(sensor), o), "CAP_GSTREAMER", live=True)


def rtsp_source(spec: str, o: CaptureOptions) -> Source:
    if has_gstreamer():
        return Capture(spec, rtsp_pipeline(spec, o, is_jetson()), "CAP_GSTREAMER", live=True)
    return Capture(spec, spec, "CAP_FFMPEG", live=True)


def file_paths(spec: str) -> tuple[list[str], str | None]:
    """The files a path, folder or glob names (sorted), or why it names none. A folder yields its
    images and those of its sub-folders, as the folder data set reads them (hidden ones left out)."""
    if os.path.isdir(spec):
        root = Path(spec)
        paths = sorted(str(p) for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
        return paths, None if paths else f"folder {spec} has no image files ({', '.join(sorted(IMAGE_EXTS))})"
    if os.path.exists(spec):
        return [spec], None
    if GLOB_CHARS & set(spec):
        paths = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
        return paths, None if paths else f"no files match {spec}"
    return [], f"{NO_SUCH_FILE}: {spec}"


def open_sources(specs: list[str], options: CaptureOptions | None = None) -> list[Source]:
    """Sources for the SOURCE arguments, in order; neighbouring image files merge into one source so
    they batch together. A SOURCE that names nothing becomes a ``Missing`` source, reported when
    its turn comes, so the others still run."""
    o = options or CaptureOptions()
    sources: list[Source] = []
    for spec in specs:
        if spec.startswith("csi://"):
            sources.append(csi_source(spec, o))
        elif spec.startswith("v4l2://") or spec.startswith("/dev/video"):
            sources.append(camera_source(spec, o))
        elif spec.startswith(("rtsp://", "rtsps://")):
            sources.append(rtsp_source(spec, o))
        else:
            paths, reason = file_paths(spec.removeprefix("file://"))
            if reason:
                sources.append(Missing(spec, reason))
            for path in paths:
                if Path(path).suffix.lower() in VIDEO_EXTS:
                    sources.append(Capture(path, path, "CAP_ANY", live=False))
                elif sources and isinstance(sources[-1], ImageFileSource):
                    sources[-1].paths.append(path)
                else:
                    sources.append(ImageFileSource([path], spec))
    return sources
