"""Timing of the engine backends (`perception bench`, perception/commands/bench.py, has the
procedure): latencies with warm-up, interleaved rounds against a reference GEMM, the machine's
GEMM throughput, per-backend timing of one model directory, ONNX Runtime variants and profile,
the resolution-sweep plot and the results table. The fusion step's timing is on the fusion side
(perception/fusion/bench.py); callers pass it in, so this module needs nothing of perception.fusion.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from perception.model.weights import WEIGHTS_FILE

SWEEP_SIZES = ((48, 80), (72, 128), (96, 176), (144, 256))      # (height, width), patch 8


def say_progress(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def latencies_ms(fn, iters: int, warmup: int, max_seconds: float | None = None) -> np.ndarray:
    """Wall-clock milliseconds of `iters` calls of fn after `warmup` calls (stops early past
    max_seconds, keeping at least 3 samples)."""
    return interleaved_ms([fn], iters, warmup, max_seconds)[:, 0]


def interleaved_ms(fns, iters: int, warmup: int, max_seconds: float | None = None) -> np.ndarray:
    """[rounds, len(fns)] milliseconds: each round calls every fn once, in order (stops early
    past max_seconds per fn, keeping at least 3 rounds)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    rows = []
    t_end = None if max_seconds is None else time.perf_counter() + max_seconds * len(fns)
    for _ in range(iters):
        row = []
        for fn in fns:
            t0 = time.perf_counter()
            fn()
            row.append((time.perf_counter() - t0) * 1e3)
        rows.append(row)
        if t_end is not None and time.perf_counter() > t_end and len(rows) >= 3:
            break
    return np.asarray(rows).reshape(len(rows), len(fns))


def summarize(ms: np.ndarray) -> dict:
    p50 = float(np.percentile(ms, 50))
    return {"latency_ms_p50": round(p50, 3), "latency_ms_p99": round(float(np.percentile(ms, 99)), 3),
            "latency_ms_min": round(float(ms.min()), 3), "hz_median": round(1e3 / p50, 2), "samples": int(len(ms))}


# ---------------------------------------------------------------------------------------------
REFERENCE_GEMM = (4096, 512, 512)             # the peak's shape: m x k @ k x n, fp32
REFERENCE_GEMM_GFLOP = 2.0 * REFERENCE_GEMM[0] * REFERENCE_GEMM[1] * REFERENCE_GEMM[2] / 1e9
REFERENCE_LABEL = "{0}x{1}@{1}x{2}".format(*REFERENCE_GEMM)


def gemm_throughput(threads: int, cfg=None, reps: int = 20) -> dict:
    """Measured GEMM GFLOP/s (median) of torch.mm at a reference size and the model's shapes."""
    import torch

    torch.set_num_threads(threads)
    shapes = {REFERENCE_LABEL: REFERENCE_GEMM}
    if cfg is not None:
        S, D = cfg.num_cameras * cfg.tokens_per_view, cfg.dim
        shapes[f"qkv {S}x{D}@{D}x{3 * D}"] = (S, D, 3 * D)
        shapes[f"mlp {S}x{D}@{D}x{int(D * cfg.mlp_ratio)}"] = (S, D, int(D * cfg.mlp_ratio))
        Q = cfg.num_bev_queries
        shapes[f"bev mlp {Q}x{D}@{D}x{int(D * cfg.bev_mlp_ratio)}"] = (Q, D, int(D * cfg.bev_mlp_ratio))
    out: dict[str, Any] = {"threads": threads, "fp32_gflops": {}, "bf16_gflops": {}}
    g = torch.Generator().manual_seed(0)
    for label, (m, k, n) in shapes.items():
        a = torch.randn(m, k, generator=g)
        b = torch.randn(k, n, generator=g)
        flop = 2.0 * m * k * n
        for dtype, key in ((torch.float32, "fp32_gflops"), (torch.bfloat16, "bf16_gflops")):
            aa, bb = a.to(dtype), b.to(dtype)
            ms = latencies_ms(lambda: torch.mm(aa, bb), reps, 3)
            out[key][label] = round(flop / (statistics.median(ms) * 1e-3) / 1e9, 1)
    out["peak_gflops"] = out["fp32_gflops"][REFERENCE_LABEL]
    return out


def _reference_gemm():
    import torch

    g = torch.Generator().manual_seed(0)
    m, k, n = REFERENCE_GEMM
    a, b = torch.randn(m, k, generator=g), torch.randn(k, n, generator=g)
    return lambda: torch.mm(a, b)


def machine_info() -> dict:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count()}
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu_flags"] = sorted(f for f in flags if f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16",
                                                             "amx_tile", "avx512_vnni", "fma"))
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:
        pass
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return info


def loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
def default_backends() -> list[str]:
    from perception.runtime import available_backends, gpu_present

    avail = available_backends()
    out = ["torch"]
    out.append("torch:fp16" if gpu_present() else "torch:bf16")
    if avail["inductor"].startswith("yes"):
        out.append("inductor")
    if avail["onnxruntime"].startswith("yes"):
        out.append("onnxruntime")
    if avail["tensorrt"].startswith("yes"):
        out += ["tensorrt:fp16", "tensorrt:fp32"]
    return out


def _view_blocks_fn(model, cfg, device="cpu"):
    """The per-view self-attention stack alone (Block x view_depth on [N, T, D] tokens): the part
    of the model whose cost is quadratic in tokens per view."""
    import torch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(cfg.num_cameras, cfg.tokens_per_view, cfg.dim, generator=g).to(device)

    @torch.inference_mode()
    def run():
        y = x
        for blk in model.blocks:
            y = blk(y)
        return y

    return run


def attention_gflop(cfg) -> float:
    """Analytic GFLOP of the per-view attention products (q k^T and attn v) per frame set."""
    return 2 * cfg.view_depth * cfg.num_cameras * 2 * cfg.tokens_per_view ** 2 * cfg.dim / 1e9


def bench_model(model_dir, backends, *, threads, iters, warmup, max_seconds, allow_random_init, make_inputs,
                fusion_step=None, say=say_progress) -> tuple[list[dict], dict]:
    """Time every backend on one model directory -> (per-backend results, model facts).

    make_inputs(cfg) -> the model inputs (dict of numpy) to time them on; fusion_step(engine, cfg)
    -> a dict stored as each backend's "fusion_step" (None: no fusion-step timing)."""
    import torch

    from perception.model.weights import count_parameters, flops_per_frameset, load_model
    from perception.runtime import create_engine, resolve_backend
    from perception.runtime.parity import compare_outputs

    model, cfg = load_model(model_dir, allow_random_init=allow_random_init)
    gflop = flops_per_frameset(cfg) / 1e9
    facts = {"model_dir": str(model_dir), "image": [cfg.image_height, cfg.image_width],
             "tokens_per_view": cfg.tokens_per_view, "gflop_per_frameset": round(gflop, 4),
             "attention_gflop_per_frameset": round(attention_gflop(cfg), 4), "params": count_parameters(model),
             "weights": WEIGHTS_FILE if (Path(model_dir) / WEIGHTS_FILE).exists() else "random-init (seed 0)"}
    torch.set_num_threads(threads)
    inputs = make_inputs(cfg)
    with torch.inference_mode():                  # the reference every backend is compared with
        reference = {k: v.numpy() for k, v in model(*[torch.from_numpy(inputs[n]) for n in
                                                      ("images", "intrinsics_inv", "ego_from_camera",
                                                       "camera_mask")]).items()}
    # calibration-only part and the view blocks, torch fp32
    with torch.inference_mode():
        t_in = [torch.from_numpy(inputs[n]) for n in ("intrinsics_inv", "ego_from_camera", "camera_mask")]
        facts["geometry_ms_p50"] = summarize(latencies_ms(lambda: model.geometry(*t_in), iters, warmup,
                                                          max_seconds))["latency_ms_p50"]
    facts["view_blocks_ms_p50"] = summarize(latencies_ms(_view_blocks_fn(model, cfg), iters, warmup,
                                                         max_seconds))["latency_ms_p50"]
    say(f"{cfg.image_height}x{cfg.image_width} ({cfg.tokens_per_view} tokens/view, {gflop:.2f} GFLOP): geometry "
        f"{facts['geometry_ms_p50']:.1f} ms, view blocks {facts['view_blocks_ms_p50']:.1f} ms")
    # 1. start every backend and check it against torch fp32
    engines, results = [], []
    for spec in backends:
        t0 = time.perf_counter()
        try:
            # Inductor: the compiled package, built first (in its own process) when the cache has none
            opts = {"compiled": "require"} if resolve_backend(spec)[0] == "inductor" else {}
            engine = create_engine(spec, model_dir, threads=threads, allow_random_init=allow_random_init, **opts)
        except Exception as e:  # a backend that cannot start here is reported, not fatal
            say(f"  {spec}: unavailable ({e})")
            results.append({"backend": spec, "error": str(e)})
            continue
        # start-up: loading, exporting (ONNX Runtime) or building the package (Inductor, cold cache)
        r = {"backend": spec, "name": engine.name, "start_s": round(time.perf_counter() - t0, 1),
             "vs_torch_fp32": compare_outputs(reference, engine.infer(inputs)), "gflop_per_frameset": round(gflop, 4)}
        engines.append((engine, r))
        results.append(r)

    # 2. engine alone, interleaved: every round times each backend once and one reference GEMM,
    #    so a machine that speeds up or slows down (turbo, neighbours) moves all of them alike
    #    and the ratios (between backends, and to the GEMM peak) hold even when the medians drift
    gemm = _reference_gemm()
    rounds = interleaved_ms([lambda e=e: e.infer(inputs) for e, _ in engines] + [gemm], iters, warmup, max_seconds)
    gemm_gflops = REFERENCE_GEMM_GFLOP / (rounds[:, -1] * 1e-3)
    for k, (engine, r) in enumerate(engines):
        r.update(summarize(rounds[:, k]))
        r["achieved_gflops"] = round(gflop / (r["latency_ms_p50"] * 1e-3), 2)
        r["peak_gflops"] = round(float(np.median(gemm_gflops)), 1)
        # median over rounds of (achieved / peak in the same round)
        r["utilization"] = round(float(np.median(gflop / (rounds[:, k] * 1e-3) / gemm_gflops)), 4)

    # 3. the whole fusion step per backend
    for engine, r in engines:
        if fusion_step is not None:
            r["fusion_step"] = fusion_step(engine, cfg)
        say(f"  {engine.name:18s} engine {r['latency_ms_p50']:7.2f} ms p50 {r['latency_ms_p99']:7.2f} ms p99 "
            f"({r['hz_median']:.1f} Hz, {r['achieved_gflops']:.0f} GFLOP/s, {r['utilization']:.1%} of the GEMM peak "
            f"timed in the same rounds)"
            + (f" | fusion step {r['fusion_step']['latency_ms_p50']:.2f} ms" if "fusion_step" in r else "")
            + f" | heatmap diff {r['vs_torch_fp32']['heatmap_max_abs_diff']:.1e}")
        engine.close()
    return results, facts


def ort_variants(model_dir, inputs, *, threads, iters, warmup, max_seconds, allow_random_init, say=say_progress) -> list:
    from perception.runtime.onnxruntime_backend import OnnxRuntimeEngine

    variants: list[dict[str, Any]] = [
        {"graph_optimization": "basic"}, {"graph_optimization": "extended"}, {"graph_optimization": "all"},
        {"graph_optimization": "all", "allow_spinning": True},
        {"graph_optimization": "all", "execution_mode": "parallel", "inter_op_threads": 2},
        {"graph_optimization": "all", "threads_override": 1},
    ]
    out = []
    for v in variants:
        v = dict(v)
        t = v.pop("threads_override", threads)
        try:
            e = OnnxRuntimeEngine(model_dir, threads=t, allow_random_init=allow_random_init, device="cpu", **v)
        except Exception as ex:
            out.append({**v, "threads": t, "error": str(ex)})
            continue
        r = {**v, "threads": t, **summarize(latencies_ms(lambda: e.infer(inputs), iters, warmup, max_seconds))}
        say(f"  ort {json.dumps({**v, 'threads': t})}: {r['latency_ms_p50']:.2f} ms p50")
        out.append(r)
    return out


def ort_profile(model_dir, inputs, out_dir: Path, *, threads, iters, allow_random_init, say=say_progress) -> dict:
    """Per-operator-type share of ONNX Runtime's time (its profiler, `iters` runs)."""
    from perception.runtime.onnxruntime_backend import OnnxRuntimeEngine

    e = OnnxRuntimeEngine(model_dir, threads=threads, allow_random_init=allow_random_init, device="cpu",
                          profile_dir=out_dir)
    for _ in range(iters):
        e.infer(inputs)
    path = e.end_profiling()
    if path is None:
        raise RuntimeError("ONNX Runtime wrote no profile")
    events = json.loads(Path(path).read_text())
    by_op: dict[str, float] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            op = ev.get("args", {}).get("op_name", "?")
            by_op[op] = by_op.get(op, 0.0) + float(ev.get("dur", 0))
    total = sum(by_op.values()) or 1.0
    ranked = sorted(by_op.items(), key=lambda kv: -kv[1])
    res = {"profile_file": str(path), "runs": iters,
           "ms_per_run_by_op": {k: round(v / 1e3 / iters, 3) for k, v in ranked},
           "share_by_op": {k: round(v / total, 4) for k, v in ranked}}
    say("  ORT time by op: " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in list(res["share_by_op"].items())[:6]))
    return res


def plot_sweep(sweep: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens = [s["tokens_per_view"] for s in sweep]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    names = sorted({b for s in sweep for b in s["backends"]})
    for name in names:
        pts = [(s["tokens_per_view"], s["backends"][name]["latency_ms_p50"]) for s in sweep
               if "latency_ms_p50" in s["backends"].get(name, {})]
        if pts:
            ax1.plot(*zip(*pts), marker="o", label=f"{name} (whole model)")
    ax1.plot(tokens, [s["view_blocks_ms_p50"] for s in sweep], marker="s", ls="--", label="view self-attention blocks (torch)")
    ax1.set_xlabel("tokens per view")
    ax1.set_ylabel("latency per frame set, ms (p50)")
    ax1.set_title("latency vs tokens per view")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    # the quadratic part: view blocks time and a fit a + b T + c T^2
    t = np.asarray(tokens, float)
    y = np.asarray([s["view_blocks_ms_p50"] for s in sweep], float)
    ax2.plot(t, y, "s", label="view blocks, measured")
    if len(t) >= 3:
        c = np.polyfit(t, y, 2)
        tt = np.linspace(0, t.max() * 1.05, 100)
        ax2.plot(tt, np.polyval(c, tt), "-", label=f"fit {c[2]:.2f} + {c[1]:.3f} T + {c[0]:.2e} T^2 (ms)")
    ax2b = ax2.twinx()
    ax2b.plot(t, [100 * s["attention_gflop_per_frameset"] / s["gflop_per_frameset"] for s in sweep], "^:", color="gray")
    ax2b.set_ylabel("attention products, % of model FLOPs", color="gray")
    ax2.set_xlabel("tokens per view T")
    ax2.set_ylabel("ms (p50)")
    ax2.set_title("per-view self-attention: quadratic in T")
    ax2.grid(alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(result: dict) -> str:
    lines = [f"{'backend':20s} {'p50 ms':>8s} {'p99 ms':>8s} {'Hz':>7s} {'GFLOP/s':>8s} {'util':>6s} "
             f"{'fusion p50':>10s} {'heat diff':>9s}"]
    for r in result.get("backends", []):
        if "latency_ms_p50" not in r:
            lines.append(f"{r['backend']:20s} unavailable: {r.get('error', '')[:60]}")
            continue
        fus = r.get("fusion_step", {}).get("latency_ms_p50")
        diff = r.get("vs_torch_fp32", {}).get("heatmap_max_abs_diff")
        lines.append(f"{r['name']:20s} {r['latency_ms_p50']:8.2f} {r['latency_ms_p99']:8.2f} {r['hz_median']:7.1f} "
                     f"{r['achieved_gflops']:8.1f} {r.get('utilization', 0):6.1%} "
                     f"{'' if fus is None else f'{fus:10.2f}'} {'' if diff is None else f'{diff:9.1e}'}")
    timed = [r for r in result.get("backends", []) if "peak_gflops" in r]
    peak = timed[0]["peak_gflops"] if timed else result.get("peak", {}).get("peak_gflops")
    if peak:
        lines.append(f"peak fp32 GEMM {peak:.0f} GFLOP/s (timed in the same rounds as the backends); "
                     f"model {result['model']['gflop_per_frameset']:.2f} GFLOP/frame set; "
                     f"load average {result['meta'].get('loadavg_start')} -> {result['meta'].get('loadavg_end')}")
    for s in result.get("sweep", []):
        cells = ", ".join(f"{k} {v['latency_ms_p50']:.1f}" for k, v in s["backends"].items() if "latency_ms_p50" in v)
        lines.append(f"sweep {s['image'][0]}x{s['image'][1]} T={s['tokens_per_view']:4d}: view blocks "
                     f"{s['view_blocks_ms_p50']:.1f} ms | {cells} ms")
    return "\n".join(lines)

