"""The bad-input and fault battery: every case runs the real CLI as a subprocess (corrupt and
hostile files, wrong types, impossible arguments, read-only and full targets, kill -9 and resume,
broken pipes, concurrent writers) and asserts its exit code, exactly one ``error:`` line naming the
file or argument (none where the run must succeed), no traceback, and that earlier output is intact.

The CASES table is the battery: ``LAYOVER_BATTERY_TABLE=table.md pytest tests/test_battery.py``
also writes it as a Markdown table with what each case observed. Cases run two at a time in a
thread pool (the machine's cores; each subprocess uses one torch thread), longest first, so the
battery costs about one minute of CI time; argparse cases never import torch.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from faults import fill, png16

from layover_edge.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_NO_SPACE,
    EXIT_OS_ERROR,
)

ENV = os.environ | {"HF_HUB_OFFLINE": "1", "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
MODEL = ["--backbone", "test_convnext", "--weights", "none", "--image-size", "32"]
DATA = ["--data-image-size", "32", "--train-size", "24", "--val-size", "16", "--num-classes", "5"]
BIG = ["--data-image-size", "32", "--train-size", "200", "--val-size", "16", "--num-classes", "5"]
RUN = [*MODEL, *DATA, "--method", "rm", "--recipe", "paper", "--batch-size", "4", "--quiet"]  # epoch runs, which keep last.pt to resume
EXTRACT = [*MODEL, *BIG, "--batch-size", "2", "--quiet"]  # 100 batches: long next to polling; one batch size, one result
MANY = 1000   # frames of the folder a reader leaves or Ctrl-C interrupts
LONG_RUN = 100  # epochs of a run that is stopped or killed while it trains: long next to polling


@dataclass
class Outcome:
    code: int | None
    out: str = ""
    err: str = ""
    intact: list[tuple[str, bool]] = field(default_factory=list)  # (what was checked, whether it held)
    skip: str | None = None
    seconds: float = 0.0  # reported in the table, never asserted on


def cli(*args, timeout: float = 300, **kw) -> Outcome:
    done = subprocess.run([sys.executable, "-m", "layover_edge", *map(str, args)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, **kw)
    return Outcome(done.returncode, done.stdout, done.stderr)


def start(*args, **kw) -> subprocess.Popen:
    # SIGINT as a terminal's foreground process has it: a shell runs background jobs with SIGINT ignored,
    # and a child inherits that (Python then installs no KeyboardInterrupt handler at all)
    return subprocess.Popen([sys.executable, "-m", "layover_edge", *map(str, args)], env=ENV, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kw)


def wait_for(predicate: Callable[[], bool], proc: subprocess.Popen, what: str) -> None:
    """Poll until ``predicate`` holds; fails if the process ends first (no clock is asserted on)."""
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (exit {proc.returncode}) before {what}")
        time.sleep(0.005)


def epochs_done(run: Path) -> int:
    try:
        return len(json.loads((run / "metrics.json").read_text())["history"])
    except (OSError, ValueError, KeyError):
        return 0


def images_done(cache: Path) -> int:
    try:
        return json.loads((cache / "train" / "progress.json").read_text())["done"]
    except (OSError, ValueError, KeyError):
        return 0


def digest(folder: Path) -> dict[str, bytes]:
    """Every file's bytes under ``folder`` (relative name -> content), locks and temporaries aside."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def history(run: Path) -> list[dict]:
    return [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads((run / "metrics.json").read_text())["history"]]


def checkpoint_content(folder: Path) -> tuple[dict[str, bytes], dict]:
    """A checkpoint's tensor files, byte for byte, and its config.json without the training seconds."""
    doc = json.loads((folder / "config.json").read_text())
    doc["metrics"].pop("seconds", None)
    return {k: v for k, v in digest(folder).items() if k.endswith(".safetensors")}, doc


# ------------------------------------------------------------------------------------ shared inputs

class Assets:
    """Inputs built once in this process (a checkpoint, a complete feature cache, images) and
    results of the CLI that several cases share (computed once, on first use)."""

    def __init__(self, root: Path):
        from PIL import Image

        from layover_edge.core.config import ModelConfig
        from layover_edge.data.synthetic import SyntheticScenes
        from layover_edge.export.onnx import export_onnx
        from layover_edge.models import build_model, save_checkpoint
        from layover_edge.training.features import extract_features
        self.root = root
        classes = SyntheticScenes("val", 16, 32, 5).classes
        cfg = ModelConfig(backbone="test_convnext", num_classes=5, method="rm", weights="none", image_size=32,
                          labels=classes)
        torch.manual_seed(0)
        self.ckpt = save_checkpoint(build_model(cfg), cfg, root / "ckpt")
        self.cache = root / "cache"
        for split, n in (("train", 24), ("val", 16)):
            extract_features(cfg, SyntheticScenes(split, n, 32, 5), split, self.cache / split, progress=False)
        self.images = root / "images"
        self.images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(self.images / f"{i}.png")
        # The tag cases run the torch-free device path (ONNX Runtime, half a second a run) unless the
        # checkpoint is the point; the checkpoint's own cases fail before torch is imported.
        self.onnx = export_onnx(self.ckpt, root / "model.onnx")
        # More JSON lines than a pipe buffers (64 KiB): a tagger writing into a pipe nobody reads
        # blocks before it can finish, so Ctrl-C and a closing reader always meet it mid-run.
        self.many = root / "many"
        self.many.mkdir()
        for i in range(MANY):
            os.link(self.images / f"{i % 6}.png", self.many / f"{i:04d}.png")
        self._lock, self._done = threading.Lock(), {}

    def once(self, key: str, make: Callable[[], Path]) -> Path:
        with self._lock:
            if key not in self._done:
                self._done[key] = make()
            return self._done[key]

    def base_run(self) -> Path:
        """A finished 3-epoch RM run from the cache (the run the resume cases try to continue)."""
        def make():
            out = self.root / "base-run"
            done = cli("train", *RUN, "--epochs", "3", "--cache", self.cache, "--out", out)
            assert done.code == 0, done.err
            return out
        return self.once("base", make)

    def reference_cache(self) -> Path:
        """An uninterrupted `features` run on 200 images (what interrupted ones must equal)."""
        def make():
            cache = self.root / "reference-cache"
            done = cli("features", *EXTRACT, "--cache", cache)
            assert done.code == 0, done.err
            return cache
        return self.once("reference-cache", make)

    def copy(self, what: Path, to: Path) -> Path:
        shutil.copytree(what, to)
        return to


def exploit(marker: Path) -> bytes:
    """A pickle that would create ``marker`` when unpickled: what weights_only must never run."""
    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('pwned')",))
    return pickle.dumps({"state_dict": Exploit()})


def mount(where: Path, size: str, read_only: bool = False) -> str | None:
    """Mount a tmpfs of ``size`` at ``where``; the reason when this process may not (then skip)."""
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}" + (",ro" if read_only else ""), "tmpfs",
                           str(where)], capture_output=True, text=True)
    return None if done.returncode == 0 else f"cannot mount a tmpfs here ({done.stderr.strip()}): needs root"


def unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], check=False)


# ------------------------------------------------------------------------------------------- cases

def checkpoint_with(change: Callable[[dict], None]):
    """tag with a copy of the checkpoint whose config.json says something impossible."""
    def run(tmp: Path, a: Assets) -> Outcome:
        ckpt = a.copy(a.ckpt, tmp / "ckpt")
        doc = json.loads((ckpt / "config.json").read_text())
        change(doc)
        (ckpt / "config.json").write_text(json.dumps(doc))
        return cli("tag", a.images, "--model", ckpt, "--quiet")
    return run


def truncated_head(tmp: Path, a: Assets) -> Outcome:
    ckpt = a.copy(a.ckpt, tmp / "ckpt")
    data = (ckpt / "head.safetensors").read_bytes()
    (ckpt / "head.safetensors").write_bytes(data[: len(data) // 2])
    return cli("tag", a.images, "--model", ckpt, "--quiet")


def unrelated_onnx(tmp: Path, a: Assets) -> Outcome:
    import onnx
    from onnx import TensorProto, helper

    from layover_edge.artifacts.checkpoint import read_config
    from layover_edge.artifacts.onnx_metadata import checkpoint_metadata, set_metadata
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 10])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    set_metadata(proto, checkpoint_metadata(read_config(a.ckpt)[0], "portable", 18, []))
    onnx.save(proto, tmp / "model.onnx")
    return cli("tag", a.images, "--model", tmp / "model.onnx", "--quiet")


def bomb(tmp: Path, a: Assets) -> Outcome:
    from PIL import Image
    Image.new("1", (10000, 10000)).save(tmp / "bomb.png")  # 10^8 pixels in a few kilobytes
    out = cli("tag", tmp / "bomb.png", "--model", a.onnx, "--quiet")
    out.intact.append(("bomb.png is a few kB", (tmp / "bomb.png").stat().st_size < 100_000))
    return out


def weights_exploit(tmp: Path, a: Assets) -> Outcome:
    (tmp / "weights.pt").write_bytes(exploit(tmp / "pwned"))
    out = cli("features", *MODEL[:2], "--weights", tmp / "weights.pt", "--image-size", "32", *DATA,
              "--cache", tmp / "c", "--quiet")
    out.intact.append(("the pickle's code never ran", not (tmp / "pwned").exists()))
    return out


def folder_latin1(tmp: Path, a: Assets) -> Outcome:
    root = a.copy(a.images, tmp / "photos")
    (root / "train.csv").write_bytes("path,labels\n0.png,caf\xe9\n1.png,th\xe9\n".encode("latin-1"))
    return cli("features", *MODEL, "--data", "folder", "--data-root", root, "--cache", tmp / "c", "--quiet")


def voc_latin1(tmp: Path, a: Assets) -> Outcome:
    main = tmp / "VOC2007" / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "trainval.txt").write_text("000001\n")
    for name in ("aeroplane", "bicycle"):
        (main / f"{name}_trainval.txt").write_bytes("000001  1 \xe9t\xe9\n".encode("latin-1"))
    return cli("features", *MODEL, "--data", "voc2007", "--data-root", tmp, "--cache", tmp / "c", "--quiet")


def coco(change: Callable[[dict], None]):
    def run(tmp: Path, a: Assets) -> Outcome:
        doc = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
               "annotations": [{"id": 10, "image_id": 1, "category_id": 1}, {"id": 11, "image_id": 2, "category_id": 2}],
               "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
        change(doc)
        (tmp / "annotations").mkdir()
        (tmp / "annotations" / "instances_train2014.json").write_text(json.dumps(doc))
        return cli("features", *MODEL, "--data", "coco2014", "--data-root", tmp, "--cache", tmp / "c", "--quiet")
    return run


def damaged_cache(damage: Callable[[Path], None]):
    """train from a copy of the complete cache with one array damaged: refused before training."""
    def run(tmp: Path, a: Assets) -> Outcome:
        cache = a.copy(a.cache, tmp / "cache")
        damage(cache / "train")
        return cli("train", *RUN, "--epochs", "2", "--cache", cache, "--out", tmp / "run")
    return run


def nan_row(split: Path) -> None:
    z = np.load(split / "z.npy", mmap_mode="r+")
    z[3, 5] = np.nan
    z.flush()


def truncate(name: str):
    def damage(split: Path) -> None:
        data = (split / name).read_bytes()
        (split / name).write_bytes(data[: len(data) // 2])
    return damage


def object_array(split: Path) -> None:
    np.save(split / "z.npy", np.array([{"x": 1}] * 24, dtype=object), allow_pickle=True)


def wrong_shape(split: Path) -> None:
    np.save(split / "z.npy", np.zeros((24, 7), np.float16))


def resume_with(*options, state: Callable[[Path], None] | None = None, marker: str | None = None):
    """--resume of a copy of the base run with other options (or a replaced last.pt): refused before
    any work (a fresh --cache stays unmade), the run's files untouched."""
    def run(tmp: Path, a: Assets) -> Outcome:
        out = a.copy(a.base_run(), tmp / "run")
        shutil.rmtree(out / "features", ignore_errors=True)
        if state:
            state(out / "last.pt")
        before = digest(out)
        done = cli("train", *RUN, "--epochs", "3", "--cache", tmp / "fresh-cache", "--out", out, "--resume", *options)
        done.intact += [("run folder unchanged", digest(out) == before),
                        ("no feature extraction started", not (tmp / "fresh-cache").exists())]
        if marker:
            done.intact.append(("the pickle's code never ran", not (out / marker).exists()))
        return done
    return run


def foreign_state(path: Path) -> None:
    torch.save(torch.zeros(3), path)


def exploit_state(path: Path) -> None:
    """A last.pt as torch.save writes one, whose pickle would run code."""
    class Exploit:
        def __reduce__(self):
            return (exec, (f"open({str(path.parent / 'pwned')!r}, 'w').write('pwned')",))
    torch.save({"model": Exploit()}, path)


def existing_run(tmp: Path, a: Assets) -> Outcome:
    out = a.copy(a.base_run(), tmp / "run")
    before = digest(out / "best")
    done = cli("train", *RUN, "--epochs", "3", "--cache", a.cache, "--out", out)
    done.intact.append(("best/ unchanged", digest(out / "best") == before))
    return done


def int8_bad_calibration(tmp: Path, a: Assets) -> Outcome:
    import onnx
    np.save(tmp / "calib.npy", np.zeros((64, 3, 32, 32), np.float32))
    data = (tmp / "calib.npy").read_bytes()
    (tmp / "calib.npy").write_bytes(data[: len(data) // 3])
    done = cli("export", a.ckpt, "--out", tmp / "deploy", "--form", "portable", "--int8", "--calib-data",
               tmp / "calib.npy", "--quiet")
    try:
        onnx.checker.check_model(str(tmp / "deploy" / "model.onnx"))
        ok = True
    except Exception:
        ok = False
    done.intact += [("model.onnx complete and valid", ok), ("no model.int8.onnx", not (tmp / "deploy/model.int8.onnx").exists())]
    return done


def path_is_file(verb_args: Callable[[Path, Assets], list]):
    def run(tmp: Path, a: Assets) -> Outcome:
        (tmp / "taken").write_text("keep me")
        done = cli(*verb_args(tmp, a))
        done.intact.append(("the file in the way is untouched", (tmp / "taken").read_text() == "keep me"))
        return done
    return run


def jsonl_is_dir(tmp: Path, a: Assets) -> Outcome:
    (tmp / "tags.jsonl").mkdir()
    (tmp / "tags.jsonl" / "inside.txt").write_text("keep me")
    done = cli("tag", a.images, "--model", a.onnx, "--jsonl", tmp / "tags.jsonl", "--quiet")
    done.intact.append(("the folder in the way is untouched", (tmp / "tags.jsonl/inside.txt").read_text() == "keep me"))
    return done


def read_only(verb_args: Callable[[Path, Assets], list]):
    def run(tmp: Path, a: Assets) -> Outcome:
        fs = tmp / "ro"
        reason = mount(fs, "1m", read_only=True)
        if reason:
            return Outcome(None, skip=reason)
        try:
            return cli(*verb_args(fs, a))
        finally:
            unmount(fs)
    return run


def features_full_disk(tmp: Path, a: Assets) -> Outcome:
    """features into a 64 KiB file system: ENOSPC up front (preallocated arrays, no SIGBUS); after
    space is freed the same command completes to the uninterrupted cache, byte for byte."""
    fs = tmp / "fs"
    reason = mount(fs, "64k")
    if reason:
        return Outcome(None, skip=reason)
    try:
        done = cli("features", *EXTRACT, "--cache", fs / "cache")
        subprocess.run(["mount", "-o", "remount,size=16m", str(fs)], check=True)
        again = cli("features", *EXTRACT, "--cache", fs / "cache")
        ref = digest(a.reference_cache() / "train")
        got = digest(fs / "cache" / "train")
        done.intact += [("after freeing space the cache completes", again.code == 0),
                        ("and equals the uninterrupted one", _arrays(got) == _arrays(ref))]
        return done
    finally:
        unmount(fs)


def _arrays(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.endswith(".npy")}


def train_full_disk(tmp: Path, a: Assets) -> Outcome:
    fs = tmp / "fs"
    reason = mount(fs, "256k")  # the first best/ (with its 0.8 MB random backbone) does not fit
    if reason:
        return Outcome(None, skip=reason)
    try:
        (fs / "notes.txt").write_text("keep me")
        done = cli("train", *RUN, "--epochs", "2", "--cache", a.cache, "--out", fs / "run")
        done.intact += [("earlier file intact", (fs / "notes.txt").read_text() == "keep me"),
                        ("no half-written best/", not (fs / "run" / "best").exists())]
        return done
    finally:
        unmount(fs)


def tag_full_disk(tmp: Path, a: Assets) -> Outcome:
    fs = tmp / "fs"
    reason = mount(fs, "64k")
    if reason:
        return Outcome(None, skip=reason)
    try:
        (fs / "tags.jsonl").write_text('{"old": true}\n')
        fill(fs)
        done = cli("tag", a.many, "--model", a.onnx, "--jsonl", fs / "tags.jsonl", "--quiet")
        done.intact.append(("the previous tags.jsonl intact", (fs / "tags.jsonl").read_text() == '{"old": true}\n'))
        return done
    finally:
        unmount(fs)


def stdout_full(tmp: Path, a: Assets) -> Outcome:
    if not (os.path.exists("/dev/full") and stat.S_ISCHR(os.stat("/dev/full").st_mode)):
        return Outcome(None, skip="no /dev/full character device here")
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "layover_edge", "tag", str(a.images), "--model", str(a.onnx),
                               "--quiet"], stdout=full, stderr=subprocess.PIPE, text=True, env=ENV, timeout=300)
    return Outcome(done.returncode, "", done.stderr)


def broken_pipe(tmp: Path, a: Assets) -> Outcome:
    proc = start("tag", a.many, "--model", a.onnx, "--batch-size", "1", "--quiet", stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # `| head -1`
    err = proc.stderr.read()
    proc.wait()
    done = Outcome(proc.returncode, first, err)
    done.intact.append(("the line read is a complete JSON record", "labels" in json.loads(first)))
    return done


def ctrl_c(tmp: Path, a: Assets) -> Outcome:
    proc = start("tag", a.many, "--model", a.onnx, "--batch-size", "1", "--quiet", stdout=subprocess.PIPE,
                 stderr=subprocess.PIPE)
    lines = [proc.stdout.readline()]
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    lines += out.splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    done = Outcome(proc.returncode, out, err)
    done.intact += [("every line written is a complete record", all("labels" in r for r in records)),
                    ("stopped before the end", len(records) < MANY), ("the summary says interrupted", "interrupted" in err)]
    return done


def later_frame_fails(tmp: Path, a: Assets) -> Outcome:
    (tmp / "drawn" / "3.jpg").mkdir(parents=True)  # drawing frame 3 fails: a folder holds its name
    (tmp / "drawn" / "3.jpg" / "x").write_text("x")
    done = cli("tag", a.images, "--model", a.onnx, "--jsonl", tmp / "tags.jsonl", "--save", tmp / "drawn", "--quiet")
    lines = (tmp / "tags.jsonl").read_text().splitlines() if (tmp / "tags.jsonl").is_file() else []
    frames = [json.loads(line)["source"] for line in lines]
    done.intact += [("tags.jsonl holds frames 0-3", [Path(f).name for f in frames] == ["0.png", "1.png", "2.png", "3.png"]),
                    ("frames 0-2 drawn", all((tmp / "drawn" / f"{i}.jpg").is_file() for i in range(3)))]
    return done


def kill_train_and_resume(tmp: Path, a: Assets) -> Outcome:
    """RM from the cache, LONG_RUN epochs: killed with SIGKILL mid-run and resumed, every epoch and the final
    weights equal the uninterrupted run's, bit for bit."""
    args = [*RUN, "--epochs", LONG_RUN, "--cache", a.cache]
    straight = start("train", *args, "--out", tmp / "straight", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    killed = start("train", *args, "--out", tmp / "killed", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: epochs_done(tmp / "killed") >= 2, killed, "two epochs were recorded")
    killed.kill()
    killed.wait()
    at = epochs_done(tmp / "killed")
    resumed = cli("train", *args, "--out", tmp / "killed", "--resume")
    straight.wait()
    done = Outcome(resumed.code, resumed.out, resumed.err)
    same = straight.returncode == 0 and resumed.code == 0
    done.intact += [(f"killed mid-run (after epoch {at} of {LONG_RUN})",
                     killed.returncode == -signal.SIGKILL and at < LONG_RUN),
                    ("every epoch equal", same and history(tmp / "killed") == history(tmp / "straight")),
                    ("best/ tensors equal byte for byte",
                     same and checkpoint_content(tmp / "killed/best") == checkpoint_content(tmp / "straight/best"))]
    return done


def kill_features_and_resume(tmp: Path, a: Assets) -> Outcome:
    args = EXTRACT
    killed = start("features", *args, "--cache", tmp / "cache", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: images_done(tmp / "cache") >= 8, killed, "8 images were extracted")
    killed.kill()
    killed.wait()
    at = images_done(tmp / "cache")
    resumed = cli("features", *args, "--cache", tmp / "cache")
    ref = _arrays(digest(a.reference_cache() / "train"))
    resumed.intact += [(f"killed mid-run (after {at} of 200 images)", killed.returncode == -signal.SIGKILL and at < 200),
                       ("cache equals the uninterrupted one", _arrays(digest(tmp / "cache" / "train")) == ref)]
    return resumed


def second_extraction(tmp: Path, a: Assets) -> Outcome:
    """A second `features` into a cache another process is extracting (held mid-run with SIGSTOP) is
    refused; the first then completes to the uninterrupted cache."""
    args = [*EXTRACT, "--cache", tmp / "cache"]
    first = start("features", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: images_done(tmp / "cache") >= 8, first, "8 images were extracted")
    first.send_signal(signal.SIGSTOP)
    try:
        second = cli("features", *args)
    finally:
        first.send_signal(signal.SIGCONT)
    first.wait()
    ref = _arrays(digest(a.reference_cache() / "train"))
    second.intact += [("the first completes", first.returncode == 0),
                      ("to the uninterrupted cache", _arrays(digest(tmp / "cache" / "train")) == ref)]
    return second


def serving(run: Callable[[Path, Assets], Outcome]) -> Callable[[Path, Assets], Outcome]:
    """A ``serve`` case that gets past the model, so it needs the serve extra."""
    def case(tmp: Path, a: Assets) -> Outcome:
        if importlib.util.find_spec("pytriton") is None:
            return Outcome(None, skip="the serve extra (nvidia-pytriton) is not installed")
        return run(tmp, a)
    return case


@serving
def serve_log_in_missing_folder(tmp: Path, a: Assets) -> Outcome:
    return cli("serve", a.onnx, "--log-file", tmp / "missing" / "triton.log", "--http-port", "0", "--grpc-port", "0",
               "--metrics-port", "0")


@serving
def serve_port_in_use(tmp: Path, a: Assets) -> Outcome:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return cli("serve", a.onnx, "--http-port", busy.getsockname()[1], "--grpc-port", "0", "--metrics-port", "0")


def second_trainer(tmp: Path, a: Assets) -> Outcome:
    args = [*RUN, "--epochs", LONG_RUN, "--cache", a.cache, "--out", tmp / "run"]
    first = start("train", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: epochs_done(tmp / "run") >= 1, first, "an epoch was recorded")
    first.send_signal(signal.SIGSTOP)
    try:
        second = cli("train", *args, "--resume")
    finally:
        first.send_signal(signal.SIGCONT)
    first.wait()
    second.intact += [("the first completes all its epochs", first.returncode == 0 and epochs_done(tmp / "run") == LONG_RUN)]
    return second


# ---------------------------------------------------------------- issue 19: models that are wrong but answer

def head_with(change: Callable[[dict], None], verb: str = "tag"):
    """``tag`` (or ``eval``) with a copy of the checkpoint whose head.safetensors was changed."""
    def run(tmp: Path, a: Assets) -> Outcome:
        from safetensors.torch import load_file, save_file

        from layover_edge.artifacts.checkpoint import FORMAT
        ckpt = a.copy(a.ckpt, tmp / "ckpt")
        state = load_file(str(ckpt / "head.safetensors"))
        change(state)
        save_file(state, str(ckpt / "head.safetensors"), metadata={"format": FORMAT})
        if verb == "eval":
            return cli("eval", ckpt, *DATA, "--quiet")
        return cli("tag", a.images, "--model", ckpt, "--quiet")
    return run


def set_nan(state: dict) -> None:
    state["fc.weight"][0, 0] = float("nan")


def lying_precision(tmp: Path, a: Assets) -> Outcome:
    """An FP32 graph with a changed weight whose metadata claims int8: parity's int8 gates (1 mAP point)
    would pass it; the graph itself has no Q/DQ node."""
    import onnx
    from onnx import numpy_helper
    proto = onnx.load(str(a.onnx))
    for init in proto.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.dtype == np.float32 and w.ndim == 2:
            init.CopyFrom(numpy_helper.from_array(w * 1.05, init.name))
            break
    for prop in proto.metadata_props:
        if prop.key == "precision":
            prop.value = json.dumps("int8")
    onnx.save(proto, str(tmp / "model.int8.onnx"))
    return cli("parity", a.ckpt, "--against", tmp / "model.int8.onnx", "--data", "synthetic:val", "--size", "16",
               "--quiet")


def grey16(tmp: Path, a: Assets) -> Outcome:
    """A 16-bit greyscale PNG is tagged as its 8-bit twin (value·257) is, not binarised."""
    from PIL import Image
    grey = np.random.default_rng(1).integers(0, 256, (40, 50), dtype=np.uint16)
    (tmp / "in").mkdir()
    png16(grey * 257, tmp / "in" / "a16.png")
    Image.fromarray(grey.astype(np.uint8), "L").save(tmp / "in" / "b8.png")
    done = cli("tag", tmp / "in", "--model", a.onnx, "--threshold", "0", "--quiet", "--jsonl", tmp / "tags.jsonl")
    lines = [json.loads(line) for line in (tmp / "tags.jsonl").read_text().splitlines()] \
        if (tmp / "tags.jsonl").is_file() else []
    same = len(lines) == 2 and lines[0]["labels"] == lines[1]["labels"]
    done.intact.append(("the 16-bit PNG's scores equal its 8-bit twin's", same))
    return done


def other_export(overwrite: bool):
    """export a second checkpoint (thresholds changed) into a folder holding the first one's export,
    an engine built from it (a sidecar naming its sha256) and a user's notes."""
    def run(tmp: Path, a: Assets) -> Outcome:
        from layover_edge.core.io import sha256
        deploy = tmp / "deploy"
        deploy.mkdir()
        shutil.copyfile(a.onnx, deploy / "model.onnx")
        (deploy / "model.fp32.h100.engine").write_bytes(b"engine")
        from layover_edge.artifacts.sidecar import FORMAT, REQUIRED
        (deploy / "model.fp32.h100.engine.json").write_text(json.dumps(
            {k: None for k in REQUIRED} | {"format": FORMAT, "onnx_sha256": sha256(a.onnx)}))
        (deploy / "notes.txt").write_text("keep me")
        ckpt = a.copy(a.ckpt, tmp / "ckpt")
        doc = json.loads((ckpt / "config.json").read_text())
        doc["model"]["thresholds"] = [0.3] * 5
        (ckpt / "config.json").write_text(json.dumps(doc))
        before = sha256(deploy / "model.onnx")
        done = cli("export", ckpt, "--out", deploy, "--form", "portable", "--quiet", *(["--overwrite"] * overwrite))
        now = json.loads(next(p.value for p in __import__("onnx").load(str(deploy / "model.onnx")).metadata_props
                              if p.key == "thresholds"))
        done.intact.append(("the user's notes.txt kept", (deploy / "notes.txt").read_text() == "keep me"))
        if overwrite:
            done.intact += [("model.onnx is the new checkpoint's", now == [0.3] * 5),
                            ("the engine built from the old model.onnx removed",
                             not (deploy / "model.fp32.h100.engine").exists()
                             and not (deploy / "model.fp32.h100.engine.json").exists())]
        else:
            done.intact += [("model.onnx untouched", sha256(deploy / "model.onnx") == before),
                            ("the engine kept", (deploy / "model.fp32.h100.engine").exists())]
        return done
    return run


def triton_user_file(tmp: Path, a: Assets) -> Outcome:
    repo = tmp / "repo"
    (repo / "tagger_onnx").mkdir(parents=True)
    (repo / "tagger_onnx" / "NOTES.md").write_text("keep me")
    done = cli("export", a.ckpt, "--out", tmp / "deploy", "--form", "portable", "--triton-repo", repo, "--quiet")
    done.intact += [("the user's file in tagger_onnx kept", (repo / "tagger_onnx" / "NOTES.md").is_file()),
                    ("the model written", (repo / "tagger_onnx" / "1" / "model.onnx").is_file())]
    return done


def photo_folder(tmp: Path, a: Assets) -> Path:
    root = a.copy(a.images, tmp / "photos")
    (root / "labels.csv").write_text("path,labels,split\n" + "".join(
        f"{i}.png,{'cat' if i % 2 else 'dog'},{'train' if i < 4 else 'val'}\n" for i in range(6)))
    return root


def video(frames: int, keep: float = 1.0):
    """tag an MJPEG AVI of ``frames`` frames cut to ``keep`` of its bytes."""
    def run(tmp: Path, a: Assets) -> Outcome:
        cv2 = pytest.importorskip("cv2")
        path = tmp / ("clip.avi" if frames else "empty.avi")
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        rng = np.random.default_rng(0)
        for _ in range(frames):
            writer.write(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8))
        writer.release()
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        done = cli("tag", path, "--model", a.onnx, "--quiet", "--json", "--jsonl", tmp / "tags.jsonl")
        if frames and done.code == 0:
            summary = json.loads(done.out)
            done.intact += [("some frames tagged", 0 < summary["frames"] < frames),
                            ("the cut named as unreadable", len(summary["unreadable"]) == 1
                             and "ends after" in summary["unreadable"][0]["reason"])]
        return done
    return run


def quiet_tag(tmp: Path, a: Assets) -> Outcome:
    done = cli("tag", a.images, "--model", a.onnx, "--quiet", "--jsonl", tmp / "tags.jsonl")
    done.intact.append(("--quiet prints the one summary line", len(done.out.strip().splitlines()) == 1
                        and done.err.strip() == ""))
    return done


@dataclass
class Case:
    name: str
    expect: int        # exit code
    names: str | None  # what the one error line must contain; None: no error line (the run succeeds)
    run: Callable[[Path, Assets], Outcome] | list
    heavy: bool = True

    def execute(self, tmp: Path, assets: Assets) -> Outcome:
        t0 = time.perf_counter()
        outcome = cli(*[str(x).format(tmp=tmp) for x in self.run]) if isinstance(self.run, list) \
            else self.run(tmp, assets)
        outcome.seconds = time.perf_counter() - t0
        return outcome


def argv(*args) -> list:
    return list(args)


CASES = [
    # impossible and wrongly typed arguments: refused by argparse, before torch is imported
    Case("train --batch-size 0", EXIT_BAD_INPUT, "--batch-size", argv("train", *RUN, "--batch-size", "0", "--out", "{tmp}/r"), False),
    Case("train --epochs -1", EXIT_BAD_INPUT, "--epochs", argv("train", *RUN, "--epochs", "-1", "--out", "{tmp}/r"), False),
    Case("train --epochs abc (wrong type)", EXIT_BAD_INPUT, "--epochs", argv("train", *RUN, "--epochs", "abc", "--out", "{tmp}/r"), False),
    Case("train --lr nan", EXIT_BAD_INPUT, "--lr", argv("train", *RUN, "--lr", "nan", "--out", "{tmp}/r"), False),
    Case("train --lr 0", EXIT_BAD_INPUT, "--lr", argv("train", *RUN, "--lr", "0", "--out", "{tmp}/r"), False),
    Case("train --weight-decay -0.1", EXIT_BAD_INPUT, "--weight-decay", argv("train", *RUN, "--weight-decay", "-0.1", "--out", "{tmp}/r"), False),
    Case("train --workers -1", EXIT_BAD_INPUT, "--workers", argv("train", *RUN, "--workers", "-1", "--out", "{tmp}/r"), False),
    Case("train --num-classes 0", EXIT_BAD_INPUT, "--num-classes", argv("train", *RUN, "--num-classes", "0", "--out", "{tmp}/r"), False),
    Case("train --image-size 0", EXIT_BAD_INPUT, "--image-size", argv("train", *RUN, "--image-size", "0", "--out", "{tmp}/r"), False),
    Case("features --std 0 1 1", EXIT_BAD_INPUT, "--std", argv("features", *MODEL, "--std", "0", "1", "1", "--cache", "{tmp}/c"), False),
    Case("tag --threshold 2", EXIT_BAD_INPUT, "--threshold", argv("tag", "x.png", "--model", "m", "--threshold", "2"), False),
    Case("tag --threshold nan", EXIT_BAD_INPUT, "--threshold", argv("tag", "x.png", "--model", "m", "--threshold", "nan"), False),
    Case("tag --topk -1", EXIT_BAD_INPUT, "--topk", argv("tag", "x.png", "--model", "m", "--topk", "-1"), False),
    Case("export --static-batch 0", EXIT_BAD_INPUT, "--static-batch", argv("export", "ck", "--out", "o", "--static-batch", "0"), False),
    Case("export --static-batch -2", EXIT_BAD_INPUT, "--static-batch", argv("export", "ck", "--out", "o", "--static-batch", "-2"), False),
    Case("build --max-batch 0", EXIT_BAD_INPUT, "--max-batch", argv("build", "m.onnx", "--precision", "fp32", "--target", "h100", "--max-batch", "0"), False),
    Case("parity --size 0", EXIT_BAD_INPUT, "--size", argv("parity", "ck", "--against", "m.onnx", "--data", "synthetic:val", "--size", "0"), False),
    Case("eval --device gpu0", EXIT_BAD_INPUT, "--device", argv("eval", "ck", "--device", "gpu0"), False),
    Case("bench --batches 0", EXIT_BAD_INPUT, "--batches", argv("bench", "--batches", "0", "--out", "{tmp}/b"), False),
    Case("serve --http-port 65536", EXIT_BAD_INPUT, "--http-port", argv("serve", "m.onnx", "--http-port", "65536"), False),
    Case("serve: one port for HTTP and gRPC", EXIT_BAD_INPUT, "--grpc-port are both 8123",
         argv("serve", "m.onnx", "--http-port", "8123", "--grpc-port", "8123"), False),
    Case("serve --host ::1 (IPv6)", EXIT_BAD_INPUT, "--host ::1", argv("serve", "m.onnx", "--host", "::1"), False),
    Case("serve: the HTTP port in use", EXIT_BAD_INPUT, "cannot listen on 127.0.0.1:", serve_port_in_use),
    Case("serve --log-file in a missing folder", EXIT_OS_ERROR, "triton.log", serve_log_in_missing_folder),
    # values only the library can judge
    Case("eval --split bogus", EXIT_BAD_INPUT, "'bogus'", lambda t, a: cli("eval", a.ckpt, *DATA, "--split", "bogus", "--quiet")),
    Case("train --num-classes 4 on synthetic", EXIT_BAD_INPUT, "num_classes", argv("train", *MODEL, *DATA[:6], "--num-classes", "4", "--out", "{tmp}/r", "--quiet")),
    Case("eval --device cuda:3 (no such device)", EXIT_BAD_INPUT, "cuda:3", lambda t, a: cli("eval", a.ckpt, *DATA, "--device", "cuda:3", "--quiet")),
    Case("train --lr 1e38 (diverges)", EXIT_BAD_INPUT, "epoch 1/2", lambda t, a: cli("train", *RUN, "--epochs", "2", "--lr", "1e38", "--cache", a.cache, "--out", t / "r")),
    # hostile and corrupt files
    Case("features --weights missing.pt", EXIT_OS_ERROR, "weights file not found", argv("features", *MODEL[:2], "--weights", "{tmp}/missing.pt", "--image-size", "32", *DATA, "--cache", "{tmp}/c", "--quiet")),
    Case("features --weights: malicious pickle", EXIT_BAD_INPUT, "weights.pt", weights_exploit),
    Case("folder CSV in latin-1", EXIT_BAD_INPUT, "train.csv:2", folder_latin1),
    Case("VOC ImageSets in latin-1", EXIT_BAD_INPUT, "aeroplane_trainval.txt:1", voc_latin1),
    Case("COCO category_id is a list", EXIT_BAD_INPUT, "annotations[0].category_id",
         coco(lambda d: d["annotations"][0].update(category_id=[1]))),
    Case("COCO category id is a string", EXIT_BAD_INPUT, "categories[1].id", coco(lambda d: d["categories"][1].update(id="2"))),
    Case("COCO duplicate category names", EXIT_BAD_INPUT, "duplicate categories names", coco(lambda d: d["categories"][1].update(name="cat"))),
    Case("COCO annotation of a missing image", EXIT_BAD_INPUT, "image_id 7", coco(lambda d: d["annotations"][1].update(image_id=7))),
    Case("config.json: non-numeric thresholds", EXIT_BAD_INPUT, "config.json",
         checkpoint_with(lambda d: d["model"].update(thresholds=["high"] * 5))),
    Case("config.json: negative image size", EXIT_BAD_INPUT, "config.json", checkpoint_with(lambda d: d["model"].update(image_size=-32))),
    Case("config.json: 1-element mean", EXIT_BAD_INPUT, "config.json", checkpoint_with(lambda d: d["model"].update(mean=[0.5]))),
    Case("head.safetensors truncated", EXIT_BAD_INPUT, "head.safetensors", truncated_head),
    Case("unrelated ONNX with our metadata", EXIT_BAD_INPUT, "model.onnx", unrelated_onnx),
    Case("PNG declaring 10000x10000 pixels", EXIT_BAD_INPUT, "bomb.png", bomb),
    Case("cache: NaN in z.npy", EXIT_BAD_INPUT, "z.npy", damaged_cache(nan_row)),
    Case("cache: truncated tap1.npy", EXIT_BAD_INPUT, "tap1.npy", damaged_cache(truncate("tap1.npy"))),
    Case("cache: object-dtype z.npy", EXIT_BAD_INPUT, "z.npy", damaged_cache(object_array)),
    Case("cache: z.npy of the wrong shape", EXIT_BAD_INPUT, "z.npy", damaged_cache(wrong_shape)),
    Case("export --int8: truncated calibration .npy", EXIT_BAD_INPUT, "calib.npy", int8_bad_calibration),
    # a run folder that holds a run
    Case("train into a folder holding a run", EXIT_BAD_INPUT, "--overwrite", existing_run),
    Case("--resume with another method", EXIT_BAD_INPUT, "model.method rm -> lp", resume_with("--method", "lp")),
    Case("--resume with another tap", EXIT_BAD_INPUT, "model.tap 1 -> 2", resume_with("--tap", "2")),
    Case("--resume past the saved schedule", EXIT_BAD_INPUT, "train.epochs 3 -> 5", resume_with("--epochs", "5")),
    Case("--resume from a foreign last.pt", EXIT_BAD_INPUT, "last.pt", resume_with(state=foreign_state)),
    Case("--resume from a malicious last.pt", EXIT_BAD_INPUT, "last.pt", resume_with(state=exploit_state, marker="pwned")),
    # operating-system errors
    Case("features --cache is a file", EXIT_OS_ERROR, "taken", path_is_file(lambda t, a: ["features", *MODEL, *DATA, "--cache", t / "taken", "--quiet"])),
    Case("train --out is a file", EXIT_OS_ERROR, "taken", path_is_file(lambda t, a: ["train", *RUN, "--cache", a.cache, "--out", t / "taken"])),
    Case("tag --save is a file", EXIT_OS_ERROR, "taken", path_is_file(lambda t, a: ["tag", a.images, "--model", a.onnx, "--save", t / "taken", "--quiet"])),
    Case("tag --jsonl is a folder", EXIT_OS_ERROR, "tags.jsonl", jsonl_is_dir),
    Case("tag --jsonl on a read-only file system", EXIT_OS_ERROR, "Read-only file system",
         read_only(lambda fs, a: ["tag", a.images, "--model", a.onnx, "--jsonl", fs / "tags.jsonl", "--quiet"])),
    Case("train --out on a read-only file system", EXIT_OS_ERROR, "Read-only file system",
         read_only(lambda fs, a: ["train", *RUN, "--cache", a.cache, "--out", fs / "run"])),
    Case("features on a full disk, then resumed", EXIT_NO_SPACE, "No space left on device", features_full_disk),
    Case("train on a full disk", EXIT_NO_SPACE, "No space left on device", train_full_disk),
    Case("tag --jsonl on a full disk", EXIT_NO_SPACE, "tags.jsonl", tag_full_disk),
    Case("tag > /dev/full", EXIT_NO_SPACE, "stdout", stdout_full),
    Case("tag | head -1 (broken pipe)", EXIT_BROKEN_PIPE, "broken pipe", broken_pipe),
    Case("tag: drawing a later frame fails", EXIT_OS_ERROR, "3.jpg", later_frame_fails),
    # signals and concurrent writers
    Case("tag, Ctrl-C", EXIT_INTERRUPTED, None, ctrl_c),
    Case("train (RM, cache) kill -9, --resume", 0, None, kill_train_and_resume),
    Case("features kill -9, rerun", 0, None, kill_features_and_resume),
    Case("features while another extracts", EXIT_BAD_INPUT, "another process", second_extraction),
    Case("train --resume while another trains", EXIT_BAD_INPUT, "another process", second_trainer),
    # issue 19: models that are wrong but answer
    Case("head.safetensors: NaN weight", EXIT_BAD_INPUT, "tensor 'fc.weight' holds NaN", head_with(set_nan)),
    Case("head.safetensors: σ = 0 (eval)", EXIT_BAD_INPUT, "σ",
         head_with(lambda s: s["standardise.std"].zero_(), "eval")),
    Case("head.safetensors: infinite σ", EXIT_BAD_INPUT, "holds infinite values",
         head_with(lambda s: s["standardise.std"].fill_(float("inf")))),
    Case("head.safetensors: int8-cast weights", EXIT_BAD_INPUT, "tensor 'fc.weight' is int8",
         head_with(lambda s: s.update({"fc.weight": s["fc.weight"].to(torch.int8)}))),
    Case("parity: FP32 graph whose metadata says int8", EXIT_BAD_INPUT, "metadata says precision 'int8'",
         lying_precision),
    Case("tag: 16-bit greyscale PNG", 0, None, grey16),
    Case("export into another checkpoint's export", EXIT_BAD_INPUT, "--overwrite", other_export(False)),
    Case("export --overwrite over another checkpoint's export", 0, None, other_export(True)),
    Case("export --triton-repo beside a user's file", 0, None, triton_user_file),
    # issue 19: a new user's traps
    Case("features --data-root without --data", EXIT_BAD_INPUT, "holds with --data (data= in the Python API): folder",
         lambda t, a: cli("features", *MODEL, *DATA, "--data-root", photo_folder(t, a), "--cache", t / "c", "--quiet")),
    Case("tag a missing image", EXIT_OS_ERROR, "nope.jpg: no such file or folder",
         lambda t, a: cli("tag", t / "nope.jpg", "--model", a.onnx, "--quiet")),
    Case("tag --model missing.onnx", EXIT_OS_ERROR, "ONNX file not found",
         lambda t, a: cli("tag", a.images, "--model", t / "missing.onnx", "--quiet")),
    Case("eval a missing checkpoint", EXIT_OS_ERROR, "checkpoint not found", argv("eval", "{tmp}/nope", *DATA, "--quiet")),
    Case("features --data folder, missing folder", EXIT_OS_ERROR, "data set folder not found",
         argv("features", *MODEL, "--data", "folder", "--data-root", "{tmp}/nope", "--cache", "{tmp}/c", "--quiet")),
    Case("params --backbone resnet5 (close names)", EXIT_BAD_INPUT, "did you mean resnet50",
         argv("params", "--backbone", "resnet5")),
    Case("export --static-batch 100000000", EXIT_BAD_INPUT, "--static-batch",
         argv("export", "ck", "--out", "o", "--static-batch", "100000000"), False),
    Case("tag --batch-size 2**70", EXIT_BAD_INPUT, "--batch-size", argv("tag", "x.png", "--model", "m", "--batch-size", str(2**70)), False),
    Case("tag a truncated video", 0, None, video(40, 0.5)),
    Case("tag a 0-frame video", EXIT_BAD_INPUT, "empty.avi: no frame could be decoded", video(0)),
    Case("tag --quiet: no table", 0, None, quiet_tag),
]
LONG = ("train (RM, cache) kill -9, --resume", "features on a full disk, then resumed", "features kill -9, rerun",
        "features while another extracts", "train --resume while another trains", "export --int8: truncated calibration .npy")
RESULTS: dict[str, tuple[Case, Outcome]] = {}


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case submitted at once to a pool of two; each test waits for its own."""
    assets = Assets(tmp_path_factory.mktemp("battery-assets"))
    order = sorted(CASES, key=lambda c: (c.name not in LONG, not c.heavy))
    futures: dict[str, Future] = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        for case in order:
            futures[case.name] = pool.submit(case.execute, tmp_path_factory.mktemp("case"), assets)
        yield futures
        for f in futures.values():
            f.cancel()
    table = os.environ.get("LAYOVER_BATTERY_TABLE")
    if table:
        Path(table).write_text(markdown_table())


def markdown_table() -> str:
    rows = ["| # | case | expected | observed | s |", "|---:|---|---|---|---:|"]
    for n, case in enumerate(CASES, 1):
        if case.name not in RESULTS:
            continue
        _, o = RESULTS[case.name]
        want = f"exit {case.expect}" + (f", one error line naming `{case.names}`" if case.names else ", no error line")
        if o.skip:
            seen = f"skipped: {o.skip}"
        else:
            line = next((ln for ln in o.err.splitlines() if "error:" in ln), "")
            line = line if len(line) <= 160 else line[:157] + "..."
            checks = "; ".join(f"{what} {'✓' if ok else '✗'}" for what, ok in o.intact)
            seen = f"exit {o.code}" + (f": `{line.replace('|', '/')}`" if line else "") + (f"; {checks}" if checks else "")
        name = case.name.replace("|", r"\|")
        rows.append(f"| {n} | {name} | {want} | {seen} | {o.seconds:.1f} |")
    return "\n".join(rows) + f"\n\n{len(RESULTS)} cases.\n"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_battery(case: Case, outcomes):
    o = outcomes[case.name].result()
    RESULTS[case.name] = (case, o)
    if o.skip:
        pytest.skip(o.skip)
    assert "Traceback" not in o.err, o.err
    errors = [line for line in o.err.splitlines() if "error:" in line]
    if case.names is None:
        assert errors == [], o.err
    else:
        assert len(errors) == 1, o.err
        assert errors[0].startswith("layover-edge ") and case.names in errors[0], errors[0]
    assert o.code == case.expect, o.err
    for what, held in o.intact:
        assert held, what


def test_the_battery_is_big_enough():
    assert len({c.name for c in CASES}) == len(CASES) >= 40
