"""Which TensorRT layers the FP32 pinning covers (export/head.py), checked without TensorRT.

The walk runs on (name, inputs, outputs) tuples; here they describe networks the way onnx-tensorrt
builds them, from its source: a registered layer takes its ONNX node's name, an initializer becomes a
constant layer named after it (importerUtils.cpp convertToTensor, release/10.1-GA l.434-459), every
tensor keeps its ONNX name, and the Gemm importer leaves the bias ElementWise unregistered
(onnxOpImporters.cpp l.2042-2079), so it keeps a default "(Unnamed Layer* N) [ElementWise]" name."""
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from layover_edge.artifacts.onnx_metadata import get_metadata  # noqa: E402
from layover_edge.export.head import head_boundary, head_layers  # noqa: E402


def as_parsed(graph):
    """One layer per ONNX node (named after it) and per initializer (a constant layer)."""
    layers = [(t.name, [], [t.name]) for t in graph.initializer]
    layers += [(n.name, list(n.input), list(n.output)) for n in graph.node]
    return layers, {i.name for i in graph.input} - {t.name for t in graph.initializer}


def test_an_unnamed_bias_add_is_pinned_where_a_name_match_misses_it():
    # Gemm(f, w, b) as the parser builds it: constants w, b, the MatMul named after the node, and an
    # unregistered bias add whose output is renamed to the node's output "logits".
    layers = [("pool", ["image"], ["p"]), ("flat", ["p"], ["f"]), ("w", [], ["w"]),
              ("node_linear_0", ["f", "w"], ["(Unnamed Layer* 3) [Matrix Multiply]_output"]), ("b", [], ["b"]),
              ("ONNXTRT_Broadcast", ["b"], ["b_broadcast"]),
              ("(Unnamed Layer* 6) [ElementWise]", ["(Unnamed Layer* 3) [Matrix Multiply]_output", "b_broadcast"],
               ["logits"]),
              ("node_sigmoid", ["logits"], ["probabilities"])]
    head = [layers[i][0] for i in head_layers(layers, {"image"}, {"f"}, {"logits", "probabilities"})]
    assert head == ["w", "node_linear_0", "b", "ONNXTRT_Broadcast", "(Unnamed Layer* 6) [ElementWise]",
                    "node_sigmoid"]
    by_name = [n for n, _, _ in layers if any(n == h or n.startswith(h + "_") for h in ("node_linear_0", "node_sigmoid"))]
    assert "(Unnamed Layer* 6) [ElementWise]" not in by_name  # what the old name match pinned


@pytest.fixture(scope="module")
def rm_path(tmp_path_factory):
    from layover_edge.core.config import ModelConfig
    from layover_edge.export.onnx import export_onnx
    from layover_edge.models import build_model, save_checkpoint
    cfg = ModelConfig(backbone="test_convnext", num_classes=3, method="rm", weights="none", image_size=32)
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("rm")
    return export_onnx(save_checkpoint(build_model(cfg), cfg, root / "ckpt"), root / "m.onnx")


@pytest.fixture(scope="module")
def rm_graph(rm_path):
    proto = onnx.load(str(rm_path))
    return proto.graph, get_metadata(proto)["high_precision_nodes"]


def test_the_walk_takes_the_head_and_nothing_of_the_backbone(rm_graph):
    """The tap tensor h feeds both the head and the backbone's next stage: the walk must stop there."""
    graph, names = rm_graph
    entry, produced, weights = head_boundary(graph, set(names))
    layers, inputs = as_parsed(graph)
    head = {layers[i][0] for i in head_layers(layers, inputs, entry, produced)}
    assert head == set(names) | weights
    assert len(entry) == 2  # h (the tap) and z (the pre-logits)
    # a Gemm with a bias would leave an unnamed layer; one without is a single registered MatMul
    assert not any(n.op_type == "Gemm" and len(n.input) > 2 for n in graph.node if n.name in names)


def test_a_head_whose_input_vanished_is_an_error(rm_graph):
    graph, names = rm_graph
    entry, produced, _ = head_boundary(graph, set(names))
    layers, inputs = as_parsed(graph)
    gone = next(iter(entry))
    renamed = [(n, ins, [o + "'" if o == gone else o for o in outs]) for n, ins, outs in layers]
    with pytest.raises(LookupError, match="not in the TensorRT network"):
        head_layers(renamed, inputs, entry, produced)


def test_the_printed_trtexec_list_names_only_float_layers(rm_path, tmp_path):
    """trtexec pins a --layerPrecisions/--layerOutputTypes name that matches exactly as given; only a
    wildcard match is skipped for shape tensors and non-float types (samples/common/sampleEngines.cpp,
    release/10.3 l.454-458 against l.460-490). So the command may name the head's float weights, never an
    integer one such as ReduceMean's INT64 axes."""
    from layover_edge.export.build import prepare_build
    from layover_edge.export.targets import get_target
    graph = onnx.load(str(rm_path)).graph
    types = {t.name: t.data_type for t in graph.initializer}
    pinned = prepare_build(rm_path, tmp_path / "m.engine", "fp16", get_target("orin-agx"), "10.3.0").pinned
    weights = [n for n in pinned if n in types]
    assert weights and {types[n] for n in weights} == {onnx.TensorProto.FLOAT}
    names = set(get_metadata(onnx.load(str(rm_path)))["high_precision_nodes"])
    integer = [t for t in head_boundary(graph, names)[2] if types.get(t) == onnx.TensorProto.INT64]
    assert integer and not set(integer) & set(pinned)  # the head reads an INT64 constant; it is not named
