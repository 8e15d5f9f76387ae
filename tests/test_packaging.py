"""The package as pip builds it from pyproject.toml: no setuptools warnings (issue 19 counted about
60 lines of them in scripts/setup.sh), and the TensorRT plugin's sources inside the wheel."""
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_builds_without_setuptools_warnings(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("layover_edge", "kernels", "export"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "BuildBackendWarning" not in log and "DeprecationWarning" not in log, \
        [line for line in log.splitlines() if "Warning" in line]
    wheel = next((tmp_path / "dist").glob("layover_edge-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"layover_edge/kernels/plugin/fusedMixPlugin.cpp", "layover_edge/kernels/plugin/fusedMixPlugin.h",
            "layover_edge/kernels/fused_mix.cu", "layover_edge/export/README.md"} <= names
