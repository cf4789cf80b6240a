"""Engine backends behind one interface (see base.Engine) and the factory that picks one.

Backends: torch (CPU, or CUDA), onnxruntime (CPU execution provider, CUDA where onnxruntime-gpu
provides it), tensorrt (CUDA GPU + TensorRT 10). A backend spec is NAME or NAME:PRECISION:

    auto              GPU: tensorrt:fp16 when TensorRT is importable, else onnxruntime, else torch.
                      CPU: inductor when a C++ compiler exists, else torch, else onnxruntime
    torch             fp32 on CPU, fp16 autocast on CUDA      torch:bf16  bf16 autocast (CPU/CUDA)
    torch:fp16        CUDA only                                torch:fp32  explicit fp32
    inductor          CPU: the torch model compiled ahead of time by AOTInductor (needs a C++ compiler),
                      a cached artifact like a TensorRT engine; serves eagerly until the artifact
                      (built in a separate background process when missing) is ready
    onnxruntime       fp32 (CPU EP, or CUDA EP when present)
    tensorrt          fp16 (softmax/score layers pinned fp32)  tensorrt:fp32

The engine's `name` says what actually runs ("torch-cpu", "torch-cpu-inductor", "onnxruntime-cpu",
"onnxruntime-cuda", "tensorrt-fp16", ...); the fusion node publishes it in its status.
Importing this package is cheap: no torch, onnxruntime or tensorrt until an engine is created.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from perception.runtime.base import INPUT_NAMES, OUTPUT_NAMES, Engine

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "inductor", "onnxruntime", "tensorrt")
PRECISIONS = {"torch": ("fp32", "bf16", "fp16"), "inductor": ("fp32",), "onnxruntime": ("fp32",),
              "tensorrt": ("fp16", "fp32", "int8")}
# what `--backend` accepts (fusion node, bench)
BACKEND_CHOICES = ("auto", "torch", "torch:fp32", "torch:bf16", "torch:fp16", "inductor", "onnxruntime",
                   "tensorrt", "tensorrt:fp16", "tensorrt:fp32")


def parse_backend(spec: str) -> tuple[str, str | None]:
    """'name' or 'name:precision' -> (name, precision or None). Raises ValueError with the choices."""
    name, _, precision = str(spec).strip().lower().partition(":")
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {spec!r}; choose from {', '.join(BACKEND_CHOICES)}")
    if precision:
        allowed = PRECISIONS.get(name, ())
        if precision not in allowed:
            raise ValueError(f"backend {name!r} has no precision {precision!r}; "
                             f"choose from {', '.join(allowed) or 'none'}")
    return name, precision or None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def gpu_present() -> bool:
    """A CUDA GPU usable from torch (False on the CPU build of torch)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def available_backends() -> dict[str, str]:
    """{backend: why it is (not) usable here} for torch, inductor, onnxruntime, tensorrt; usable ones
    start with 'yes'."""
    out = {"torch": "yes" if _importable("torch") else "no: torch is not installed"}
    if not out["torch"].startswith("yes"):
        out["inductor"] = "no: torch is not installed"
    elif gpu_present():
        out["inductor"] = "no: the inductor backend is the CPU path (on a GPU: tensorrt, or torch fp16)"
    else:
        from perception.runtime.torch_backend import cxx_compiler

        out["inductor"] = "yes" if cxx_compiler() else "no: no C++ compiler (g++/clang++) for Inductor"
    if not _importable("onnxruntime"):
        out["onnxruntime"] = "no: onnxruntime is not installed (pip install -e '.[onnx]')"
    elif not _importable("onnx"):
        out["onnxruntime"] = "yes (no onnx package: only an existing, up-to-date export can be used)"
    else:
        out["onnxruntime"] = "yes"
    if not _importable("tensorrt"):
        out["tensorrt"] = "no: TensorRT is not installed"
    elif not gpu_present():
        out["tensorrt"] = "no: TensorRT is installed but there is no CUDA GPU"
    else:
        out["tensorrt"] = "yes"
    return out


def resolve_backend(spec: str = "auto") -> tuple[str, str | None]:
    """The (backend, precision) that `spec` means here. "auto" takes the fastest available:
    TensorRT on a GPU; else on a CPU Inductor, then eager PyTorch, then ONNX Runtime. On the CPU
    the order is measured, not assumed (`perception bench` on the 2-core reference machine,
    README, Engines): Inductor fuses the memory-bound work between the matrix products, eager
    PyTorch caches the calibration-only geometry (a quarter of the work) per calibration, and
    ONNX Runtime recomputes it every frame."""
    name, precision = parse_backend(spec)
    if name != "auto":
        return name, precision
    avail = available_backends()
    order = ("tensorrt", "onnxruntime", "torch") if gpu_present() else ("tensorrt", "inductor", "torch", "onnxruntime")
    for candidate in order:
        if avail[candidate].startswith("yes"):
            return candidate, None
    raise RuntimeError("no engine backend is usable: " + "; ".join(f"{k}: {v}" for k, v in avail.items()))


def create_engine(backend: str, model_dir: str | Path, *, threads: int | None = None,
                  allow_random_init: bool = False, device: str | None = None, **options) -> Engine:
    """Load the model in `model_dir` with the requested backend spec ("auto" picks the best available).

    device: "cpu" / "cuda" / None (torch and onnxruntime: CUDA when present). Further keyword
    options go to the backend's constructor (e.g. graph_optimization="extended" for onnxruntime,
    cache_geometry=False for torch, compiled="require"|"upgrade" and cache_dir=... for inductor,
    cache_dir=... for tensorrt)."""
    name, precision = resolve_backend(backend)
    if name in ("torch", "inductor"):
        from perception.runtime.torch_backend import TorchEngine

        dev = device or ("cuda" if gpu_present() and name == "torch" else "cpu")
        if name == "inductor":
            options.setdefault("compiled", "upgrade")
        engine: Engine = TorchEngine(model_dir, device=dev, threads=threads, allow_random_init=allow_random_init,
                             precision=precision, **options)
    elif name == "onnxruntime":
        from perception.runtime.onnxruntime_backend import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(model_dir, threads=threads, allow_random_init=allow_random_init,
                                   device=device, **options)
    else:
        from perception.runtime.tensorrt_backend import TensorRTEngine

        if precision == "int8":
            from perception.runtime.tensorrt_backend import INT8_REFUSAL

            raise ValueError(INT8_REFUSAL)
        engine = TensorRTEngine(model_dir, precision or "fp16", allow_random_init=allow_random_init, **options)
    log.info("engine: %s (%s, requested %s)", engine.name, model_dir, backend)
    return engine


__all__ = ["BACKENDS", "BACKEND_CHOICES", "INPUT_NAMES", "OUTPUT_NAMES", "Engine", "available_backends",
           "create_engine", "gpu_present", "parse_backend", "resolve_backend"]
