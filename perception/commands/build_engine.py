"""`perception build-engine`: build (or find in the engine cache) a compiled engine for this
machine: an AOTInductor package for the CPU (`--backend inductor`, the default here) or a
TensorRT engine for the GPU (`--backend tensorrt`, needs TensorRT 10 and a CUDA GPU)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    from perception.config import DEFAULT_MODEL_DIR

    p = argparse.ArgumentParser(
        prog="perception build-engine",
        description="Build the compiled engine of a model for this machine and store it in the engine cache "
                    "(default: the model directory; $PERCEPTION_ENGINE_CACHE overrides). A cached artifact whose "
                    "key matches is reused; a mismatching, truncated or replaced one is rebuilt, never loaded. "
                    "inductor (CPU): an AOTInductor package keyed by weights, torch version, CPU ISA, thread count "
                    "and input shapes; the fusion node starts this build in the background by itself when the "
                    "cache has none. tensorrt (GPU): keyed by ONNX sha256, TensorRT version, GPU, compute "
                    "capability, precision and shapes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--backend", choices=("inductor", "tensorrt"), default="inductor", help="what to build")
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR), help="model directory")
    p.add_argument("--cache-dir", default=None, help="engine cache directory (default: see above)")
    p.add_argument("--force", action="store_true", help="rebuild even when the cache has a matching artifact")
    p.add_argument("--dry-run", action="store_true",
                   help="print the key and whether the cache would be used; build nothing")
    p.add_argument("--allow-random-init", action="store_true", help="seeded random weights when the model has none")
    g = p.add_argument_group("inductor")
    g.add_argument("--threads", type=int, default=2, help="CPU threads the engine will run with (part of the key)")
    g.add_argument("--background", action="store_true",
                   help="run only on CPU time nothing else wants (Linux SCHED_IDLE, elsewhere nice 19): what the "
                        "fusion node uses, so a build beside the live pipeline never delays a frame set")
    g = p.add_argument_group("tensorrt")
    from perception.runtime.tensorrt_backend import PRECISIONS

    g.add_argument("--precision", choices=PRECISIONS, default="fp16",
                   help="fp16 (softmax/norm/score/decode layers kept in FP32), fp32 (TF32 off); int8 is refused")
    g.add_argument("--onnx", default=None, help="ONNX file (default: <model>/<name>.onnx, exported when stale)")
    g.add_argument("--workspace-mb", type=int, default=None, help="builder workspace limit")
    g.add_argument("--device", type=int, default=0, help="CUDA device index")
    p.add_argument("--log-level", default="INFO")
    return p


def report(msg: str) -> None:
    print(f"[build-engine] {msg}", flush=True)


def lower_priority() -> None:
    """SCHED_IDLE where Linux has it (a normal-priority thread that wakes up takes the core at
    once), else nice 19. It only works within one session's autogroup: the node starts the build
    in its own session for that reason (inductor_artifact.start_background_build)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def build_inductor(args) -> int:
    if args.background:
        lower_priority()
    import torch

    from perception.model.weights import load_model
    from perception.runtime import inductor_artifact as ia
    from perception.runtime.engine_cache import default_cache_dir
    from perception.runtime.torch_backend import cxx_compiler

    if cxx_compiler() is None:
        print("perception build-engine: Inductor's CPU code generation needs a C++ compiler (g++ or clang++; "
              "set CXX)", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model, cfg = load_model(args.model, allow_random_init=args.allow_random_init)
    model.eval()
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(args.model)
    if args.dry_run:
        key = ia.artifact_key(model, cfg, args.threads)
        found = ia.find_artifact(cache_dir, cfg.name, key)
        print(f"key: {key}\n{found.action}: {found.path} ({found.reason})")
        return 0
    try:
        path = ia.build_artifact(model, cfg, cache_dir, cfg.name, args.threads, force=args.force, report=report)
    except ia.BuildInProgress as e:
        report(f"{e}; nothing to do")
        return 0
    print(f"engine {path}")
    return 0


def build_tensorrt(args) -> int:
    from perception.runtime.engine_cache import lookup, make_key
    from perception.runtime.tensorrt_backend import (
        INT8_REFUSAL,
        BackendUnavailable,
        BuildError,
        ensure_engine,
        target_facts,
    )

    if args.precision == "int8":
        print(f"perception build-engine: {INT8_REFUSAL}", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            from perception.runtime.onnx_export import ensure_onnx, file_sha256, read_sidecar

            facts = target_facts(args.device)
            onnx_path = ensure_onnx(args.model, args.onnx, allow_random_init=args.allow_random_init)
            side = read_sidecar(onnx_path) or {}
            key = make_key(file_sha256(onnx_path), facts, args.precision,
                           {v["name"]: v["shape"] for v in side.get("inputs", [])})
            found = lookup(Path(args.cache_dir or args.model), side.get("model_name") or Path(args.model).name, key)
            print(f"key {key.digest()}: {key.as_dict()}")
            print(f"{found.action}: {found.path} ({found.reason})")
            return 0
        path, found, key = ensure_engine(args.model, args.precision, cache_dir=args.cache_dir, onnx_path=args.onnx,
                                         allow_random_init=args.allow_random_init, force=args.force,
                                         workspace_mb=args.workspace_mb, device_index=args.device, report=report)
    except (BackendUnavailable, BuildError) as e:
        print(f"perception build-engine: {e}", file=sys.stderr)
        return 2
    print(f"engine {path}\nkey    {key.as_dict()}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from perception.logs import setup_logging

    setup_logging(args.log_level)
    return build_inductor(args) if args.backend == "inductor" else build_tensorrt(args)


if __name__ == "__main__":
    sys.exit(main())
