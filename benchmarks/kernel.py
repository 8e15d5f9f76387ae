"""The fused branch against the memory-bandwidth limit, and RM vs LP end to end. Needs a GPU.

For the paper's tap shapes (BiT-R50x3 @1-@3 at 448 px, Swin-B/L @1-@3 at 384 px) and batch
1, 8, 32 in fp16 it times the eager PyTorch branch, its torch.compile, the Triton kernel and
the CUDA C++ kernel (when --cuda-lib is given). Each is timed two ways: as called from Python
(``call_us``, CPU launch overhead included: what eager inference pays) and replayed from a CUDA
graph (``graph_us``: GPU time). Read bandwidth = bytes of h / graph_us, reported as a fraction of
a device-to-device copy's bandwidth (read + write) measured in the same run. Then RM vs LP
end-to-end latency on timm backbones (random weights, fp16, channels-last) under CUDA graphs,
and a verdict on each of the issue's targets (the `targets` list and the last table).

    python benchmarks/kernel.py --out runs/kernel-bench [--cuda-lib build/liblayover_kernels.so]

Writes kernel.json, kernel.md and kernel.png (read bandwidth per shape) under --out.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path
from typing import Iterator

import torch

from layover_edge.core.io import save_figure, write_json, write_text
from layover_edge.kernels import cuda_lib
from layover_edge.kernels import op as kernels_op
from layover_edge.kernels.op import fused_mix
from layover_edge.kernels.reference import gate, mix, pool, rs
from layover_edge.kernels.triton_fused_mix import fused_mix_triton

# (name, layout, C, H, W, N): stage outputs of the paper's backbones; N = pre-logit width.
SHAPES = [
    ("BiT-R50x3@1 448", "NCHW", 768, 112, 112, 6144),
    ("BiT-R50x3@2 448", "NCHW", 1536, 56, 56, 6144),
    ("BiT-R50x3@3 448", "NCHW", 3072, 28, 28, 6144),
    ("Swin-B@1 384", "NHWC", 128, 96, 96, 1024),
    ("Swin-B@2 384", "NHWC", 256, 48, 48, 1024),
    ("Swin-B@3 384", "NHWC", 512, 24, 24, 1024),
    ("Swin-L@1 384", "NHWC", 192, 96, 96, 1536),
    ("Swin-L@2 384", "NHWC", 384, 48, 48, 1536),
    ("Swin-L@3 384", "NHWC", 768, 24, 24, 1536),
]
# (timm name, px, tapped module, its output layout): @1 = output of the first stage.
E2E = [("resnetv2_50x3_bit", 448, "stages.0", "NCHW"), ("swin_base_patch4_window12_384", 384, "layers.0", "NHWC")]
# The targets: fused ≥ 10× eager on this shape at batch 1; h read at ≥ 80 % of the copy
# bandwidth at batch ≥ 8; RM within 1 % of LP end to end under CUDA graphs.
SPEEDUP_SHAPE, SPEEDUP_GOAL = "BiT-R50x3@1 448", 10.0
BANDWIDTH_MIN_BATCH, BANDWIDTH_GOAL = 8, 0.80
RM_OVER_LP_GOAL = 1.01


def eager_branch(h, z, w_rs, w_sl, b_sl, layout):
    """The branch as the paper's code runs it: the reference's pieces (mean, Linear + sigmoid,
    gate, mix) as plain PyTorch ops in the activations' dtype, no float32 casts."""
    return mix(rs(pool(h, layout, h.dtype), w_rs), gate(z, w_sl, b_sl), z)


def median_us(fn, iters: int, repeats: int = 7) -> float:
    """Median over ``repeats`` of the mean time per call of ``iters`` back-to-back calls."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / iters)
    return statistics.median(times)


def graph_of(fn, copies: int = 1) -> torch.cuda.CUDAGraph:
    """``fn`` called ``copies`` times, captured once (warmed up on a side stream first)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(copies):
            fn()
    return graph


def time_both(fn, iters: int) -> dict:
    copies = 20
    graph = graph_of(fn, copies)
    return {"call_us": median_us(fn, iters), "graph_us": median_us(graph.replay, max(1, iters // copies)) / copies}


def copy_bandwidth(nbytes: int = 1 << 30) -> float:
    """Device-to-device copy bandwidth in bytes/s, counting read + write."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * nbytes / (median_us(lambda: dst.copy_(src), 20) * 1e-6)


def random_inputs(layout: str, B: int, C: int, H: int, W: int, N: int) -> tuple[torch.Tensor, ...]:
    """fp16 (h, z, w_rs, w_sl, b_sl) on the GPU as the models hold them: NCHW h channels-last."""
    g = torch.Generator(device="cuda").manual_seed(0)
    shape = {"NCHW": (B, C, H, W), "NHWC": (B, H, W, C), "NLC": (B, H * W, C)}[layout]
    h = torch.randn(shape, generator=g, device="cuda", dtype=torch.float16)
    if layout == "NCHW":
        h = h.contiguous(memory_format=torch.channels_last)
    z = torch.randn(B, N, generator=g, device="cuda", dtype=torch.float16)
    w_rs = torch.randn(N, C, generator=g, device="cuda", dtype=torch.float16) / C ** 0.5
    w_sl = torch.randn(N, generator=g, device="cuda", dtype=torch.float16) / N ** 0.5
    return h, z, w_rs, w_sl, torch.randn(1, generator=g, device="cuda", dtype=torch.float16)


def kernel_rows(batches, cuda_kernels, iters: int, compile_branch: bool) -> Iterator[dict]:
    torch._dynamo.config.cache_size_limit = 64
    compiled = torch.compile(eager_branch) if compile_branch else None
    for name, layout, C, H, W, N in SHAPES:
        for B in batches:
            args = random_inputs(layout, B, C, H, W, N)
            impls = {"eager": eager_branch, "triton": fused_mix_triton}
            if compiled is not None:
                impls["compile"] = compiled
            if cuda_kernels is not None:
                impls["cuda"] = lambda *a: cuda_lib.fused_mix_cuda(cuda_kernels, *a)
            row = {"shape": name, "layout": layout, "batch": B, "C": C, "H": H, "W": W, "N": N,
                   "h_bytes": args[0].numel() * args[0].element_size()}
            for impl, fn in impls.items():
                row[impl] = time_both(lambda fn=fn: fn(*args, layout), iters)
            yield row


def e2e_rows(batches, iters: int) -> Iterator[dict]:
    """LP vs RM latency (CUDA graph replay). RM taps the stage output with a forward hook, so
    both run the same forward_features and differ by exactly the fused branch."""
    import timm

    for model_name, px, tap, layout in E2E:
        model = timm.create_model(model_name, pretrained=False).cuda().half().eval()
        model = model.to(memory_format=torch.channels_last)
        tapped = {}
        model.get_submodule(tap).register_forward_hook(lambda mod, inp, out: tapped.update(h=out))
        N = model.num_features
        head = torch.nn.Linear(N, 80).cuda().half()
        for B in batches:
            x = torch.randn(B, 3, px, px, device="cuda", dtype=torch.half).contiguous(
                memory_format=torch.channels_last)
            with torch.no_grad():
                model.forward_features(x)
                C = tapped["h"].shape[1 if layout == "NCHW" else -1]
                w_rs = torch.randn(N, C, device="cuda", dtype=torch.half) / C ** 0.5
                w_sl = torch.randn(N, device="cuda", dtype=torch.half) / N ** 0.5
                b_sl = torch.zeros(1, device="cuda", dtype=torch.half)

                def lp():
                    return head(model.forward_head(model.forward_features(x), pre_logits=True))

                def rm():
                    z = model.forward_head(model.forward_features(x), pre_logits=True)
                    return head(fused_mix(tapped["h"], z, w_rs, w_sl, b_sl, layout))

                t = {k: median_us(graph_of(fn).replay, iters) for k, fn in (("lp", lp), ("rm", rm))}
            yield {"model": model_name, "px": px, "tap": tap, "layout": layout, "batch": B,
                   "lp_us": t["lp"], "rm_us": t["rm"], "rm_over_lp": t["rm"] / t["lp"]}


def read_bandwidth(row: dict, impl: str) -> float:
    """Bytes of h read per second of GPU time (CUDA-graph replay)."""
    return row["h_bytes"] / (row[impl]["graph_us"] * 1e-6)


def targets(meta: dict, rows: list[dict], e2e: list[dict]) -> list[dict]:
    """The issue's targets, judged on this run's numbers: one entry per (target, implementation, timing)."""
    out = []
    fused = [k for k in ("triton", "cuda") if rows and k in rows[0]]
    for impl in fused:
        for r in (r for r in rows if r["shape"] == SPEEDUP_SHAPE and r["batch"] == 1):
            for timing in ("call_us", "graph_us"):
                value = r["eager"][timing] / r[impl][timing]
                out.append({"target": f"{impl} ≥ {SPEEDUP_GOAL:g}× eager, {SPEEDUP_SHAPE}, batch 1, "
                                      f"{timing.split('_')[0]} time", "value": value, "goal": SPEEDUP_GOAL,
                            "met": value >= SPEEDUP_GOAL, "text": f"{value:.1f}×"})
        big = [r for r in rows if r["batch"] >= BANDWIDTH_MIN_BATCH]
        if big:
            worst = min(big, key=lambda r: read_bandwidth(r, impl))
            value = read_bandwidth(worst, impl) / (meta["copy_bandwidth_GBps"] * 1e9)
            out.append({"target": f"{impl} reads h at ≥ {BANDWIDTH_GOAL:.0%} of copy bandwidth, every shape at "
                                  f"batch ≥ {BANDWIDTH_MIN_BATCH}", "value": value, "goal": BANDWIDTH_GOAL,
                        "met": value >= BANDWIDTH_GOAL,
                        "text": f"worst {value:.0%} ({worst['shape']}, batch {worst['batch']})"})
    for e in e2e:
        out.append({"target": f"RM/LP ≤ {RM_OVER_LP_GOAL:g}, {e['model']}, batch {e['batch']}, CUDA graphs",
                    "value": e["rm_over_lp"], "goal": RM_OVER_LP_GOAL, "met": e["rm_over_lp"] <= RM_OVER_LP_GOAL,
                    "text": f"{e['rm_over_lp']:.4f}"})
    return out


def plot(meta: dict, rows: list[dict], path: Path) -> Path:
    """Read bandwidth of every kernel per shape and batch, against the copy bandwidth and the 80 % goal."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    impls = [k for k in ("eager", "compile", "triton", "cuda") if rows and k in rows[0]]
    copy_bw = meta["copy_bandwidth_GBps"]
    x = np.arange(len(rows))
    width = 0.8 / len(impls)
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(rows)), 4.5))
    for i, impl in enumerate(impls):
        ax.bar(x + (i - (len(impls) - 1) / 2) * width, [read_bandwidth(r, impl) / 1e9 for r in rows], width,
               label=impl)
    ax.axhline(copy_bw, color="black", lw=1, label=f"device copy {copy_bw:.0f} GB/s")
    ax.axhline(BANDWIDTH_GOAL * copy_bw, color="black", lw=1, ls="--", label=f"{BANDWIDTH_GOAL:.0%} goal")
    ax.set_xticks(x, [f"{r['shape']} b{r['batch']}" for r in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("read bandwidth of h (GB/s, CUDA graph)")
    ax.set_title(f"Fused branch on {meta['gpu']} (fp16)", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


def markdown(meta: dict, rows: list[dict], e2e: list[dict]) -> str:
    copy_bw = meta["copy_bandwidth_GBps"]
    impls = [k for k in ("eager", "compile", "triton", "cuda") if rows and k in rows[0]]
    fused = [k for k in ("triton", "cuda") if k in impls]
    lines = [f"# Fused branch on {meta['gpu']} (fp16)", "",
             f"torch {meta['torch']}, triton {meta['triton']}; device-to-device copy {copy_bw:.0f} GB/s "
             "(read + write). Times in µs: `call` = Python call incl. launch overhead, `graph` = CUDA-graph "
             "replay (GPU time). BW = bytes of h / graph time; % = of the copy bandwidth.", "",
             "| shape | B | MB of h | " + " | ".join(f"{i} call / graph" for i in impls)
             + "".join(f" | {i} BW GB/s (%)" for i in fused) + " | triton speedup vs eager (call, graph) |",
             "|---|---|---|" + "---|" * (len(impls) + len(fused)) + "---|"]
    for r in rows:
        cells = " | ".join(f"{r[i]['call_us']:.1f} / {r[i]['graph_us']:.1f}" for i in impls)
        for i in fused:
            bw = read_bandwidth(r, i) / 1e9
            cells += f" | {bw:.0f} ({100 * bw / copy_bw:.0f}%)"
        speed = (r["eager"]["call_us"] / r["triton"]["call_us"], r["eager"]["graph_us"] / r["triton"]["graph_us"])
        lines.append(f"| {r['shape']} | {r['batch']} | {r['h_bytes'] / 1e6:.1f} | {cells} | "
                     f"{speed[0]:.1f}×, {speed[1]:.1f}× |")
    if e2e:
        lines += ["", "## End to end, CUDA graphs (random weights, fp16, channels-last)", "",
                  "| model | px | tap | B | LP ms | RM ms | RM/LP |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {e['model']} | {e['px']} | {e['tap']} | {e['batch']} | {e['lp_us'] / 1e3:.3f} | "
                  f"{e['rm_us'] / 1e3:.3f} | {e['rm_over_lp']:.4f} |" for e in e2e]
    verdicts = targets(meta, rows, e2e)
    if verdicts:
        lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['text']} | {'✅' if t['met'] else '❌'} |" for t in verdicts]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for kernel.json, kernel.md and kernel.png")
    p.add_argument("--cuda-lib", help="liblayover_kernels.so; without it the CUDA C++ column is left out")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32],
                   help="batch sizes of the kernel table (default: %(default)s)")
    p.add_argument("--e2e-batches", type=int, nargs="+", default=[1, 16],
                   help="batch sizes of the end-to-end RM vs LP table (default: %(default)s)")
    p.add_argument("--iters", type=int, default=100,
                   help="calls per timing; 7 timings, the median is kept (default: %(default)s)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end RM vs LP models")
    a = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("benchmarks/kernel.py needs a CUDA GPU")
    import triton

    meta = {"gpu": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
            "torch": torch.__version__, "triton": triton.__version__, "host": platform.node(),
            "copy_bandwidth_GBps": copy_bandwidth() / 1e9}
    print(json.dumps(meta), flush=True)
    lib = cuda_lib.load(a.cuda_lib) if a.cuda_lib else None
    report = {"meta": meta, "kernels": [], "e2e": [], "targets": []}

    def measured() -> Iterator[tuple[str, dict]]:
        yield from (("kernels", r) for r in kernel_rows(a.batches, lib, a.iters, not a.no_compile))
        if not a.no_e2e:
            yield from (("e2e", r) for r in e2e_rows(a.e2e_batches, max(10, a.iters // 5)))

    # Saved after every row: a run cut short by a device time limit keeps what it measured.
    for key, row in measured():
        print(json.dumps(row), flush=True)
        report[key].append(row)
        meta["fused_mix_fallback"] = kernels_op.triton_error  # the e2e RM row ran PyTorch ops if set
        report["targets"] = targets(meta, report["kernels"], report["e2e"])
        write_json(a.out / "kernel.json", report)
        write_text(a.out / "kernel.md", markdown(meta, report["kernels"], report["e2e"]))
    if report["kernels"]:
        plot(meta, report["kernels"], a.out / "kernel.png")
    print(markdown(meta, report["kernels"], report["e2e"]))


if __name__ == "__main__":
    main()
