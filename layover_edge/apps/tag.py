"""Tagging images and streams with any backend: frames -> the training transform -> probabilities
-> labels above threshold (jetson-inference's ``--threshold`` / ``--topK=0`` convention).

Finite sources (files, folders, videos) are tagged in batches; live ones (cameras, RTSP) one
frame at a time, for latency. One unreadable file, missing camera or unopenable video is
reported and skipped; Ctrl-C ends the run cleanly with every finished frame written out.

Decoding and preprocessing the next batch run in a second thread while the current batch is
inferred and written (a bounded prefetch, ``prefetch`` batches ahead; one for live sources, so a
camera frame waits at most one batch): on a Jetson the GPU infers while the CPU decodes. Each
stage's seconds are kept, and the summary reports frames/s beside the bound of the slowest stage.
"""
from __future__ import annotations

import itertools
import json
import queue
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm.auto import tqdm

from layover_edge.core import checks
from layover_edge.core.config import MAX_BATCH, Preprocess
from layover_edge.core.errors import LayoverError
from layover_edge.core.io import atomic_path
from layover_edge.core.tables import format_table
from layover_edge.data.pixels import to_batch
from layover_edge.runtime.base import Backend

from .draw import Drawer, Tags, annotate
from .sources import Capture, CaptureOptions, Frame, Source, open_sources


class Preprocessor:
    """The training transform (square resize, to float, normalise) applied to RGB uint8 frames, whether
    they came from PIL or OpenCV, in numpy and Pillow (data/pixels.py: within 2 uint8 levels of
    torchvision's), so tagging needs no torch on the device."""

    def __init__(self, preprocess: Preprocess):
        self.preprocess = preprocess

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        return to_batch(images, self.preprocess)


def select_tags(probs: np.ndarray, labels: list[str], thresholds: np.ndarray, topk: int = 0) -> list[Tags]:
    """Per image, the labels whose probability reaches their threshold, highest first; ``topk`` > 0
    keeps at most that many (0 keeps all, as jetson-inference's --topK=0)."""
    out = []
    for row in probs:
        hits = np.flatnonzero(row >= thresholds)
        hits = hits[np.argsort(-row[hits], kind="stable")]
        if topk > 0:
            hits = hits[:topk]
        out.append([(labels[k], float(row[k])) for k in hits])
    return out


def label_records(tags: Tags) -> list[dict]:
    """The ``labels`` of a frame's JSON line."""
    return [{"label": name, "score": round(score, 4)} for name, score in tags]


@dataclass
class TagSummary:
    frames: int = 0
    tags: int = 0
    per_label: Counter = field(default_factory=Counter)
    unreadable: list[dict] = field(default_factory=list)
    sources: int = 0
    seconds: float = 0.0
    inference_seconds: float = 0.0
    stages: dict = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))  # seconds per stage
    interrupted: bool = False
    alpha_sum: float = 0.0      # the RM gate over the tagged frames, where the backend reports it
    alpha_frames: int = 0

    def bound(self) -> tuple[str | None, float | None]:
        """The pipeline's slowest stage (``read``: decode + preprocess, the prefetch thread's work;
        ``tag``: inference + output) and the frames/s it allows: the most the two threads can reach."""
        seconds = {name: sum(self.stages[s] for s in parts) for name, parts in PIPELINE.items()}
        name = max(seconds, key=seconds.get)
        return (name, self.frames / seconds[name]) if self.frames and seconds[name] > 0 else (None, None)

    def to_dict(self) -> dict:
        slowest, bound = self.bound()
        return {"frames": self.frames, "tags": self.tags, "sources": self.sources,
                "unreadable": self.unreadable, "seconds": round(self.seconds, 3),
                "frames_per_second": round(self.frames / self.seconds, 2) if self.seconds else 0.0,
                "inference_seconds": round(self.inference_seconds, 3),
                "stage_seconds": {k: round(v, 3) for k, v in self.stages.items()}, "slowest_stage": slowest,
                "slowest_stage_bound_fps": round(bound, 2) if bound else None, "interrupted": self.interrupted,
                "alpha_mean": round(self.alpha_sum / self.alpha_frames, 4) if self.alpha_frames else None,
                "per_label": dict(self.per_label.most_common())}


STAGES = ("decode", "preprocess", "inference", "output")
PIPELINE = {"read": ("decode", "preprocess"), "tag": ("inference", "output")}  # one thread each


def chunks(frames: Iterator[Frame], size: int) -> Iterator[list[Frame]]:
    while chunk := list(itertools.islice(frames, size)):
        yield chunk


@dataclass
class Batch:
    """A decoded chunk of frames, its preprocessed tensor (None when no frame was readable) and
    what decoding and preprocessing it took."""

    frames: list[Frame]
    x: np.ndarray | None
    decode_s: float
    preprocess_s: float


class Prefetcher:
    """Decodes and preprocesses batches in a thread, at most ``depth`` ahead of the consumer.
    Iterating yields the batches in order; an exception in the thread is raised in the consumer;
    ``close`` stops the thread (Ctrl-C in the consumer, or the end)."""

    _END = object()

    def __init__(self, make: Iterator[Batch], depth: int):
        self.make = make
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._work, daemon=True, name="tag-prefetch")
        self.thread.start()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for batch in self.make:
                if not self._put(batch):
                    return
        except BaseException as e:  # handed to the consumer, which raises it
            self._put(e)
            return
        self._put(self._END)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


@dataclass
class Tagger:
    """Tags frames from sources; ``write`` receives one JSON-ready dict per frame."""

    backend: Backend
    write: Callable[[dict], None]
    threshold: float | None = None
    topk: int = 0
    batch_size: int = 8
    drawer: Drawer | None = None
    progress: bool = True
    prefetch: int = 2           # batches decoded ahead in a thread; 0: one stage after another

    def __post_init__(self) -> None:
        if self.threshold is not None:
            checks.probability(self.threshold, "threshold")
        checks.nonnegative_int(self.topk, "topk (0: every tag above its threshold)")
        checks.integer(self.batch_size, "batch size", 1, MAX_BATCH)
        if self.prefetch < 0:
            raise LayoverError("--prefetch must be 0 (no decoding ahead) or positive")
        info = self.backend.info
        self.thresholds = info.threshold_array(self.threshold)
        self.preprocess = Preprocessor(info.preprocess)
        self.summary = TagSummary()

    def skip(self, source: str, frame: int, reason: str) -> None:
        tqdm.write(f"skipping {source}: {reason}", file=sys.stderr)
        self.summary.unreadable.append({"source": source, "frame": frame, "reason": reason})
        self.write({"source": source, "frame": frame, "error": reason})

    def run(self, sources: list[Source]) -> TagSummary:
        start = time.perf_counter()
        try:
            for source in sources:
                self.run_source(source)
        except KeyboardInterrupt:
            self.summary.interrupted = True
            tqdm.write("interrupted: finishing output", file=sys.stderr)
        finally:
            self.summary.seconds = time.perf_counter() - start
            if self.drawer is not None:
                self.drawer.close()
        return self.summary

    def run_source(self, source: Source) -> None:
        try:
            source.open()
        except LayoverError as e:
            self.skip(source.uri, 0, str(e))
            return
        self.summary.sources += 1
        size = 1 if source.live else self.batch_size
        made = self.batches(source.frames(), size)
        prefetcher = Prefetcher(made, 1 if source.live else self.prefetch) if self.prefetch else None
        rate, last = 0.0, time.perf_counter()
        declared, read = source.total, 0
        try:
            with tqdm(total=declared, desc=source.uri[-40:], unit="frame", disable=not self.progress,
                      dynamic_ncols=True) as bar:
                for batch in prefetcher if prefetcher is not None else made:
                    self.summary.stages["decode"] += batch.decode_s
                    self.summary.stages["preprocess"] += batch.preprocess_s
                    self.tag_batch(batch, source, rate)
                    now = time.perf_counter()
                    n, dt, last = len(batch.frames), now - last, now
                    rate = n / dt if not rate else 0.9 * rate + 0.1 * n / dt  # smoothed, drawn on video
                    read += n
                    bar.update(n)  # the bar's own rate is the live frames/s
                    bar.set_postfix_str(f"{self.summary.tags} tags", refresh=False)
        finally:
            if prefetcher is not None:
                prefetcher.close()  # before the source closes: the thread may be reading it
            source.close()
        if isinstance(source, Capture) and not source.live:  # a video file: did it end where its header says?
            if read == 0:
                self.skip(source.uri, 0, "no frame could be decoded (an empty or damaged video)")
            elif declared and read < declared:
                self.skip(source.uri, read, f"the video ends after {read} of the {declared} frames its header "
                                            f"declares (truncated or damaged); the {read} read were tagged")

    def batches(self, frames: Iterator[Frame], size: int) -> Iterator[Batch]:
        """Decode ``size`` frames, preprocess the readable ones: the stages that run ahead."""
        decoded = chunks(frames, size)
        while True:
            t0 = time.perf_counter()
            chunk = next(decoded, None)
            t1 = time.perf_counter()
            if chunk is None:
                return
            good = [f.image for f in chunk if f.error is None]
            x = self.preprocess(good) if good else None
            yield Batch(chunk, x, t1 - t0, time.perf_counter() - t1)

    def tag_batch(self, batch: Batch, source: Source, rate: float) -> None:
        t0 = time.perf_counter()
        for f in batch.frames:
            if f.error is not None:
                self.skip(f.source, f.index, f.error)
        good = [f for f in batch.frames if f.error is None]
        if not good:
            self.summary.stages["output"] += time.perf_counter() - t0
            return
        t1 = time.perf_counter()
        probs, alpha = self.backend.predict_with_alpha(batch.x)
        t2 = time.perf_counter()
        self.summary.inference_seconds += t2 - t1
        self.summary.stages["inference"] += t2 - t1
        if alpha is not None:
            self.summary.alpha_sum += float(alpha.sum())
            self.summary.alpha_frames += len(alpha)
        for f, tags in zip(good, select_tags(probs, self.backend.info.labels, self.thresholds, self.topk)):
            self.write({"source": f.source, "frame": f.index, "labels": label_records(tags)})
            self.summary.frames += 1
            self.summary.tags += len(tags)
            self.summary.per_label.update(name for name, _ in tags)
            if self.drawer is not None:
                self.draw(f, tags, source, rate)
        self.summary.stages["output"] += (t1 - t0) + (time.perf_counter() - t2)

    def draw(self, f: Frame, tags: Tags, source: Source, rate: float) -> None:
        if isinstance(source, Capture):
            self.drawer.video_frame(f.source, annotate(f.image, tags, rate or None), source.fps)
        else:
            self.drawer.image(f.source, annotate(f.image, tags))


class JsonLines:
    """One JSON line per record: to stdout (``-``) or a pipe or device, flushed per record, or to a
    file that appears under its name when ``stack`` closes. ``failed``
    says whether writing the output itself failed (then it may end mid-line)."""

    def __init__(self, jsonl: str | Path, stack: ExitStack):
        self.name = "stdout" if str(jsonl) == "-" else str(jsonl)
        path = Path(jsonl)
        self.streamed = str(jsonl) == "-" or (path.exists() and not path.is_file() and not path.is_dir())
        if str(jsonl) == "-":
            self.stream = sys.stdout
        else:  # a device or FIFO is opened as it is: an atomic rename would replace it with a file
            self.stream = stack.enter_context(open(jsonl if self.streamed else stack.enter_context(atomic_path(jsonl)),
                                                   "w"))
        self.failed = False

    def __call__(self, record: dict) -> None:
        try:
            self.stream.write(json.dumps(record) + "\n")
            if self.streamed:
                self.stream.flush()  # downstream readers (jq, a pipe) see each frame as it is tagged
        except OSError as e:  # a full disk behind the output, a closed pipe: say which output
            self.failed = True
            raise OSError(e.errno, e.strerror, e.filename or self.name) from None


def tag(backend: Backend, sources: list[str], jsonl: str | Path = "-", save: str | Path | None = None,
        threshold: float | None = None, topk: int = 0, batch_size: int = 8,
        capture: CaptureOptions | None = None, progress: bool = True, prefetch: int = 2) -> dict:
    """Tag every frame of ``sources`` (files, globs, folders, videos, cameras, streams): one JSON
    line per frame to ``jsonl`` (``JsonLines``: a file appears under its name at the end, holding
    every frame tagged, also when a later frame fails: the failure is raised after it is written),
    drawn frames into ``save``; ``prefetch`` batches are decoded ahead in a thread (0: none).
    Returns the summary."""
    opened = open_sources(list(sources), capture)
    failure: Exception | None = None
    with ExitStack() as stack:
        write = JsonLines(jsonl, stack)
        tagger = Tagger(backend, write, threshold, topk, batch_size, None, progress, prefetch)
        try:
            tagger.drawer = Drawer(save) if save else None
            summary = tagger.run(opened).to_dict()
        except Exception as e:
            if write.failed:  # the output itself failed: it may end mid-line, so publish nothing (the old file stays)
                raise
            failure = e  # keep what was tagged: the file is completed with those lines, then e is raised
    if failure is not None:
        raise failure
    return summary | {"backend": backend.metadata()}


def summary_text(summary: dict, labels: list[str], table: bool = True) -> str:
    """The summary line, then (with ``table``) the tags per label and the unreadable inputs."""
    head = (f"tagged {summary['frames']} frames from {summary['sources']} source(s) in {summary['seconds']:.1f} s "
            f"({summary['frames_per_second']:.1f} frames/s"
            + (f", at most {summary['slowest_stage_bound_fps']:.1f} by its slowest stage, {summary['slowest_stage']}"
               if summary.get("slowest_stage") else "")
            + "; " + ", ".join(f"{k} {v:.1f} s" for k, v in summary["stage_seconds"].items()) + "), "
            f"{summary['tags']} tags, {len(summary['unreadable'])} unreadable"
            + (f", mean α {summary['alpha_mean']:.2f}" if summary.get("alpha_mean") is not None else "")
            + (", interrupted" if summary["interrupted"] else ""))
    if not table:
        return head
    counts = format_table({name: {"tags": summary["per_label"].get(name, 0)} for name in labels}, ("tags",), "Label")
    bad = "".join(f"\n- {u['source']}: {u['reason']}" for u in summary["unreadable"])
    return f"{head}\n\n{counts}" + (f"\n\nUnreadable:{bad}" if bad else "")
