"""The house's rules, checked from the code: imports point down the layers only, export and
runtime never import each other, nothing is a symlink, and no module loads under two names."""
import ast
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Each package may import only packages of a lower rank (and itself).
RANK = {"core": 0, "kernels": 1, "artifacts": 1, "data": 2, "models": 2, "training": 3, "export": 4, "runtime": 4,
        "apps": 5, "cli": 6, "api": 6, "__init__": 7, "__main__": 7}


def package_dirs() -> dict[str, Path]:
    """Import name -> folder, as pyproject's package-dir installs them."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def modules() -> dict[str, Path]:
    """Every module of the distribution by its import name."""
    dirs = package_dirs()
    found = {}
    for name, folder in sorted(dirs.items(), key=lambda kv: -len(kv[0])):
        for path in folder.rglob("*.py"):
            if path in found.values():
                continue
            rel = path.relative_to(folder).with_suffix("").parts
            rel = rel[:-1] if rel[-1] == "__init__" else rel
            found[".".join((name, *rel))] = path
    return found


def imported(module: str, path: Path) -> set[str]:
    """Absolute names of the layover_edge modules ``module`` imports (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + is_package]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            out.add(target)
    return {t for t in out if t == "layover_edge" or t.startswith("layover_edge.")}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def package_graph() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the modules behind that arrow."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, path in modules().items():
        for target in imported(module, path):
            a, b = package_of(module), package_of(target)
            if a != b and b != "__init__":
                edges.setdefault((a, b), []).append(f"{module} -> {target}")
    return edges


def test_every_module_belongs_to_a_layer():
    assert {package_of(m) for m in modules()} <= set(RANK)


def test_imports_point_down_only():
    upward = {edge: why for edge, why in package_graph().items() if RANK[edge[1]] >= RANK[edge[0]]}
    assert not upward, "imports that do not point down a layer:\n" + "\n".join(
        line for why in upward.values() for line in why)


def test_export_and_runtime_do_not_import_each_other():
    graph = package_graph()
    assert ("export", "runtime") not in graph and ("runtime", "export") not in graph


def test_no_symlinks_in_the_repository():
    listing = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not [line for line in listing.splitlines() if line.startswith("120000")]


@pytest.mark.parametrize("name", ["kernels", "export"])
def test_top_level_folders_do_not_import_under_their_folder_name(name):
    """From the repository root (on sys.path when the tests run) ``import kernels`` would be a second
    copy of ``layover_edge.kernels``: it is refused."""
    result = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and f"layover_edge.{name}" in result.stderr


def test_no_module_loads_under_two_names():
    """Import every module from the repository root, then check each file was loaded once."""
    code = ("import importlib, sys, json\n"
            f"for m in {sorted(modules())!r}:\n"
            "    if m != 'layover_edge.__main__':\n"
            "        importlib.import_module(m)\n"
            "files = [(n, getattr(m, '__file__', None)) for n, m in list(sys.modules.items())]\n"
            "print(json.dumps(files))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    ours = {str(p) for p in modules().values()}
    loaded = [(name, file) for name, file in json.loads(result.stdout) if file in ours]
    by_file: dict[str, list[str]] = {}
    for name, file in loaded:
        by_file.setdefault(file, []).append(name)
    assert {f: n for f, n in by_file.items() if len(n) > 1} == {}
    assert {n for n, _ in loaded} >= set(modules()) - {"layover_edge.__main__"}


def test_every_cli_verb_is_a_thin_call():
    """A verb parses, makes one library call and prints: its function stays under 25 lines."""
    import argparse
    import inspect

    from layover_edge.cli import build_parser
    (verbs,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    lengths = {name: len(inspect.getsource(sub.get_default("func")).splitlines()) for name, sub in verbs.choices.items()}
    assert len(lengths) >= 15 and max(lengths.values()) <= 25, lengths


def test_the_readme_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("\n## Layout"):]
    layout = layout[: layout.find("\n## ", 1) if "\n## " in layout[1:] else None]
    unnamed = [str(p.relative_to(ROOT)) for p in modules().values()
               if p.name != "__init__.py" and p.name not in layout]
    assert not unnamed, f"README 'Layout' does not name {unnamed}"
