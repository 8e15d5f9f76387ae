"""The names and pybind11 signatures of the real TensorRT Python bindings, read without TensorRT.

``tensorrt-cu12-bindings`` wheels install from the package index, but importing them needs
libnvinfer, libnvinfer_plugin and libnvonnxparser, which do not. So the wheel is downloaded (not
installed) into a cache folder, the TensorRT sonames and symbols it links against are read from
it (readelf, nm), gcc builds link-only stub libraries with exactly those, and a child interpreter
imports the bindings against the stubs and dumps class, attribute and enum names with their
docstring signatures.

INTROSPECTION ONLY: the child reads ``dir``, class ``__dict__``, ``__doc__`` and enum
``__members__``; it calls nothing in TensorRT. Every stub function prints that it was called and
aborts, so an accidental call kills the child and fails the test. The stubs say nothing about what
TensorRT does; only which names exist and what pybind11 says they return.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

TRT_LIB = re.compile(r"^lib(nvinfer|nvinfer_plugin|nvonnxparser)\.so\.\d+$")
SYSTEM = ("Py", "_Py", "dl", "pthread_", "__", "_ITM_", "_ZGTt")
CHILD = r"""
import json, re, sys
import tensorrt_bindings as t
def sig(doc, name):  # every overload's line, " | "-joined; pybind's "(*args, **kwargs)" header dropped
    lines = [re.sub(r"^\d+\.\s*", "", ln.strip()) for ln in (doc or "").splitlines()]
    lines = [ln for ln in lines if ln.startswith(name + "(") and "->" in ln]
    return " | ".join(lines) or None
out = {"version": t.__version__, "classes": {}, "enums": {}, "functions": {}}
for name in dir(t):
    obj = getattr(t, name)
    if isinstance(obj, type):
        members = getattr(obj, "__members__", None)
        attrs = {}
        for a in dir(obj):
            if a.startswith("__"):
                continue
            raw = next((k.__dict__[a] for k in obj.__mro__ if a in k.__dict__), None)
            attrs[a] = "property" if isinstance(raw, property) else sig(getattr(raw, "__doc__", None), a) or "attribute"
        if members is not None:
            out["enums"][name] = {m: int(getattr(v, "value", v)) for m, v in members.items()}
        out["classes"][name] = attrs
    elif callable(obj):
        out["functions"][name] = sig(obj.__doc__, name) or "function"
json.dump(out, open(sys.argv[1], "w"))
"""


def _run(cmd: list[str], **kw) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def wheel(version: str, cache: Path) -> Path:
    folder = cache / version
    found = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    if not found:
        _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet",
              "--disable-pip-version-check", "-d", str(folder), f"tensorrt-cu12-bindings=={version}"])
        found = sorted(folder.glob("tensorrt_cu12_bindings-*.whl"))
    return found[-1]


def _stubs(so: Path, out: Path) -> None:
    """One stub library per TensorRT soname the bindings need, defining every symbol they take
    from TensorRT (those no system library they link provides)."""
    sonames = [n for n in re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", _run(["readelf", "-d", str(so)]))
               if TRT_LIB.match(n)]
    system = set()
    for lib in re.findall(r"=>\s+(/\S+)", _run(["ldd", str(so)])):
        system |= {ln.split()[-1].split("@")[0] for ln in _run(["nm", "-D", "--defined-only", lib]).splitlines()
                   if ln.strip()}
    symbols = sorted({ln.split()[-1] for ln in _run(["nm", "-D", "--undefined-only", str(so)]).splitlines()
                      if ln.split()[-2] == "U" and "@" not in ln.split()[-1]} - system)
    symbols = [s for s in symbols if not s.startswith(SYSTEM)]
    body = ('#include <stdio.h>\n#include <stdlib.h>\n'
            + "".join(f'void *{s}(void) {{ fprintf(stderr, "stub {s} was called\\n"); abort(); }}\n' for s in symbols))
    (out / "stub.c").write_text(body)
    for soname in sonames:  # every library gets every symbol: the dynamic linker takes the first it finds
        _run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", str(out / soname), str(out / "stub.c")])


def surface(version: str, cache: Path, work: Path) -> dict:
    """{"version", "classes": {Class: {attr: signature | "property" | "attribute"}}, "enums": {...},
    "functions": {...}} of the bindings ``version``."""
    site, stubs = work / "site", work / "stubs"
    stubs.mkdir(parents=True)
    with zipfile.ZipFile(wheel(version, cache)) as z:
        z.extractall(site, [n for n in z.namelist() if n.startswith("tensorrt_bindings/")])
    _stubs(site / "tensorrt_bindings" / "tensorrt.so", stubs)
    env = dict(os.environ, LD_LIBRARY_PATH=str(stubs), PYTHONPATH=str(site), PYTHONNOUSERSITE="1")
    child = subprocess.run([sys.executable, "-S", "-c", CHILD, str(work / "surface.json")], env=env,
                           capture_output=True, text=True, cwd=work)
    if child.returncode != 0:
        raise RuntimeError(f"importing the {version} bindings against stubs failed:\n{child.stderr[-3000:]}")
    return json.loads((work / "surface.json").read_text())


def returns(signature: str) -> set[str]:
    """What pybind11's signature lines say a call returns ({"None"}, {"bool"}, ...), over its overloads."""
    return {line.rsplit("->", 1)[1].strip() for line in signature.split(" | ") if "->" in line}
