"""Who the TensorRT plugin is: its creator name, version and namespace, the ONNX domain of its node,
and the codes of its ``layout`` and ``mix`` attributes. Torch-free, so the ONNX Runtime backend can use it.

Name, version and namespace are read from the plugin's schema, ``plugin/LayoverFusedMix_PluginConfig.yaml``
(package data of layover_edge.kernels, so this works from an installed wheel too), the one place
they are written. The root CMakeLists.txt reads the same file with the same three patterns
(``plugin/identity.cmake``) and compiles the strings into the plugin. No YAML library: the
patterns below read only these top-level keys, and the first key under ``versions:``.
"""
from __future__ import annotations

import re
from importlib.resources import files

SCHEMA = "LayoverFusedMix_PluginConfig.yaml"
# The same regular expressions as plugin/identity.cmake (CMake's regex dialect is a subset of Python's).
PATTERNS = {"name": r'\nname:[ ]*"?([A-Za-z0-9_.]+)',
            "namespace": r'\nnamespace:[ ]*"?([A-Za-z0-9_.]+)',
            "version": r'\nversions:[ ]*\n[ ]+"?([A-Za-z0-9_.]+)"?:'}


def read_identity(text: str) -> dict[str, str]:
    """{"name", "namespace", "version"} of a plugin schema's text."""
    found = {}
    for key, pattern in PATTERNS.items():
        m = re.search(pattern, "\n" + text)
        if m is None:
            raise ValueError(f"the plugin schema has no top-level {key!r} (pattern {pattern!r})")
        found[key] = m.group(1)
    return found


_IDENTITY = read_identity((files(__package__) / "plugin" / SCHEMA).read_text(encoding="utf-8"))
PLUGIN_NAME = _IDENTITY["name"]
PLUGIN_VERSION = _IDENTITY["version"]
PLUGIN_NAMESPACE = _IDENTITY["namespace"]
# The plugin's two libraries, as the root CMakeLists.txt names its targets: one registers its creator when
# IPluginRegistry::loadLibrary (or trtexec --dynamicPlugins) asks it to, the other the moment it is
# loaded, for loaders that only dlopen (Triton's tensorrt backend, LD_PRELOAD, trtexec --staticPlugins).
PLUGIN_LIBRARY = "liblayover_plugins.so"
PLUGIN_LIBRARY_SELF_REGISTERING = "liblayover_plugins_static.so"
# The only custom domain whose Python ops ONNX Runtime (through onnxruntime-extensions) runs.
PLUGIN_DOMAIN = "ai.onnx.contrib"
# The plugin's integer ``layout`` attribute: enum LayoverLayout of fused_mix.h (a test checks they agree).
LAYOUT_CODES = {"NCHW": 0, "NHWC": 1, "NLC": 2}
# The plugin's integer ``mix`` attribute: enum LayoverMix of fused_mix.h (reference.MIXES names them).
MIX_CODES = {"paper": 0, "residual": 1}
