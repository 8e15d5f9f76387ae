"""Every cuda-python runtime call in core/cuda.py (streams, memory, graphs, the events ``bench``
times engines with) exists in the installed cuda-bindings and takes the arguments we pass, read
from the binding's own signatures (its Cython functions print them as their docstring's first line)."""
import ast
import re
from pathlib import Path

import pytest

runtime = pytest.importorskip("cuda.bindings.runtime", reason="cuda-python (cuda-bindings) is not installed")

SOURCE = Path(__file__).resolve().parents[1] / "layover_edge" / "core" / "cuda.py"


def calls() -> dict[str, int]:
    """cudaXxx name -> the number of arguments core/cuda.py passes (through ``_call(fn, *args)`` or directly)."""
    out = {}
    for node in ast.walk(ast.parse(SOURCE.read_text())):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "_call" and node.args:
            fn, args = node.args[0], node.args[1:]
        else:
            fn, args = node.func, node.args
        if isinstance(fn, ast.Attribute) and fn.attr.startswith("cuda") and fn.attr[4:5].isupper():
            out[fn.attr] = len(args)
    return out


def test_runtime_calls_match_the_binding():
    used = calls()
    assert {"cudaEventCreate", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime",
            "cudaStreamBeginCapture", "cudaGraphLaunch", "cudaMemcpyAsync"} <= set(used)
    for name, n in used.items():
        fn = getattr(runtime, name, None)
        assert fn is not None, f"cuda-bindings has no {name}"
        sig = re.match(rf"{name}\((.*)\)", (fn.__doc__ or "").strip())
        assert sig, f"{name}: no signature in its docstring"
        params = [p for p in sig.group(1).split(",") if p.strip()]
        assert len(params) == n, f"{name}{sig.group(0)[len(name):]} called with {n} arguments"
