"""Every TensorRT Python name the project uses exists in the real bindings of TensorRT 10.3 (JetPack 6),
10.13 and the newest 11.x, for the code paths each takes; the code uses no name outside that list;
and no call whose binding returns a status (a bool, an index, a handle) has its result dropped.

The bindings come from the package index and are imported against link-only stub libraries, for
introspection only (tests/tensorrt_surface.py): nothing here runs TensorRT or stands in for it.
"""
import ast
import json
import shutil
from pathlib import Path

import pytest
from tensorrt_surface import returns, surface

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ("10.3.0", "10.13.0.35", "11.4.0.106")
API = json.loads((ROOT / "tests" / "data" / "tensorrt" / "api.json").read_text())
# The modules that call TensorRT, and the names they bind its module to.
MODULES = ("export/build.py", "export/head.py", "layover_edge/runtime/tensorrt_backend.py",
           "layover_edge/core/tensorrt.py")
CACHE = Path.home() / ".cache" / "layover-edge" / "tensorrt-bindings"

missing_tools = [t for t in ("gcc", "nm", "readelf", "ldd") if shutil.which(t) is None]
pytestmark = pytest.mark.skipif(bool(missing_tools), reason=f"needs {', '.join(missing_tools)} to build the stubs")


@pytest.fixture(scope="module")
def surfaces(tmp_path_factory):
    return {v: surface(v, CACHE, tmp_path_factory.mktemp(f"trt-{v}")) for v in VERSIONS}


def has(s: dict, name: str) -> bool:
    if name == "__version__":
        return bool(s["version"])
    head, _, attr = name.partition(".")
    if not attr:
        return head in s["classes"] or head in s["functions"] or head in s["enums"] or head in ("float32", "float16")
    return attr in s["classes"].get(head, {}) or attr in s["enums"].get(head, {})


def used(s: dict, name: str) -> str:
    head, _, attr = name.partition(".")
    return s["classes"].get(head, {}).get(attr, "")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_name_the_code_paths_take_exists(surfaces, version):
    s = surfaces[version]
    assert s["version"] == version
    names = API["all"] + (API["10"] if version.startswith("10.") else [])
    assert [n for n in names if not has(s, n)] == []


def test_tensorrt_11_lost_the_weak_typing_names_the_10_path_uses(surfaces):
    """Why precision_mode refuses weak typing on 11: these really are gone there."""
    assert [n for n in API["10"] if has(surfaces["11.4.0.106"], n)] == []
    assert surfaces["11.4.0.106"]["enums"]["NetworkDefinitionCreationFlag"]["STRONGLY_TYPED"] == 0  # was 1 in 10.x


def attribute_uses() -> dict[str, list[tuple[str, int, bool]]]:
    """attribute name -> (module, line, result dropped) for every attribute access in the TensorRT modules
    (``trt.X`` chains as "X" and "X.Y")."""
    out: dict[str, list] = {}
    for rel in MODULES:
        tree = ast.parse((ROOT / rel).read_text())
        dropped = {id(n.value.func) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                if isinstance(node.value, ast.Name) and node.value.id == "trt":
                    out.setdefault(f"trt:{node.attr}", []).append((rel, node.lineno, False))
                elif isinstance(node.value, ast.Attribute) and isinstance(node.value.value, ast.Name) \
                        and node.value.value.id == "trt":
                    out.setdefault(f"trt:{node.value.attr}.{node.attr}", []).append((rel, node.lineno, False))
                out.setdefault(node.attr, []).append((rel, node.lineno, id(node) in dropped))
    return out


def test_the_code_uses_no_tensorrt_name_outside_the_list(surfaces):
    listed = set(API["all"]) | set(API["10"])
    uses = attribute_uses()
    module_names = {k[4:] for k in uses if k.startswith("trt:")}
    heads = {n.partition(".")[0] for n in listed}
    assert module_names - listed - heads == set(), "trt.X used but not in tests/data/tensorrt/api.json"
    # any attribute name that some binding class has must be listed under one of its classes
    members = {a for s in surfaces.values() for attrs in s["classes"].values() for a in attrs}
    listed_attrs = {n.partition(".")[2] for n in listed} | {n for n in listed if "." not in n}
    ours = {"engine", "context", "path", "input", "outputs", "type", "shape", "mode", "batch", "meta", "plugins",
            "timing_cache", "dla_core", "precision", "onnx", "node"}  # our objects' (and ONNX's), not TensorRT's
    ours |= set(dir(list)) | set(dir(dict)) | set(dir(str))
    unlisted = {a: u[:1] for a, u in uses.items() if not a.startswith("trt:") and a in members
                and a not in listed_attrs and a not in ours}
    assert unlisted == {}, "TensorRT-looking attributes used but not listed (or add them to `ours`)"


def test_no_status_returned_by_tensorrt_is_dropped(surfaces):
    """set_input_shape, set_tensor_address, set_timing_cache, init_libnvinfer_plugins... return a status
    (pyCore.cpp, release/10.3): a call whose result is thrown away hides a failure."""
    listed = set(API["all"]) | set(API["10"])
    status = {}
    for name in listed:
        for s in surfaces.values():
            sig = used(s, name) or s["functions"].get(name, "")
            kinds = returns(sig) if "->" in sig else set()
            if kinds - {"None"}:
                status[name.partition(".")[2] or name] = kinds
    dropped = {a: [f"{m}:{line}" for m, line, d in u if d] for a, u in attribute_uses().items() if a in status}
    assert {a: where for a, where in dropped.items() if where} == {}
