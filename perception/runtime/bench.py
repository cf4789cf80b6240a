"""`perception bench`: latency of each engine backend, of the whole fusion step, and of a sweep of
input resolutions, against this machine's measured matrix-multiply throughput.

    perception bench [--backends torch,onnxruntime] [--threads 2] [--iters 50] [--warmup 5]
                     [--sweep/--no-sweep] [--model engines/bev_vit] [--json out/bench/bench.json]
                     [--ort-variants] [--ort-profile]

What it measures, in one process, with warm-up and medians (docs/engines.md has the procedure):
- peak: fp32 GEMM throughput of torch.mm at 4096x512 @ 512x512 and at the model's own GEMM
  shapes with --threads threads (median of 20), and bf16 GEMM throughput (what AMX/AVX512-BF16
  offers in isolation). Per backend, `peak_gflops` and `utilization` come from the same
  4096x512x512 GEMM timed inside the backends' rounds (below).
- backends are timed interleaved: each round runs every backend once and the reference GEMM
  once, so drift in the machine's speed (turbo, noisy neighbours: on the shared reference
  machine the GEMM peak moved between 229 and 308 GFLOP/s across the day) moves them alike;
  `utilization` is the median over rounds of achieved / peak in the same round.
- per backend: engine.infer alone on one frame set (p50, p99, Hz at the median), the model's
  analytic GFLOP per frame set (perception.model.weights.flops_per_frameset), achieved GFLOP/s
  and its ratio to the peak; the max abs heatmap difference to torch fp32 on the same inputs; and
  the whole fusion step, FusionPipeline.process (preprocess from the rig's 320x180 frames +
  engine + decode to protobuf), p50/p99 and its stage split.
- the calibration-only part (BEVViT.geometry, cached by the torch backend) and the per-view
  self-attention blocks alone (torch), so the part that is quadratic in tokens is visible.
- sweep: seeded random models at 48x80, 72x128, 96x176, 144x256 (patch 8: 60/144/264/576 tokens
  per view; topk capped at the tokens per view), each eager backend (not TensorRT or Inductor,
  which would build once per size) and the view blocks alone; a PNG of
  latency against tokens per view is written beside the JSON.
- --ort-variants: ONNX Runtime graph optimisation levels, parallel execution / inter-op threads and
  thread spinning; --ort-profile: ONNX Runtime's per-operator profile (is TopK the bottleneck?).

Untrained (seeded) weights are fine for timing; the JSON records which weights ran and the load
average before and after, because numbers taken on a busy machine are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from perception.model.weights import CONFIG_FILE, WEIGHTS_FILE

SWEEP_SIZES = ((48, 80), (72, 128), (96, 176), (144, 256))      # (height, width), patch 8


def _say(msg: str) -> None:
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
    out = {"threads": threads, "fp32_gflops": {}, "bf16_gflops": {}}
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
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
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


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
def scene_frames(rig, seed: int = 11):
    """One simulated frame set at the rig's own resolution (320x180 for the default rig)."""
    from perception.sim import World

    world = World(seed)
    t_ns = 12_000_000_000
    scene = world.scene_at(t_ns)
    from perception.sim import render

    return {cam.name: render(scene, cam) for cam in rig.cameras}, t_ns


def make_frameset(rig, frames: dict, t_ns: int):
    from perception.fusion.pipeline import CameraFrame
    from perception.fusion.sync import FrameSet, TimedFrame

    timed = {name: TimedFrame(name, 1, t_ns, t_ns, CameraFrame(name, 1, t_ns, px)) for name, px in frames.items()}
    return FrameSet(frames=timed, missing=[], opened_ns=t_ns, ready_ns=t_ns)


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


def bench_model(model_dir, backends, *, threads, iters, warmup, max_seconds, allow_random_init, rig,
                frames, t_ns, fusion: bool = True, say=_say) -> tuple[list[dict], dict]:
    """Time every backend on one model directory -> (per-backend results, model facts)."""
    import torch

    from perception.fusion.pipeline import FusionPipeline, Preprocessor
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
    pre = Preprocessor(rig, cfg.image_width, cfg.image_height)
    inputs = {k: v.copy() for k, v in pre(frames).items()}
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
        if fusion:
            pipe = FusionPipeline(rig, engine, cfg)
            fs = make_frameset(rig, frames, t_ns)
            stages = {"preprocess": [], "inference": [], "postprocess": []}

            def step():
                msg = pipe.process(fs)
                stages["preprocess"].append(msg.timings.preprocess_ms)
                stages["inference"].append(msg.timings.inference_ms)
                stages["postprocess"].append(msg.timings.postprocess_ms)

            f = summarize(latencies_ms(step, iters, warmup, max_seconds))
            f.update({f"{k}_ms_p50": round(float(np.median(v[warmup:] or v)), 3) for k, v in stages.items()})
            r["fusion_step"] = f
        say(f"  {engine.name:18s} engine {r['latency_ms_p50']:7.2f} ms p50 {r['latency_ms_p99']:7.2f} ms p99 "
            f"({r['hz_median']:.1f} Hz, {r['achieved_gflops']:.0f} GFLOP/s, {r['utilization']:.1%} of the GEMM peak "
            f"timed in the same rounds)"
            + (f" | fusion step {r['fusion_step']['latency_ms_p50']:.2f} ms" if fusion else "")
            + f" | heatmap diff {r['vs_torch_fp32']['heatmap_max_abs_diff']:.1e}")
        engine.close()
    return results, facts


def ort_variants(model_dir, inputs, *, threads, iters, warmup, max_seconds, allow_random_init, say=_say) -> list:
    from perception.runtime.onnxruntime_backend import OnnxRuntimeEngine

    variants = [
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


def ort_profile(model_dir, inputs, out_dir: Path, *, threads, iters, allow_random_init, say=_say) -> dict:
    """Per-operator-type share of ONNX Runtime's time (its profiler, `iters` runs)."""
    from perception.runtime.onnxruntime_backend import OnnxRuntimeEngine

    e = OnnxRuntimeEngine(model_dir, threads=threads, allow_random_init=allow_random_init, device="cpu",
                          profile_dir=out_dir)
    for _ in range(iters):
        e.infer(inputs)
    path = e.end_profiling()
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


# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from perception.config import DEFAULT_MODEL_DIR, DEFAULT_RIG

    p = argparse.ArgumentParser(prog="perception bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backends", default=None,
                   help="comma-separated backend specs (torch, torch:bf16, onnxruntime, tensorrt:fp16, ...); "
                        "default: all available here")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (torch intra-op, ONNX Runtime intra-op, GEMM)")
    p.add_argument("--iters", type=int, default=50, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    p.add_argument("--max-seconds", type=float, default=None,
                   help="stop a measurement after this long (keeps >= 3 samples); for smoke runs")
    p.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=True,
                   help="also time seeded models at 48x80, 72x128, 96x176, 144x256")
    p.add_argument("--sweep-iters", type=int, default=None, help="iterations per sweep point (default: iters/2)")
    p.add_argument("--fusion", action=argparse.BooleanOptionalAction, default=True, help="time FusionPipeline.process too")
    p.add_argument("--ort-variants", action="store_true", help="time ONNX Runtime session-option variants")
    p.add_argument("--ort-profile", action="store_true", help="ONNX Runtime per-operator profile")
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory")
    p.add_argument("--rig", default=str(DEFAULT_RIG))
    p.add_argument("--json", default="out/bench/bench.json", help="results file; the plot goes beside it (.png)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from perception.config import load_rig
    from perception.model.config import load_model_config, replace_config, save_model_config
    from perception.model.cpu_tuning import tune_cpu_allocator

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else default_backends()
    out_path = Path(args.json)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    allow_random = not (Path(args.model) / WEIGHTS_FILE).exists()
    if allow_random:
        _say(f"{args.model} has no model.safetensors: timing seeded random weights (timing does not depend on them)")
    t_start = time.time()
    result = {"meta": {**machine_info(), "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
                       "backends": backends, "loadavg_start": _loadavg(), "started_unix": int(t_start)}}
    _say(f"backends {backends}, {args.threads} threads, {args.iters} iters after {args.warmup} warm-up; "
         f"load average {result['meta']['loadavg_start']}")

    rig = load_rig(args.rig)
    frames, t_ns = scene_frames(rig)
    cfg = load_model_config(Path(args.model) / CONFIG_FILE)
    _say("GEMM throughput ...")
    peak = gemm_throughput(args.threads, cfg)
    result["peak"] = peak
    _say(f"  fp32 GEMM peak {peak['peak_gflops']:.0f} GFLOP/s, bf16 {peak['bf16_gflops'][REFERENCE_LABEL]:.0f} "
         f"GFLOP/s ({REFERENCE_LABEL}, {args.threads} threads)")

    _say(f"model {args.model}")
    per_backend, facts = bench_model(args.model, backends, threads=args.threads, iters=args.iters, warmup=args.warmup,
                                     max_seconds=args.max_seconds, allow_random_init=allow_random, rig=rig,
                                     frames=frames, t_ns=t_ns, fusion=args.fusion)
    result["model"] = facts
    result["backends"] = per_backend

    if args.ort_variants or args.ort_profile:
        from perception.fusion.pipeline import Preprocessor

        pre = Preprocessor(rig, cfg.image_width, cfg.image_height)
        inputs = {k: v.copy() for k, v in pre(frames).items()}
        if args.ort_variants:
            _say("ONNX Runtime session variants ...")
            result["ort_variants"] = ort_variants(args.model, inputs, threads=args.threads, iters=args.iters,
                                                  warmup=args.warmup, max_seconds=args.max_seconds,
                                                  allow_random_init=allow_random)
        if args.ort_profile:
            _say("ONNX Runtime profile ...")
            result["ort_profile"] = ort_profile(args.model, inputs, out_path.parent / "ort_profile",
                                                threads=args.threads, iters=max(10, args.iters // 2),
                                                allow_random_init=allow_random)

    if args.sweep:
        sweep = []
        iters = args.sweep_iters or max(5, args.iters // 2)
        # TensorRT and Inductor would build/compile once per resolution: the sweep shows how cost
        # grows with tokens, which the eager backends show as well
        sweep_backends = [b for b in backends if not b.startswith(("tensorrt", "inductor"))] or backends
        with tempfile.TemporaryDirectory(prefix="perception-sweep-") as tmp:
            for h, w in SWEEP_SIZES:
                tokens = (h // cfg.patch_size) * (w // cfg.patch_size)
                scfg = replace_config(cfg, image_height=h, image_width=w, topk=min(cfg.topk, tokens))
                d = Path(tmp) / f"{scfg.name}_{h}x{w}"
                save_model_config(scfg, d / CONFIG_FILE)
                _say(f"sweep {h}x{w} ...")
                res, f = bench_model(d, sweep_backends, threads=args.threads, iters=iters, warmup=min(args.warmup, 3),
                                     max_seconds=args.max_seconds, allow_random_init=True, rig=rig, frames=frames,
                                     t_ns=t_ns, fusion=False)
                f["backends"] = {r.get("name", r["backend"]): {k: r[k] for k in ("latency_ms_p50", "latency_ms_p99",
                                                                                 "hz_median", "achieved_gflops")
                                                               if k in r} for r in res}
                f.pop("model_dir")
                sweep.append(f)
        result["sweep"] = sweep
        png = out_path.with_suffix(".png")
        plot_sweep(sweep, png)
        result["plot"] = str(png)
        _say(f"plot {png}")

    result["meta"]["loadavg_end"] = _loadavg()
    result["meta"]["seconds"] = round(time.time() - t_start, 1)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    _say(f"wrote {out_path} in {result['meta']['seconds']} s")
    print(format_table(result))
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
