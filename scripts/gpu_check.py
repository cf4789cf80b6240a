#!/usr/bin/env python3
"""One prepared GPU check: every CUDA engine path in one run, with parity against CPU PyTorch.

    scripts/gpu_check.sh            (sets OUT, a time limit and the log; see there)
    python3 scripts/gpu_check.py --out DIR [--iters 200] [--budget-s 420]

For a GPU machine with PyTorch (CUDA build), ONNX Runtime (GPU build), OpenCV, numpy, PyYAML and
safetensors, but no pyzmq and no TensorRT: run from the repository root, nothing installed. It
blocks `import zmq` up front and never imports perception.transport (checked at the end).

Measured, each in its own section (a failing section is recorded and the rest still run):
  env          versions, GPU name / compute capability / memory, ORT providers, TensorRT presence
  reference    torch CPU fp32 on a fixed simulated scene (render_sample 3, nominal rig)
  torch-cuda-fp32, torch-cuda-fp16 (autocast)          PyTorch on the GPU
  onnxruntime-cuda                                     ONNX Runtime, CUDA execution provider
  onnxruntime-cpu                                      ONNX Runtime, CPU (parity reference point)
  tensorrt-fp32, tensorrt-fp16                         only when `import tensorrt` works
For each engine: start-up time, parity vs CPU torch fp32 (heatmap/regression max abs diff,
detections above 0.05: same labels, centres within 1e-3 m), latency through the numpy Engine
interface (p50/p99/Hz), on-device latency where the engine offers infer_torch (CUDA tensors in
and out, synchronised), and the whole fusion step (FusionPipeline.process from 320x180 frames)
when protobuf is importable. Writes gpu_check.json to --out and prints a summary table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from perception.model.weights import CONFIG_FILE, WEIGHTS_FILE

sys.modules["zmq"] = None                     # any `import zmq` now raises ImportError
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

T0 = time.monotonic()
RESULT: dict = {"sections": {}}
OUT_JSON: Path | None = None


def dump() -> None:
    """Write what is known so far (after every section: a run killed by the time limit keeps it)."""
    if OUT_JSON is not None:
        RESULT["seconds"] = round(time.monotonic() - T0, 1)
        OUT_JSON.write_text(json.dumps(RESULT, indent=1, default=str) + "\n")


def say(msg: str) -> None:
    print(f"[gpu_check {time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def left(budget: float) -> float:
    return budget - (time.monotonic() - T0)


def section(name: str, fn, *args, need_s: float = 5.0, budget: float = 420.0, **kw):
    if left(budget) < need_s:
        RESULT["sections"][name] = {"skipped": f"time budget: {left(budget):.0f} s left, needs ~{need_s:.0f} s"}
        say(f"{name}: skipped (time budget)")
        return None
    say(f"{name} ...")
    t = time.monotonic()
    try:
        out = fn(*args, **kw)
    except BaseException as e:  # noqa: BLE001 - a section must never stop the others
        if isinstance(e, KeyboardInterrupt):
            raise
        RESULT["sections"][name] = {"error": f"{type(e).__name__}: {e}",
                                    "traceback": traceback.format_exc(limit=6)[-3000:],
                                    "seconds": round(time.monotonic() - t, 1)}
        say(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}")
        dump()
        return None
    if isinstance(out, dict):
        out.setdefault("seconds", round(time.monotonic() - t, 1))
    RESULT["sections"][name] = out
    dump()
    return out


def latencies(fn, iters: int, warmup: int, max_s: float, sync=None) -> dict:
    for _ in range(warmup):
        fn()
    if sync:
        sync()
    ts = []
    end = time.perf_counter() + max_s
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        ts.append((time.perf_counter() - t) * 1e3)
        if time.perf_counter() > end and len(ts) >= 5:
            break
    a = np.asarray(ts)
    p50 = float(np.percentile(a, 50))
    return {"latency_ms_p50": round(p50, 3), "latency_ms_p99": round(float(np.percentile(a, 99)), 3),
            "hz_median": round(1e3 / p50, 1), "samples": len(ts)}


# ---------------------------------------------------------------------------------------------
def env_section() -> dict:
    import torch

    out = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
           "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(), "numpy": np.__version__}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update({"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{p.major}.{p.minor}",
                    "gpu_memory_gb": round(p.total_memory / 2**30, 1), "gpu_count": torch.cuda.device_count()})
    for mod in ("onnxruntime", "onnx", "tensorrt", "cv2", "yaml", "safetensors", "google.protobuf"):
        try:
            m = __import__(mod, fromlist=["__version__"])
            out[mod] = getattr(m, "__version__", "present")
        except Exception as e:  # noqa: BLE001
            out[mod] = f"missing ({type(e).__name__})"
    try:
        import onnxruntime as ort

        out["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return out


def prepare_model(work: Path) -> dict:
    """The shipped model (or, without weights, the shipped config with seeded random weights) copied
    into a work folder, so the ONNX export, engines and timing cache never land in the repository."""
    from perception.config import DEFAULT_MODEL_DIR
    from perception.model import load_model, save_model

    d = work / "bev_vit"
    if (DEFAULT_MODEL_DIR / WEIGHTS_FILE).exists():
        shutil.copytree(DEFAULT_MODEL_DIR, d, ignore=shutil.ignore_patterns("*.onnx*", "*.engine*", "*.timing_cache",
                                                                           "checkpoints"))
        weights = "shipped model.safetensors"
    else:
        model, cfg = load_model(DEFAULT_MODEL_DIR, allow_random_init=True)
        save_model(model, cfg, d)
        weights = "seeded random init (no trained weights in engines/bev_vit)"
    return {"model_dir": str(d), "weights": weights}


def scene_inputs(model_dir: Path):
    from perception.config import load_rig
    from perception.model import load_model_config

    cfg = load_model_config(model_dir / CONFIG_FILE)
    rig = load_rig()
    try:
        from perception.dataset import RigRandomization, render_sample

        images, k_inv, t, _ = render_sample(3, rig, cfg, RigRandomization.none())
        source = "render_sample(3, nominal rig)"
    except Exception as e:  # noqa: BLE001
        from perception.inputs import example_inputs

        x = example_inputs(cfg, 1)
        images, k_inv, t = x[0][0].numpy(), x[1][0].numpy(), x[2][0].numpy()
        source = f"random images, default rig calibration (render failed: {e})"
    inputs = {"images": np.ascontiguousarray(images[None]), "intrinsics_inv": np.ascontiguousarray(k_inv[None]),
              "ego_from_camera": np.ascontiguousarray(t[None]),
              "camera_mask": np.ones((1, cfg.num_cameras), np.float32)}
    return inputs, cfg, rig, source


def engine_section(spec: str, model_dir: Path, inputs: dict, reference: dict | None, rig, cfg, *, device=None,
                   iters: int, warmup: int, max_s: float, fusion_frames=None) -> dict:
    import torch

    from perception.runtime import create_engine
    from perception.runtime.parity import compare_outputs

    t = time.monotonic()
    kw = {"device": device} if device else {}
    engine = create_engine(spec, model_dir, threads=4, **kw)
    out = {"backend": spec, "name": engine.name, "startup_s": round(time.monotonic() - t, 1)}
    if getattr(engine, "providers", None):
        out["providers"] = engine.providers
    got = engine.infer(inputs)
    if reference is not None:
        out["parity_vs_cpu_torch_fp32"] = compare_outputs(reference, got)
    cuda = torch.cuda.is_available()
    out["numpy_interface"] = latencies(lambda: engine.infer(inputs), iters, warmup, max_s)
    on_gpu = cuda and ("cuda" in engine.name or engine.name.startswith("tensorrt"))
    if on_gpu and hasattr(engine, "infer_torch"):
        dev = {n: torch.from_numpy(v).cuda() for n, v in inputs.items()}
        engine.infer_torch(dev)
        out["on_device"] = latencies(lambda: engine.infer_torch(dev), iters, warmup, max_s, sync=torch.cuda.synchronize)
    if fusion_frames is not None:
        try:
            from perception.fusion.bench import make_frameset
            from perception.fusion.pipeline import FusionPipeline

            pipe = FusionPipeline(rig, engine, cfg)
            frames, t_ns = fusion_frames
            fs = make_frameset(rig, frames, t_ns)
            out["fusion_step"] = latencies(lambda: pipe.process(fs), max(20, iters // 4), 5, max_s / 2)
        except Exception as e:  # noqa: BLE001 - e.g. protobuf runtime missing or too old
            out["fusion_step"] = {"error": f"{type(e).__name__}: {e}"}
    engine.close()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
    return out


def summary_table() -> str:
    rows = [f"{'section':20s} {'engine':20s} {'start s':>7s} {'np p50':>8s} {'np p99':>8s} {'dev p50':>8s} "
            f"{'fusion':>8s} {'heat diff':>9s} {'same det':>8s}"]
    for name, s in RESULT["sections"].items():
        if not isinstance(s, dict) or ("numpy_interface" not in s and "error" not in s and "skipped" not in s):
            continue
        if "error" in s or "skipped" in s:
            rows.append(f"{name:20s} {('ERROR ' + s['error']) if 'error' in s else ('skipped: ' + s['skipped'])}"[:150])
            continue
        par = s.get("parity_vs_cpu_torch_fp32", {})
        dev = s.get("on_device", {}).get("latency_ms_p50")
        fus = s.get("fusion_step", {}).get("latency_ms_p50")
        rows.append(f"{name:20s} {s['name']:20s} {s['startup_s']:7.1f} {s['numpy_interface']['latency_ms_p50']:8.2f} "
                    f"{s['numpy_interface']['latency_ms_p99']:8.2f} {'-' if dev is None else f'{dev:8.2f}':>8s} "
                    f"{'-' if fus is None else f'{fus:8.2f}':>8s} "
                    f"{par.get('heatmap_max_abs_diff', float('nan')):9.1e} {str(par.get('same_detections', '-')):>8s}")
    return "\n".join(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="GPU engine check (see module docstring)")
    p.add_argument("--out", default=os.environ.get("OUT") or "out/gpu")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--max-s", type=float, default=15.0, help="cap per latency measurement")
    p.add_argument("--budget-s", type=float, default=420.0, help="skip sections that would end past this")
    a = p.parse_args(argv)
    global OUT_JSON
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    OUT_JSON = out_dir / "gpu_check.json"
    budget = a.budget_s
    RESULT["started_unix"] = int(time.time())
    RESULT["args"] = vars(a)

    env = section("env", env_section, budget=budget)
    cuda = bool(env and env.get("cuda_available"))
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    model = section("model", prepare_model, work, budget=budget)
    if not model:
        return finish(out_dir, 1)
    model_dir = Path(model["model_dir"])
    inputs, cfg, rig, source = scene_inputs(model_dir)
    RESULT["inputs"] = {"source": source, "shapes": {k: list(v.shape) for k, v in inputs.items()}}
    fusion_frames = None
    try:
        from perception.fusion.bench import scene_frames

        fusion_frames = scene_frames(rig)
    except Exception as e:  # noqa: BLE001
        RESULT["fusion_frames_error"] = f"{type(e).__name__}: {e}"

    common = dict(iters=a.iters, warmup=a.warmup, max_s=a.max_s, fusion_frames=fusion_frames, budget=budget)
    def reference_outputs():
        from perception.runtime import create_engine

        return create_engine("torch:fp32", model_dir, device="cpu", threads=4).infer(inputs)

    reference = None
    try:
        reference = reference_outputs()
    except Exception as e:  # noqa: BLE001
        RESULT["reference_error"] = f"{type(e).__name__}: {e}"
    section("torch-cpu-fp32", engine_section, "torch:fp32", model_dir, inputs, reference, rig, cfg,
            device="cpu", **{**common, "iters": 20, "warmup": 3}, need_s=20)
    if cuda:
        section("torch-cuda-fp32", engine_section, "torch:fp32", model_dir, inputs, reference, rig, cfg,
                device="cuda", **common, need_s=40)
        section("torch-cuda-fp16", engine_section, "torch:fp16", model_dir, inputs, reference, rig, cfg,
                device="cuda", **common, need_s=40)
    else:
        RESULT["sections"]["torch-cuda"] = {"skipped": "torch.cuda.is_available() is False"}
    from perception.runtime.onnxruntime_backend import cuda_provider_available

    if cuda_provider_available():
        section("onnxruntime-cuda", engine_section, "onnxruntime", model_dir, inputs, reference, rig, cfg,
                device="cuda", **common, need_s=60)
    else:
        RESULT["sections"]["onnxruntime-cuda"] = {"skipped": "no CUDAExecutionProvider in this onnxruntime"}
    section("onnxruntime-cpu", engine_section, "onnxruntime", model_dir, inputs, reference, rig, cfg,
            device="cpu", **{**common, "iters": 30, "warmup": 3}, need_s=30)
    from perception.runtime.tensorrt_backend import tensorrt_importable

    if tensorrt_importable() and cuda:
        for prec in ("fp32", "fp16"):
            section(f"tensorrt-{prec}", engine_section, f"tensorrt:{prec}", model_dir, inputs, reference, rig, cfg,
                    **common, need_s=150)
    else:
        RESULT["sections"]["tensorrt"] = {"skipped": "tensorrt is not importable" if cuda else "no CUDA GPU"}
    RESULT["zmq_imported"] = bool(sys.modules.get("zmq"))
    RESULT["perception_transport_imported"] = "perception.transport" in sys.modules
    return finish(out_dir, 0)


def finish(out_dir: Path, rc: int) -> int:
    dump()
    path = out_dir / "gpu_check.json"
    print()
    print(summary_table())
    print(f"\nwrote {path} ({RESULT['seconds']} s); perception.transport imported: "
          f"{RESULT.get('perception_transport_imported')}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
