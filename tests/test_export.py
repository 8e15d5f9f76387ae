"""End to end on the quick demo checkpoint, on CPU: both ONNX forms, INT8 Q/DQ and FP16 through
ModelOpt, and the parity reports (FP32 portable, FP32 plugin, INT8) in ONNX Runtime."""
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx_graphsurgeon")
pytest.importorskip("onnxruntime_extensions")

from layover_edge.apps.demo import DemoConfig, run_demo  # noqa: E402
from layover_edge.artifacts.onnx_metadata import get_metadata  # noqa: E402
from layover_edge.cli import main  # noqa: E402
from layover_edge.core.errors import LayoverError  # noqa: E402
from layover_edge.export.onnx import check_onnx, export_onnx  # noqa: E402
from layover_edge.kernels.identity import MIX_CODES, PLUGIN_DOMAIN, PLUGIN_NAME  # noqa: E402
from layover_edge.runtime.factory import open_backend  # noqa: E402

CALIB = 64  # small for speed: the < 300 warning is asserted below


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return Path(run_demo(DemoConfig.quick(), out, progress=False, device="cpu")["methods"]["RM"]["checkpoint"])


@pytest.fixture(scope="module")
def exported(demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    assert main(["export", str(demo), "--out", str(out), "--int8", "--fp16", "--calib-data", "synthetic:train",
                 "--calib-size", str(CALIB), "--calib-method", "max", "--quiet", "--json"]) == 0
    return out


def test_export_writes_all_graphs_with_metadata(exported, demo):
    labels = json.loads((demo / "config.json").read_text())["model"]["labels"]
    for name, form, precision in (("model.onnx", "portable", "fp32"), ("model.plugin.onnx", "plugin", "fp32"),
                                  ("model.int8.onnx", "portable", "int8"), ("model.fp16.onnx", "portable", "fp16")):
        proto = onnx.load(str(exported / name))
        check_onnx(exported / name)
        meta = get_metadata(proto)
        assert (meta["form"], meta["precision"], meta["labels"]) == (form, precision, labels)
        assert meta["opset"] >= 18 and meta["image_size"] == 48 and meta["high_precision_nodes"]
        dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert dim.dim_param and not dim.dim_value  # dynamic batch axis
        assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]


def plugin_nodes(path):
    return [n for n in onnx.load(str(path)).graph.node if n.domain == PLUGIN_DOMAIN]


def test_plugin_graph_has_one_plugin_node(exported):
    proto = onnx.load(str(exported / "model.plugin.onnx"))
    plugin = plugin_nodes(exported / "model.plugin.onnx")
    assert [n.op_type for n in plugin] == [PLUGIN_NAME]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in plugin[0].attribute}
    assert attrs["mix"] == MIX_CODES["residual"] and len(plugin[0].input) == 6  # the demo's RM: the default mix
    assert not any(n.op_type == "ReduceMean" and n.name.startswith("node_ReduceMean") for n in proto.graph.node)


def test_int8_keeps_gate_and_classifier_unquantized(exported):
    proto = onnx.load(str(exported / "model.int8.onnx"))
    meta = get_metadata(proto)
    assert sum(n.op_type == "QuantizeLinear" for n in proto.graph.node) > 10
    producers = {o: n for n in proto.graph.node for o in n.output}
    head = set(meta["high_precision_nodes"])
    for node in proto.graph.node:
        if node.name in head and node.op_type in ("Gemm", "Sigmoid", "MatMul"):
            inputs = [producers.get(i) for i in node.input]
            assert not any(p is not None and p.op_type == "DequantizeLinear" for p in inputs), node.name
    assert meta["calibration"] == {"images": CALIB, "method": "max"}


@pytest.mark.parametrize("name", ["model.onnx", "model.plugin.onnx", "model.int8.onnx"])
def test_parity_passes(exported, demo, name, tmp_path):
    out = tmp_path / "report"
    rc = main(["parity", str(demo), "--against", str(exported / name), "--data", "synthetic:val",
               "--size", "128", "--out", str(out), "--quiet", "--json"])
    result = json.loads((out / "parity.json").read_text())
    assert rc == 0 and result["passed"], result["checks"]
    assert (out / "parity.md").read_text().startswith("# Parity")
    if "int8" in name:
        assert {c["check"] for c in result["checks"]} == {"mAP drop (points)", "tag agreement (%)"}
    else:
        assert result["tensor"]["logits"]["max_abs"] <= 1e-3 and result["polygraphy_logits_pass"] is True
        assert result["task"]["tag_agreement"] == 100.0


def test_parity_fails_with_exit_status_1(exported, demo, tmp_path):
    rc = main(["parity", str(demo), "--against", str(exported / "model.int8.onnx"), "--data", "synthetic:val",
               "--size", "64", "--max-logit-error", "1e-9", "--out", str(tmp_path), "--quiet", "--json"])
    assert rc == 1 and not json.loads((tmp_path / "parity.json").read_text())["passed"]


def test_onnx_file_alone_is_taggable(exported):
    backend = open_backend(exported / "model.fp16.onnx")
    x = np.zeros((3, 3, 48, 48), np.float32)
    probs = backend.predict(x)
    assert probs.shape == (3, len(backend.info.labels)) and probs.dtype == np.float32
    assert backend.metadata()["precision"] == "fp16"


def test_low_calibration_size_warns(exported, caplog):
    from layover_edge.export.data import calibration_images
    info = open_backend(exported / "model.onnx").info
    with caplog.at_level(logging.WARNING):
        images = calibration_images("synthetic:train", info, 40, progress=False)
    assert images.shape == (40, 3, 48, 48) and "only 40" in caplog.text


def test_bad_calibration_data(exported, tmp_path):
    from layover_edge.export.data import calibration_images
    info = open_backend(exported / "model.onnx").info
    np.save(tmp_path / "wrong.npy", np.zeros((64, 3, 32, 32), np.float32))
    with pytest.raises(LayoverError, match="shape"):
        calibration_images(str(tmp_path / "wrong.npy"), info, 64)
    np.save(tmp_path / "few.npy", np.zeros((8, 3, 48, 48), np.float32))
    with pytest.raises(LayoverError, match="only 8 calibration images"):
        calibration_images(str(tmp_path / "few.npy"), info, 64)
    with pytest.raises(LayoverError, match="classes"):
        calibration_images("synthetic:train:num_classes=12", info, 64)
    with pytest.raises(LayoverError, match="NAME:SPLIT"):
        calibration_images("synthetic", info, 64)


def test_quiet_int8_export_prints_nothing_of_modelopt(exported, tmp_path, capfd):
    """--quiet: no ModelOpt or ONNX Runtime progress and no "Failed to get GPU count" notice."""
    from layover_edge.export.quantize import quantize_int8
    images = np.random.default_rng(0).standard_normal((32, 3, 48, 48)).astype(np.float32)
    capfd.readouterr()
    quantize_int8(exported / "model.onnx", tmp_path / "model.int8.onnx", images, "max", quiet=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_int8_calibration_is_one_bar_not_a_line_per_image(exported, tmp_path, capfd):
    """ONNX Runtime's entropy calibrator prints a line and a bar per image (512 pairs at the default
    --calib-size): the export shows one bar instead, and what else ModelOpt says."""
    from layover_edge.export.quantize import quantize_int8
    images = np.random.default_rng(0).standard_normal((CALIB, 3, 48, 48)).astype(np.float32)
    capfd.readouterr()
    quantize_int8(exported / "model.onnx", tmp_path / "model.int8.onnx", images, "entropy", quiet=False)
    out, err = capfd.readouterr()
    assert out == "" and "Collecting tensor data" not in err
    assert "INT8 calibration: 100%" in err and f"{CALIB}/{CALIB}" in err
    assert err.count("\n") <= 2, err  # the bar ends in place (\r); a warning would be a line of its own


def test_int8_without_calibration_data_is_refused(demo, tmp_path, capsys):
    assert main(["export", str(demo), "--out", str(tmp_path), "--int8"]) == 2
    assert "never calibrated on random data" in capsys.readouterr().err


def test_truncated_and_foreign_checkpoints(demo, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(demo, broken)
    head = broken / "head.safetensors"
    head.write_bytes(head.read_bytes()[:100])
    with pytest.raises(LayoverError, match="cannot read"):
        export_onnx(broken, tmp_path / "x.onnx")
    with pytest.raises(LayoverError, match="not a layover-edge checkpoint"):
        export_onnx(tmp_path, tmp_path / "x.onnx")


def test_broken_onnx_fails_the_checker(exported, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes((exported / "model.onnx").read_bytes()[:5000])
    with pytest.raises(LayoverError, match="fails the ONNX checker"):
        check_onnx(bad)
    with pytest.raises(LayoverError, match="not a readable ONNX file"):
        open_backend(bad)


def test_lp_checkpoint_exports_portable_only(demo, tmp_path):
    lp = demo.parent.parent / "lp" / "best"
    assert main(["export", str(lp), "--out", str(tmp_path), "--quiet", "--json"]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["model.onnx"]
    with pytest.raises(LayoverError, match="plugin form needs the fused RM branch"):
        export_onnx(lp, tmp_path / "p.onnx", form="plugin")


@pytest.mark.parametrize("form", ["portable", "plugin"])
def test_a_paper_mix_checkpoint_exports_and_passes_parity(demo, tmp_path, form):
    paper = demo.parent.parent / "rm1-paper" / "best"
    assert json.loads((paper / "config.json").read_text())["model"]["mix"] == "paper"
    path = export_onnx(paper, tmp_path / f"{form}.onnx", form=form)  # verifies ONNX Runtime against PyTorch
    if form == "plugin":
        (node,) = plugin_nodes(path)
        assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["mix"] == MIX_CODES["paper"]
    out = tmp_path / "report"
    assert main(["parity", str(paper), "--against", str(path), "--data", "synthetic:val", "--size", "64",
                 "--out", str(out), "--quiet", "--json"]) == 0
    result = json.loads((out / "parity.json").read_text())
    assert result["passed"] and result["tensor"]["logits"]["max_abs"] <= 1e-3
