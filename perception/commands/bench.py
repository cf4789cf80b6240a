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
import sys
import tempfile
import time
from pathlib import Path


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
    from perception.fusion.bench import frameset_inputs, scene_frames, time_fusion_step
    from perception.model.config import load_model_config, replace_config, save_model_config
    from perception.model.cpu_tuning import tune_cpu_allocator
    from perception.model.weights import CONFIG_FILE, WEIGHTS_FILE
    from perception.runtime.bench import (
        REFERENCE_LABEL,
        SWEEP_SIZES,
        bench_model,
        default_backends,
        format_table,
        gemm_throughput,
        loadavg,
        machine_info,
        ort_profile,
        ort_variants,
        plot_sweep,
        say_progress,
    )

    tune_cpu_allocator()
    torch.set_num_threads(args.threads)
    backends = [b.strip() for b in args.backends.split(",")] if args.backends else default_backends()
    out_path = Path(args.json)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    allow_random = not (Path(args.model) / WEIGHTS_FILE).exists()
    if allow_random:
        say_progress(f"{args.model} has no model.safetensors: timing seeded random weights (timing does not depend on them)")
    t_start = time.time()
    result = {"meta": {**machine_info(), "threads": args.threads, "iters": args.iters, "warmup": args.warmup,
                       "backends": backends, "loadavg_start": loadavg(), "started_unix": int(t_start)}}
    say_progress(f"backends {backends}, {args.threads} threads, {args.iters} iters after {args.warmup} warm-up; "
         f"load average {result['meta']['loadavg_start']}")

    rig = load_rig(args.rig)
    frames, t_ns = scene_frames(rig)
    cfg = load_model_config(Path(args.model) / CONFIG_FILE)
    say_progress("GEMM throughput ...")
    peak = gemm_throughput(args.threads, cfg)
    result["peak"] = peak
    say_progress(f"  fp32 GEMM peak {peak['peak_gflops']:.0f} GFLOP/s, bf16 {peak['bf16_gflops'][REFERENCE_LABEL]:.0f} "
         f"GFLOP/s ({REFERENCE_LABEL}, {args.threads} threads)")

    say_progress(f"model {args.model}")
    def make_inputs(model_cfg):
        return frameset_inputs(rig, frames, model_cfg)

    def fusion_step(engine, model_cfg):
        return time_fusion_step(rig, engine, model_cfg, frames, t_ns, iters=args.iters, warmup=args.warmup,
                                max_seconds=args.max_seconds)

    per_backend, facts = bench_model(args.model, backends, threads=args.threads, iters=args.iters, warmup=args.warmup,
                                     max_seconds=args.max_seconds, allow_random_init=allow_random,
                                     make_inputs=make_inputs, fusion_step=fusion_step if args.fusion else None)
    result["model"] = facts
    result["backends"] = per_backend

    if args.ort_variants or args.ort_profile:
        inputs = frameset_inputs(rig, frames, cfg)
        if args.ort_variants:
            say_progress("ONNX Runtime session variants ...")
            result["ort_variants"] = ort_variants(args.model, inputs, threads=args.threads, iters=args.iters,
                                                  warmup=args.warmup, max_seconds=args.max_seconds,
                                                  allow_random_init=allow_random)
        if args.ort_profile:
            say_progress("ONNX Runtime profile ...")
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
                say_progress(f"sweep {h}x{w} ...")
                res, f = bench_model(d, sweep_backends, threads=args.threads, iters=iters, warmup=min(args.warmup, 3),
                                     max_seconds=args.max_seconds, allow_random_init=True,
                                     make_inputs=make_inputs)
                f["backends"] = {r.get("name", r["backend"]): {k: r[k] for k in ("latency_ms_p50", "latency_ms_p99",
                                                                                 "hz_median", "achieved_gflops")
                                                               if k in r} for r in res}
                f.pop("model_dir")
                sweep.append(f)
        result["sweep"] = sweep
        png = out_path.with_suffix(".png")
        plot_sweep(sweep, png)
        result["plot"] = str(png)
        say_progress(f"plot {png}")

    result["meta"]["loadavg_end"] = loadavg()
    result["meta"]["seconds"] = round(time.time() - t_start, 1)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    say_progress(f"wrote {out_path} in {result['meta']['seconds']} s")
    print(format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
