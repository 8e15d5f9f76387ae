"""trtexec beside bench: its performance summary parsed from real logs posted in GitHub issues
(cited per case), and every flag of the command we run checked against trtexec's own option
parser at TensorRT 10.3, 10.13 and 11.1 (tests/data/tensorrt/, extracted from NVIDIA/TensorRT
samples/common/sampleOptions.cpp with commits and line numbers)."""
import json
from pathlib import Path

import pytest

from layover_edge.apps.trtexec_timing import command, parse_metric, parse_summary

DATA = Path(__file__).parent / "data" / "tensorrt"
INFERENCE = json.loads((DATA / "trtexec-inference-flags.json").read_text())["versions"]
BUILD = json.loads((DATA / "trtexec-flags.json").read_text())["versions"]

# TensorRT 10.x on an x86 GPU: NVIDIA/TensorRT#4177 (comment by lix19937, 2024-10-03)
TRT10_LOG = """\
[10/03/2024-10:47:59] [I] === Performance summary ===
[10/03/2024-10:47:59] [I] Throughput: 130.298 qps
[10/03/2024-10:47:59] [I] Latency: min = 5.38672 ms, max = 13.3664 ms, mean = 7.60628 ms, median = 7.16092 ms, percentile(90%) = 10.2996 ms, percentile(95%) = 10.8698 ms, percentile(99%) = 12.9675 ms
[10/03/2024-10:47:59] [I] Enqueue Time: min = 2.72876 ms, max = 15.0201 ms, mean = 7.63062 ms, median = 7.86694 ms, percentile(90%) = 10.1792 ms, percentile(95%) = 11.7217 ms, percentile(99%) = 14.1848 ms
[10/03/2024-10:47:59] [I] H2D Latency: min = 0.0065918 ms, max = 0.0698242 ms, mean = 0.0122212 ms, median = 0.00814819 ms, percentile(90%) = 0.0253906 ms, percentile(95%) = 0.0270996 ms, percentile(99%) = 0.0515137 ms
[10/03/2024-10:47:59] [I] GPU Compute Time: min = 5.34595 ms, max = 13.3388 ms, mean = 7.58404 ms, median = 7.14139 ms, percentile(90%) = 10.2881 ms, percentile(95%) = 10.8175 ms, percentile(99%) = 12.9485 ms
[10/03/2024-10:47:59] [I] D2H Latency: min = 0.00390625 ms, max = 0.110596 ms, mean = 0.0100141 ms, median = 0.00439453 ms, percentile(90%) = 0.0254517 ms, percentile(95%) = 0.0319824 ms, percentile(99%) = 0.0994873 ms
[10/03/2024-10:47:59] [I] Total Host Walltime: 3.00082 s
[10/03/2024-10:47:59] [I] Total GPU Compute Time: 2.96536 s
"""
# A Jetson user's summary as pasted, without timestamps and with some '=' lost:
# beyondli/Yolo_on_Jetson#4 (issue description, 2023-03-22)
JETSON_LOG = """\
=== Performance summary ===
Throughput: 169.352 qps 
Latency: min = 5.38959 ms, max 6.19507 ms, mean 5.93288 ms, median 6.02185 ms, percentile(99%) 6.17407 ms 
Enqueue Time: min = 0.596436 ms, max = 0.805542 ms, mean = 0.628294 ms, median = 0.625488 ms, percentile(99%) = 0.697754 ms 
H2D Latency: min = 0.800781 ms, max = 0.900391 ms, mean = 0.82323 ms, median = 0.817383 ms, percentile(99%) = 0.895874 ms 
GPU Compute Time: min = 3.17834 ms, max = 3.88306 ms, mean = 3.63242 ms, median = 3.71753 ms, percentile(99%) 3.87793 ms 
D2H Latency: min = 1.30469 ms, max = 1.56445 ms, mean 1.47722 ms, median = 1.48657 ms, percentile(99%) 1.50879 ms Total Host Walltime: 3.05281 s Total GPU Compute Time: 1.87796 s GPU compute time is unstable, with coefficient of variance = 5.55763%.
"""


def test_trtexec_10_summary():
    s = parse_summary(TRT10_LOG)
    assert s["throughput_qps"] == 130.298
    assert s["gpu_compute_ms"] == {"min": 5.34595, "max": 13.3388, "mean": 7.58404, "median": 7.14139,
                                   "p90": 10.2881, "p95": 10.8175, "p99": 12.9485}
    assert s["latency_ms"]["median"] == 7.16092  # the end-to-end line, not H2D's or D2H's


def test_jetson_summary_as_pasted():
    s = parse_summary(JETSON_LOG)
    assert s["gpu_compute_ms"] == {"min": 3.17834, "max": 3.88306, "mean": 3.63242, "median": 3.71753, "p99": 3.87793}
    assert s["latency_ms"]["mean"] == 5.93288 and s["throughput_qps"] == 169.352


def test_no_summary_is_empty():
    assert parse_summary("[E] Error[1]: [runtime.cpp::parsePlan] deserialization failed\n") == {}
    assert parse_metric("percentile(99.9%) = 1.5 ms") == {"p99.9": 1.5}


def sidecar(**changes):
    return {"tensorrt": "10.3.0", "batch": [1, 8, 32], "image_size": 224, "input": "image", "plugins": [],
            "dla_core": None} | changes


@pytest.mark.parametrize("branch,version", [("10.3", "10.3.0"), ("10.13", "10.13.0.35"), ("11.1", "11.1.0")])
def test_every_flag_is_one_trtexec_parses(branch, version):
    known = set(INFERENCE[branch]["flags"]) | set(BUILD[branch]["flags"])
    deprecated = set(INFERENCE[branch].get("deprecated_no_ops", {}))
    for sc in (sidecar(tensorrt=version), sidecar(tensorrt=version, batch=[4, 4, 4], dla_core=1,
                                                  plugins=["/opt/liblayover_plugins.so"])):
        args = command("m.engine", sc, 4, 100)
        names = [a.partition("=")[0] for a in args[1:]]
        assert set(names) <= known and not set(names) & deprecated, (branch, names)


def test_command_follows_the_engine():
    dynamic = command("m.engine", sidecar(), 8, 100, "/usr/src/tensorrt/bin/trtexec")
    assert dynamic == ["/usr/src/tensorrt/bin/trtexec", "--loadEngine=m.engine", "--useCudaGraph", "--noDataTransfers",
                       "--iterations=100", "--duration=0", "--warmUp=200", "--shapes=image:8x3x224x224"]
    static = command("d.engine", sidecar(batch=[4, 4, 4], dla_core=1, plugins=["/p/lib.so"]), 4, 50)
    assert "--shapes" not in " ".join(static)  # a static engine takes no shapes
    assert static[-2:] == ["--dynamicPlugins=/p/lib.so", "--useDLACore=1"]
    assert "--useCudaGraph" not in command("m.engine", sidecar(tensorrt="11.1.0"), 1, 10)  # the default in 11

