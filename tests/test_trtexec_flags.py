"""Every trtexec command ``layover-edge build`` can print is one that trtexec's option parser of
TensorRT 10.3, 10.13 and 11.1 accepts and that builds: checked against the flag tables and rules
extracted from NVIDIA/TensorRT samples/common/sampleOptions.cpp and sampleEngines.cpp at each
release branch (tests/data/tensorrt/trtexec-flags.json, with commits and line numbers)."""
import itertools
import json
import re
from pathlib import Path

import pytest

pytest.importorskip("onnx")
from onnx_fixtures import tiny_onnx  # noqa: E402

from layover_edge.core.errors import LayoverError  # noqa: E402
from layover_edge.export.build import prepare_build  # noqa: E402
from layover_edge.export.targets import get_target  # noqa: E402

TABLES = json.loads((Path(__file__).parent / "data" / "tensorrt" / "trtexec-flags.json").read_text())["versions"]
# TensorRT version the command is printed for -> the parser's branch
BRANCH = {"10.3.0": "10.3", "10.13.0": "10.13", "10.16.0": "10.13", "11.1.0": "11.1", "11.4.1": "11.1"}
SHAPE = re.compile(r"^image:\d+x3x8x8$")
LAYERS = re.compile(r"^[^,:]+:fp32(,[^,:]+:fp32)*$")


def commands(tmp_path, with_precision=False):
    """(version, plugin, static, dla, command) for every combination prepare_build accepts (and the
    requested precision first, ``with_precision``)."""
    lib = tmp_path / "liblayover_plugins.so"
    lib.write_bytes(b"\x7fELF")
    out = []
    for graph, precision in (("fp32", "fp32"), ("fp32", "fp16"), ("fp16", "fp16"), ("int8", "int8")):
        for version, plugin, static, dla, cache in itertools.product(BRANCH, (False, True), (False, True),
                                                                      (None, 0), (None, "tc.cache")):
            path = tiny_onnx(tmp_path / f"{graph}-{plugin}-{static}.onnx", graph, plugin=plugin,
                             batch=4 if static else "batch")
            try:
                req = prepare_build(path, tmp_path / "m.engine", precision, get_target("orin-agx"), version,
                                    batch=(4, 4, 4) if dla is not None else None, dla_core=dla,
                                    plugins=[str(lib)] if plugin else [], timing_cache=cache)
            except LayoverError:
                continue  # refused before any command is printed (e.g. weak FP16 on 11, DLA on 10.13)
            row = (version, plugin, static, dla, req.trtexec())
            out.append((precision, *row) if with_precision else row)
    return out


def flags(command: str) -> dict[str, list[str | None]]:
    parsed: dict[str, list] = {}
    for arg in command.split()[1:]:
        name, eq, value = arg.partition("=")
        parsed.setdefault(name, []).append(value if eq else None)
    return parsed


def test_every_printed_command_parses_and_builds(tmp_path):
    printed = commands(tmp_path)
    assert {v for v, *_ in printed} == set(BRANCH)  # every version printed something
    for version, plugin, static, dla, command in printed:
        table = TABLES[BRANCH[version]]["flags"]
        f = flags(command)
        where = f"{version}: {command}"
        for name, values in f.items():
            assert name in table, f"{name} is not a trtexec {BRANCH[version]} flag ({where})"
            assert not table[name].get("deprecated"), where
            assert all((v is None) == (table[name]["value"] is None) for v in values), f"{name} value ({where})"
            assert len(values) == 1 or name == "--dynamicPlugins", where  # shape flags may not repeat without --profile
        # static_model_refuses_shapes: shapes only for a dynamic input, and then all three
        shapes = {"--minShapes", "--optShapes", "--maxShapes"} & set(f)
        assert shapes == (set() if static else {"--minShapes", "--optShapes", "--maxShapes"}), where
        assert all(SHAPE.match(f[s][0]) for s in shapes), where
        assert re.fullmatch(r"workspace:\d+M", f["--memPoolSize"][0]), where
        # stronglyTyped_clears_weak_flags (10.x): a strongly typed build carries no precision flag
        if "--stronglyTyped" in f:
            assert not {"--int8", "--fp16", "--precisionConstraints"} & set(f), where
        # dla_flags_set_by_trtexec: --useDLACore sets kFP16 unless --int8, refused on a strongly typed network;
        # dla_obey_conflicts_with_prefer: it also sets kPREFER, so never obey
        if "--useDLACore" in f and version.startswith("10."):
            assert "--stronglyTyped" not in f and "--fp16" in f and "--allowGPUFallback" in f, where
            assert f.get("--precisionConstraints") == ["prefer"], where
        # layer_names_in_precision_flags: only with constraints, exact names typed fp32, both lists alike
        if "--layerPrecisions" in f or "--layerOutputTypes" in f:
            assert f["--precisionConstraints"][0] in ("obey", "prefer"), where
            assert f["--layerPrecisions"] == f["--layerOutputTypes"] and LAYERS.match(f["--layerPrecisions"][0])
        assert ("--dynamicPlugins" in f) == plugin and "--skipInference" in f, where


def test_fp32_commands_turn_tf32_off(tmp_path):
    """TF32 is on by default (BuilderFlag.TF32's docstring in the 10.3/10.13/11.4 bindings: "Enabled by
    default"); an FP32 engine is gated at |Δlogit| ≤ 1e-3, so its command carries --noTF32 (a switch in all
    three parsers' tables), and the FP16/INT8 ones leave TensorRT's default."""
    printed = commands(tmp_path, with_precision=True)
    assert {p for p, *_ in printed} == {"fp32", "fp16", "int8"}
    for precision, version, *_, command in printed:
        assert ("--noTF32" in flags(command)) == (precision == "fp32"), f"{version}: {command}"
        assert TABLES[BRANCH[version]]["flags"]["--noTF32"]["value"] is None


def test_tables_have_their_provenance():
    for branch, table in TABLES.items():
        assert table["source"]["ref"] == f"release/{branch}" and len(table["source"]["commit"]) == 40
        assert {"--onnx", "--saveEngine", "--memPoolSize", "--useDLACore"} <= set(table["flags"])
    assert "--fp16" in TABLES["10.3"]["flags"] and "--fp16" not in TABLES["11.1"]["flags"]
