"""Source parsing and the camera/stream pipelines (cameras cannot be opened here: the strings are
what we can check, plus the clear error for a camera that does not exist)."""
import numpy as np
import pytest
from PIL import Image

from layover_edge.apps.sources import (
    Capture,
    CaptureOptions,
    ImageFileSource,
    Missing,
    csi_pipeline,
    open_sources,
    read_image,
    rtsp_pipeline,
)
from layover_edge.core.errors import LayoverError


def test_csi_pipeline_is_jetson_inference_like():
    s = csi_pipeline(1, CaptureOptions(width=1920, height=1080, framerate=60, flip=2))
    assert s.startswith("nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM)")
    assert "width=(int)1920, height=(int)1080, framerate=(fraction)60/1" in s
    assert "nvvidconv flip-method=2" in s and "format=(string)BGR" in s
    assert s.endswith("appsink drop=true max-buffers=1 sync=false")


def test_rtsp_pipeline_decoder_per_platform():
    o = CaptureOptions(codec="h265", latency_ms=100)
    jetson = rtsp_pipeline("rtsp://cam:8554/live", o, jetson=True)
    assert jetson.startswith("rtspsrc location=rtsp://cam:8554/live latency=100 ! rtph265depay ! h265parse ! ")
    assert "nvv4l2decoder ! nvvidconv" in jetson
    assert "avdec_h265 ! videoconvert" in rtsp_pipeline("rtsp://cam/live", o, jetson=False)
    with pytest.raises(LayoverError, match="codec"):
        rtsp_pipeline("rtsp://cam/live", CaptureOptions(codec="vp9"), jetson=False)


def test_rtsp_latency_reaches_the_pipeline_from_the_command_line():
    from layover_edge.cli import build_parser
    from layover_edge.cli.edge import capture_options
    args = build_parser().parse_args(["tag", "rtsp://cam/live", "--model", "m.onnx", "--rtsp-latency", "40"])
    assert "latency=40 " in rtsp_pipeline("rtsp://cam/live", capture_options(args), jetson=True)
    default = build_parser().parse_args(["tag", "rtsp://cam/live", "--model", "m.onnx"]).rtsp_latency
    assert default == CaptureOptions().latency_ms
    with pytest.raises(SystemExit):
        build_parser().parse_args(["tag", "x", "--model", "m.onnx", "--rtsp-latency", "-1"])


def test_missing_camera_is_a_clear_error():
    (src,) = open_sources(["/dev/video9"])
    with pytest.raises(LayoverError, match=r"camera /dev/video9 not found"):
        src.open()
    (src,) = open_sources(["v4l2:///dev/video9"])
    assert isinstance(src, Missing)


def test_csi_without_gstreamer_or_bad_uri(monkeypatch):
    import layover_edge.apps.sources as sources
    monkeypatch.setattr(sources, "has_gstreamer", lambda: False)
    (src,) = open_sources(["csi://0"])
    with pytest.raises(LayoverError, match="GStreamer"):
        src.open()
    (bad,) = open_sources(["csi://front"])
    with pytest.raises(LayoverError, match="csi://N"):
        bad.open()
    monkeypatch.setattr(sources, "has_gstreamer", lambda: True)
    (src,) = open_sources(["csi://0"])
    assert isinstance(src, Capture) and src.live and src.api == "CAP_GSTREAMER"
    assert src.target.startswith("nvarguscamerasrc sensor-id=0")


def test_rtsp_falls_back_to_ffmpeg_without_gstreamer(monkeypatch):
    import layover_edge.apps.sources as sources
    monkeypatch.setattr(sources, "has_gstreamer", lambda: False)
    (src,) = open_sources(["rtsp://cam/live"])
    assert (src.target, src.api, src.live) == ("rtsp://cam/live", "CAP_FFMPEG", True)


def test_files_folders_globs(tmp_path):
    for name in ("b.png", "a.jpg"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "clip.avi").write_bytes(b"")
    sources = open_sources([str(tmp_path), str(tmp_path / "*.png"), str(tmp_path / "clip.avi"),
                            str(tmp_path / "nope.jpg"), str(tmp_path / "*.gif")])
    images = sources[0]
    assert isinstance(images, ImageFileSource)  # folder + glob merged: one batchable source, folder sorted
    assert [p.rsplit("/", 1)[1] for p in images.paths] == ["a.jpg", "b.png", "b.png"]
    assert isinstance(sources[1], Capture) and not sources[1].live
    assert [type(s) for s in sources[2:]] == [Missing, Missing]
    with pytest.raises(LayoverError, match="no such file"):
        sources[2].open()
    with pytest.raises(LayoverError, match="no files match"):
        sources[3].open()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(LayoverError, match="no image files"):
        open_sources([str(empty)])[0].open()


def test_unreadable_image_is_a_frame_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG truncated")
    frame = read_image(str(bad))
    assert frame.image is None and "not a readable image" in frame.error
    good = tmp_path / "gray.png"
    Image.new("L", (5, 4), 7).save(good)
    frame = read_image(str(good))
    assert frame.error is None and frame.image.shape == (4, 5, 3) and frame.image.dtype == np.uint8
