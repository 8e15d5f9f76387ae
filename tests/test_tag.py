"""Tagging images, folders and a video file end to end through the CLI, with the bad inputs the
issue lists: a corrupt image, an unopenable video, a missing camera, a model of the wrong kind."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from layover_edge.apps.sources import open_sources
from layover_edge.apps.tag import Preprocessor, Tagger, select_tags
from layover_edge.cli import main
from layover_edge.core.config import ModelConfig
from layover_edge.data.loading import build_transform
from layover_edge.models import build_model, load_checkpoint, save_checkpoint
from layover_edge.runtime.torch_backend import TorchBackend

cv2 = pytest.importorskip("cv2")
LABELS = ["cat", "dog", "car", "tree", "sky"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = ModelConfig(backbone="test_convnext", num_classes=5, method="rm", weights="none", image_size=48,
                      labels=LABELS, thresholds=[0.5, 0.4, 0.6, 0.5, 0.45])
    torch.manual_seed(0)
    return save_checkpoint(build_model(cfg), cfg, tmp_path_factory.mktemp("ckpt") / "rm")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)).save(d / f"img_{i:02d}.png")
    (d / "corrupt.png").write_bytes(b"this is not a png")
    return d


def make_video(path, frames=7, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(frames):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[:, i * 8: i * 8 + 12] = (30 * i, 255, 0)
        writer.write(img)
    writer.release()
    return path


def run(capsys, *argv):
    rc = main(["tag", *map(str, argv), "--quiet"])
    out, err = capsys.readouterr()
    return rc, out, err


def test_select_tags_threshold_and_topk():
    probs = np.array([[0.9, 0.2, 0.7, 0.5], [0.1, 0.1, 0.1, 0.1]], np.float32)
    names = ["a", "b", "c", "d"]
    thr = np.array([0.5, 0.1, 0.8, 0.5], np.float32)
    assert select_tags(probs, names, thr) == [[("a", pytest.approx(0.9)), ("d", 0.5), ("b", pytest.approx(0.2))],
                                             [("b", pytest.approx(0.1))]]
    assert [t[0] for t in select_tags(probs, names, thr, topk=1)[0]] == ["a"]


def test_numpy_frames_preprocess_like_training(checkpoint):
    backend = TorchBackend(checkpoint)
    rgb = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    cfg = backend.cfg
    expected = build_transform(cfg.preprocess)(Image.fromarray(rgb)).numpy()
    got = Preprocessor(backend.info.preprocess)([rgb])
    assert got.shape == (1, 3, 48, 48)
    # the device's numpy/Pillow transform: within 2 uint8 levels of torchvision's (tests/test_pixels.py)
    np.testing.assert_allclose(got[0], expected, rtol=0, atol=2.001 / 255 / min(cfg.std))


def test_tag_folder_reports_corrupt_and_saves(checkpoint, folder, tmp_path, capsys):
    out_jsonl = tmp_path / "tags.jsonl"
    rc, out, _ = run(capsys, folder, "--model", checkpoint, "--jsonl", out_jsonl, "--save", tmp_path / "drawn",
                     "--batch-size", "4", "--json")
    assert rc == 0
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert len(lines) == 11
    errors = [r for r in lines if "error" in r]
    assert [e["source"].rsplit("/", 1)[1] for e in errors] == ["corrupt.png"]
    tagged = [r for r in lines if "labels" in r]
    assert len(tagged) == 10 and all(r["frame"] == 0 for r in tagged)
    for r in tagged:  # per-class thresholds from the checkpoint, highest score first
        scores = [t["score"] for t in r["labels"]]
        assert scores == sorted(scores, reverse=True)
        assert all(t["label"] in LABELS for t in r["labels"])
    summary = json.loads(out)
    assert summary["frames"] == 10 and len(summary["unreadable"]) == 1 and summary["tags"] == sum(
        len(r["labels"]) for r in tagged)
    assert len(list((tmp_path / "drawn").glob("*.jpg"))) == 10


def test_tag_threshold_topk_to_stdout(checkpoint, folder, capsys):
    rc, out, err = run(capsys, folder / "img_00.png", folder / "img_01.png", "--model", checkpoint,
                       "--threshold", "0", "--topk", "2")
    assert rc == 0
    lines = [json.loads(line) for line in out.splitlines()]  # stdout holds only JSON lines
    assert len(lines) == 2 and all(len(r["labels"]) == 2 for r in lines)
    assert "tagged 2 frames" in err


def test_tag_video_file_and_bad_inputs(checkpoint, tmp_path, capsys):
    video = make_video(tmp_path / "clip.avi")
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    rc, out, err = run(capsys, video, tmp_path / "broken.mp4", "/dev/video9", "--model", checkpoint,
                       "--save", tmp_path / "drawn", "--threshold", "0.3")
    assert rc == 0
    lines = [json.loads(line) for line in out.splitlines()]
    frames = [r["frame"] for r in lines if "labels" in r]
    assert frames == list(range(7))
    assert "camera /dev/video9 not found" in err and "cannot open" in err
    drawn = cv2.VideoCapture(str(tmp_path / "drawn" / "clip.mp4"))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 7


def test_nothing_processed_exits_nonzero(checkpoint, tmp_path, capsys):
    (tmp_path / "x.png").write_bytes(b"nope")
    rc, _, err = run(capsys, tmp_path / "x.png", "/dev/video9", "--model", checkpoint)
    assert rc == 2 and "nothing could be processed" in err


def test_wrong_model_kind_is_one_line(tmp_path, capsys):
    bogus = tmp_path / "model.txt"
    bogus.write_text("hello")
    rc, _, err = run(capsys, tmp_path, "--model", bogus)
    assert rc == 2 and "is not a model layover-edge can run" in err
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"\x00\x01 not protobuf")
    rc, _, err = run(capsys, tmp_path, "--model", broken)
    assert rc == 2 and err.count("\n") == 1 and "model.onnx" in err


def test_ctrl_c_finishes_output_and_summary(checkpoint, folder):
    backend = TorchBackend(checkpoint)
    real, calls = backend.predict_with_alpha, []

    def interrupted(x):
        calls.append(len(x))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(x)

    backend.predict_with_alpha = interrupted
    lines = []
    summary = Tagger(backend, lines.append, batch_size=3, progress=False).run(open_sources([str(folder)]))
    # the first batch is corrupt.png (sorts first, skipped) + two images; the second is interrupted
    assert summary.interrupted and summary.frames == 2 and len(summary.unreadable) == 1
    assert len([r for r in lines if "labels" in r]) == 2


def test_tag_with_onnx_runtime(checkpoint, folder, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from layover_edge.export.onnx import export_onnx
    onnx_path = export_onnx(checkpoint, tmp_path / "rm.onnx", verify=False)
    rc, out, _ = run(capsys, folder, "--model", onnx_path, "--threshold", "0.5")
    assert rc == 0
    onnx_lines = [json.loads(line) for line in out.splitlines() if "labels" in line]
    rc, out, _ = run(capsys, folder, "--model", checkpoint, "--threshold", "0.5")
    torch_lines = [json.loads(line) for line in out.splitlines() if "labels" in line]
    assert [r["source"] for r in onnx_lines] == [r["source"] for r in torch_lines]
    for a, b in zip(onnx_lines, torch_lines):
        assert [t["label"] for t in a["labels"]] == [t["label"] for t in b["labels"]] or \
            max(abs(x["score"] - 0.5) for x in a["labels"] + b["labels"]) < 1e-3  # a tie at the threshold


def test_tag_summary_carries_the_mean_gate(checkpoint, folder, tmp_path, capsys):
    rc, out, _ = run(capsys, folder, "--model", checkpoint, "--jsonl", tmp_path / "tags.jsonl", "--json")
    assert rc == 0
    model, cfg = load_checkpoint(checkpoint)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(folder.glob("img_*.png"))]
    x = torch.from_numpy(Preprocessor(TorchBackend(checkpoint).info.preprocess)(images))
    with torch.no_grad():  # α written out from the head's gate weights
        _, z = model.features(x)
        alpha = torch.sigmoid(z @ model.head.sl.weight.T + model.head.sl.bias)
    assert json.loads(out)["alpha_mean"] == pytest.approx(alpha.mean().item(), abs=1e-4)


def test_a_folder_is_read_with_its_sub_folders(tmp_path):
    for rel in ("a.png", "sub/b.png", "sub/deeper/c.jpg", ".cache/hidden.png", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel, format="PNG") if rel.endswith(("png", "jpg")) \
            else (tmp_path / rel).write_text("x")
    (source,) = open_sources([str(tmp_path)])
    assert [str(p.relative_to(tmp_path)) for p in map(type(tmp_path), source.paths)] == \
        ["a.png", "sub/b.png", "sub/deeper/c.jpg"]


def test_images_above_the_pixel_limit_are_refused_before_decoding(tmp_path, monkeypatch):
    from layover_edge.core.images import ImageTooLarge, open_rgb
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setenv("LAYOVER_MAX_PIXELS", "50000")
    with pytest.raises(ImageTooLarge, match=r"300x200 = 60,000 pixels, over the limit of 50,000 \(LAYOVER_MAX_PIXELS"):
        open_rgb(tmp_path / "big.png")
    monkeypatch.setenv("LAYOVER_MAX_PIXELS", "60000")
    assert open_rgb(tmp_path / "big.png").size == (300, 200)


def test_jsonl_to_a_pipe_streams_into_it(checkpoint, folder, tmp_path, capsys):
    """A FIFO (or a device) is written line by line, never replaced by a file."""
    import os
    import stat
    fifo = tmp_path / "tags.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader is there before tag opens it
    try:
        rc, _, _ = run(capsys, folder, "--model", checkpoint, "--jsonl", fifo)
        data = os.read(reader, 1 << 16).decode()
    finally:
        os.close(reader)
    assert rc == 0 and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert len([json.loads(line) for line in data.splitlines()]) == 11


def test_prefetch_tags_the_same_and_reports_its_stages(checkpoint, folder, tmp_path):
    """Decoding ahead in a thread changes nothing in the output; each stage's seconds are kept and the
    run is never faster than its slowest stage (read: decode + preprocess; tag: inference + output)
    allows, as each stage's work runs one batch after another in its thread."""
    video = make_video(tmp_path / "clip.avi", frames=9)
    backend = TorchBackend(checkpoint)
    runs = {}
    for depth in (0, 2):
        lines = []
        summary = Tagger(backend, lines.append, batch_size=3, progress=False, prefetch=depth).run(
            open_sources([str(folder), str(video)]))
        runs[depth] = (lines, summary.to_dict())
    assert runs[0][0] == runs[2][0] and len(runs[2][0]) == 20  # 10 images + corrupt.png + 9 frames
    for _, s in runs.values():
        assert set(s["stage_seconds"]) == {"decode", "preprocess", "inference", "output"}
        assert all(v > 0 for v in s["stage_seconds"].values())
        st = s["stage_seconds"]
        read, tag = st["decode"] + st["preprocess"], st["inference"] + st["output"]
        assert s["slowest_stage"] == ("read" if read > tag else "tag")
        assert s["frames_per_second"] <= s["slowest_stage_bound_fps"] * 1.01  # rounding


def test_the_next_batch_is_decoded_while_the_current_one_infers(checkpoint, folder):
    import threading
    import time
    backend = TorchBackend(checkpoint)
    real, events = backend.predict_with_alpha, []

    def slow(x):
        events.append(("infer start", threading.current_thread().name, time.perf_counter()))
        out = real(x)
        time.sleep(0.3)  # a GPU busy with the batch: the CPU is free to decode the next
        events.append(("infer end", threading.current_thread().name, time.perf_counter()))
        return out

    backend.predict_with_alpha = slow
    tagger = Tagger(backend, lambda r: None, batch_size=4, progress=False, prefetch=1)
    preprocess = tagger.preprocess

    def recorded(images):
        events.append(("preprocess", threading.current_thread().name, time.perf_counter()))
        return preprocess(images)

    tagger.preprocess = recorded
    tagger.run(open_sources([str(folder)]))
    pre = [e for e in events if e[0] == "preprocess"]
    infer_end = [e[2] for e in events if e[0] == "infer end"]
    assert {e[1] for e in pre} == {"tag-prefetch"} and len(pre) == 3 and len(infer_end) == 3
    assert pre[1][2] < infer_end[0]  # batch 2 was ready before batch 1 finished inferring
