"""parity.md as a person reads it (issue 19 found "Polygraphy comparator on logits: None" and
"mAP drop -0"), and parity's precision taken from the graph, not from what its metadata claims."""
import json

import numpy as np
import onnx
import pytest
from onnx_fixtures import tiny_onnx
from PIL import Image

from layover_edge.apps.parity import Gates, compare, gates_for, markdown
from layover_edge.core.errors import LayoverError
from layover_edge.data.folder import ImageFolder
from layover_edge.runtime.factory import open_backend


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (10, 10, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append(f"{i}.png,{'a' if i % 2 else 'b'},val")
    (root / "labels.csv").write_text("path,labels,split\n" + "\n".join(rows) + "\n")
    return root


def report(photos, candidate, gates: Gates) -> tuple[dict, str]:
    result = compare(open_backend(tiny_onnx(photos / "ref.onnx")), open_backend(candidate), ImageFolder(photos, "val"),
                     4, gates, progress=False)
    return result, markdown(result, "t")


def test_a_gate_with_nothing_to_report_reads_as_words_and_zero(photos):
    result, text = report(photos, tiny_onnx(photos / "same.onnx"), Gates(max_map_drop=1.0))
    assert result["polygraphy_logits_pass"] is None and result["task"]["delta"]["mAP"] == 0
    assert "None" not in text
    assert "Polygraphy comparator on logits: not run (FP32 is judged on the task, below)" in text
    assert "| mAP drop (points) | 0 | ≤ 1 | pass |" in text and "| Δ | +0.00 | +0.00 | +0.00 |" in text


def test_polygraphy_verdict_is_a_word(photos):
    pytest.importorskip("polygraphy")
    _, text = report(photos, tiny_onnx(photos / "same.onnx"), gates_for("fp32"))
    assert "Polygraphy comparator on logits: pass" in text


def test_int8_gates_follow_the_graph_not_its_metadata(photos):
    """An FP32 graph whose metadata says int8 is refused by every reader; a real Q/DQ graph gets INT8's gates."""
    path = tiny_onnx(photos / "lying.onnx")
    proto = onnx.load(str(path))
    next(p for p in proto.metadata_props if p.key == "precision").value = json.dumps("int8")
    onnx.save(proto, str(path))
    with pytest.raises(LayoverError, match="metadata says precision 'int8' but the graph is fp32"):
        open_backend(path)
    q = open_backend(tiny_onnx(photos / "q.onnx", "int8"))
    assert q.metadata()["precision"] == "int8"
