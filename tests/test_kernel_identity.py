"""The TensorRT plugin's identity is written once, in its schema kernels/plugin/LayoverFusedMix_PluginConfig.yaml:
kernels/identity.py and the root CMakeLists.txt (kernels/plugin/identity.cmake) both read it, and the
layout codes agree with fused_mix.h. The compiled plugin's own report of its identity is checked
where the plugin is built (test_kernel_build.py, needs TensorRT headers)."""
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from layover_edge.kernels import identity

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "kernels" / "plugin"
SCHEMA = PLUGIN / identity.SCHEMA


@pytest.mark.skipif(not shutil.which("cmake"), reason="needs cmake on PATH")
def test_cmake_reads_the_same_identity(tmp_path):
    # The real extraction code of the build, run as a CMake script.
    script = tmp_path / "identity.cmake"
    script.write_text(f'include("{PLUGIN / "identity.cmake"}")\n'
                      f'layover_plugin_identity("{SCHEMA}" NAME VERSION NAMESPACE)\n'
                      'message(STATUS "name=${NAME} version=${VERSION} namespace=${NAMESPACE}")\n')
    result = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True, check=True)
    assert f"name={identity.PLUGIN_NAME} version={identity.PLUGIN_VERSION} " \
           f"namespace={identity.PLUGIN_NAMESPACE}" in result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("cmake"), reason="needs cmake on PATH")
def test_cmake_refuses_a_schema_without_an_identity(tmp_path):
    schema = tmp_path / "broken.yaml"
    schema.write_text("namespace: layover\nversions:\n  \"1\":\n    inputs: []\n")  # no name
    script = tmp_path / "identity.cmake"
    script.write_text(f'include("{PLUGIN / "identity.cmake"}")\nlayover_plugin_identity("{schema}" N V NS)\n')
    result = subprocess.run(["cmake", "-P", str(script)], capture_output=True, text=True)
    assert result.returncode != 0 and "no top-level 'name'" in result.stderr
    with pytest.raises(ValueError, match="'name'"):
        identity.read_identity(schema.read_text())


def test_identity_is_the_schemas():
    yaml = pytest.importorskip("yaml")  # a test-only cross-check; the package reads the file without PyYAML
    schema = yaml.safe_load(SCHEMA.read_text())
    assert (schema["name"], schema["namespace"], list(schema["versions"])) == (
        identity.PLUGIN_NAME, identity.PLUGIN_NAMESPACE, [identity.PLUGIN_VERSION])
    (version,) = schema["versions"].values()
    assert version["attribute_options"]["layout"] == sorted(identity.LAYOUT_CODES.values())
    assert version["attribute_options"]["mix"] == sorted(identity.MIX_CODES.values())
    # the inputs the ONNX node and the TensorRT plugin take, in order
    assert version["inputs"] == ["h", "z", "w_rs", "b_rs", "w_sl", "b_sl"]
    assert set(version["attributes"]) == {"layout", "mix"} and version["attributes_required"] == ["mix"]


def test_layout_and_mix_codes_match_the_header_and_name_every_mix():
    header = (ROOT / "kernels" / "fused_mix.h").read_text()
    enum = re.search(r"enum LayoverLayout \{(.*?)\};", header, re.S).group(1)
    assert dict((name, int(code)) for name, code in re.findall(r"LAYOVER_(\w+) = (\d+)", enum)) == identity.LAYOUT_CODES
    from layover_edge.kernels.reference import MIXES
    assert sorted(identity.MIX_CODES) == sorted(MIXES)


def test_schema_ships_as_package_data_and_loads_without_torch():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert package_data["layover_edge.kernels.plugin"] == ["*"]  # the schema and identity.cmake
    code = ("import sys\nfrom layover_edge.kernels import identity\n"
            "print(identity.PLUGIN_NAME, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == [identity.PLUGIN_NAME, "False"]
