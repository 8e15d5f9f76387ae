"""The kernel benchmark's verdicts on the issue's targets, on hand-made timings (the timings
themselves need a GPU: benchmarks/gpu_check.sh)."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("kernel_bench", Path(__file__).parents[1] / "benchmarks" / "kernel.py")
kb = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kb)

META = {"gpu": "test", "torch": "x", "triton": "y", "copy_bandwidth_GBps": 4000.0}


def row(shape, batch, h_mb, eager, triton):
    """Timings in µs as (call, graph)."""
    return {"shape": shape, "layout": "NCHW", "batch": batch, "h_bytes": int(h_mb * 1e6),
            "eager": {"call_us": eager[0], "graph_us": eager[1]},
            "triton": {"call_us": triton[0], "graph_us": triton[1]}}


def test_targets_judge_speedup_bandwidth_and_end_to_end():
    rows = [row(kb.SPEEDUP_SHAPE, 1, 19.3, eager=(300.0, 60.0), triton=(30.0, 7.0)),
            # 154.1 MB in 40 µs = 3852 GB/s = 96 % of 4000 GB/s; 77.1 MB in 30 µs = 2570 GB/s = 64 %
            row(kb.SPEEDUP_SHAPE, 8, 154.1, eager=(500.0, 200.0), triton=(50.0, 40.0)),
            row("Swin-B@1 384", 8, 77.1, eager=(400.0, 100.0), triton=(40.0, 30.0))]
    e2e = [{"model": "m", "px": 448, "tap": "stages.0", "layout": "NCHW", "batch": 1,
            "lp_us": 1000.0, "rm_us": 1009.0, "rm_over_lp": 1.009},
           {"model": "m", "px": 448, "tap": "stages.0", "layout": "NCHW", "batch": 16,
            "lp_us": 1000.0, "rm_us": 1020.0, "rm_over_lp": 1.02}]
    verdicts = kb.targets(META, rows, e2e)
    assert len(verdicts) == 5
    call, graph = (next(t for t in verdicts if "eager" in t["target"] and t["target"].endswith(timing))
                   for timing in ("call time", "graph time"))
    assert call["value"] == 10.0 and call["met"]
    assert abs(graph["value"] - 60 / 7) < 1e-9 and not graph["met"]
    bandwidth = next(t for t in verdicts if "copy bandwidth" in t["target"])
    assert abs(bandwidth["value"] - 77.1e6 / 30e-6 / 4000e9) < 1e-9 and not bandwidth["met"]
    assert "Swin-B@1 384" in bandwidth["text"]
    assert [t["met"] for t in verdicts if t["target"].startswith("RM/LP")] == [True, False]

    md = kb.markdown(META, rows, e2e)
    assert "## Targets" in md and md.count("✅") == 2 and md.count("❌") == 3


def test_plot_is_written(tmp_path):
    rows = [row(kb.SPEEDUP_SHAPE, b, 19.3 * b, eager=(300.0, 60.0), triton=(30.0, 7.0 * b)) for b in (1, 8)]
    path = kb.plot(META, rows, tmp_path / "kernel.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_targets_without_a_fused_column_or_end_to_end_rows_are_empty():
    rows = [row(kb.SPEEDUP_SHAPE, 1, 19.3, eager=(300.0, 60.0), triton=(30.0, 7.0))]
    for r in rows:
        del r["triton"]
    assert kb.targets(META, rows, []) == []
