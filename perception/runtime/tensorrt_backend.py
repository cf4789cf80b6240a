"""TensorRT backend and `perception build-engine`.

    perception build-engine [--model engines/bev_vit] [--precision fp16|fp32] [--force] [--dry-run]

UNTESTED IN THIS REPOSITORY'S CI: written against the TensorRT 10 Python API (names checked
against NVIDIA's API reference) but never run here, because `pip install tensorrt` needs NVIDIA's
index and a GPU. tests/test_engine_cache.py covers the cache-key logic everywhere and skips the
TensorRT tests (with a reason) where TensorRT or a GPU is missing; scripts/gpu_check.sh runs this
backend when TensorRT is importable on a GPU machine.

Building (build_serialized_engine): ONNX (onnx_export.ensure_onnx, exported first when missing or
stale) -> trt.OnnxParser into a network from builder.create_network(0) (TensorRT 10: explicit
batch is the only mode) -> BuilderConfig with
- a timing cache file per GPU model / compute capability / TensorRT version
  (config.create_timing_cache + set_timing_cache; written back after every build),
- progress: a trt.IProgressMonitor subclass (config.progress_monitor, TensorRT >= 10), else a
  heartbeat log line every 15 s,
- fp32: BuilderFlag.TF32 cleared (true FP32, so the FP32 engine is comparable to the 1e-4 parity
  tolerance); fp16: BuilderFlag.FP16 plus the nodes listed in the ONNX sidecar's
  "tensorrt_fp32_nodes" (calibration-only geometry and top-K selection, softmax, layer norm,
  sigmoid, decode) and every SOFTMAX / NORMALIZATION / TOPK layer pinned to FP32 with
  layer.precision and set_output_type, under BuilderFlag.PREFER_PRECISION_CONSTRAINTS (TensorRT
  warns instead of failing when it cannot honour one); int8: refused (INT8_REFUSAL).
-> builder.build_serialized_network -> engine_cache.store (engine + sidecar with the full key).

Running (TensorRTEngine): Runtime.deserialize_cuda_engine; one IExecutionContext; every I/O tensor
bound with set_tensor_address to a torch CUDA tensor (torch owns device memory and the CUDA
stream, so neither pycuda nor cuda-python is needed); execute_async_v3(stream.cuda_stream).
infer(): numpy in -> one host->device copy per input into the bound buffers -> execute -> one
device->host copy per output into the returned arrays, nothing else. infer_torch(): CUDA tensors
in and out, no host copies, on the caller's current stream.
"""
from __future__ import annotations

import importlib.util
import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from perception.runtime.base import INPUT_NAMES, OUTPUT_NAMES, Engine, check_inputs
from perception.runtime.engine_cache import (
    EngineKey,
    Lookup,
    atomic_write,
    engine_sidecar_path,
    lookup,
    make_key,
    store,
    timing_cache_path,
)

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "fp32", "int8")
INT8_REFUSAL = (
    "INT8 engines are not built: shipping INT8 needs a calibration set drawn from the deployment "
    "distribution and a measured accuracy delta against FP32 (nuScenes-style mAP/NDS on the simulated "
    "test split) before the engine may be used, and neither exists yet. TensorRT 10 also deprecates "
    "implicit-quantization calibrators (IInt8Calibrator, deprecated in 10.1) in favour of explicit Q/DQ "
    "nodes in the ONNX (e.g. NVIDIA ModelOpt), and TensorRT 11 removes BuilderFlag.INT8. Use --precision "
    "fp16 (the accuracy cost of FP16 is negligible for this class of model).")


class BackendUnavailable(ValueError):
    """TensorRT (or a CUDA GPU) is not available here. A ValueError, so that the fusion node reports
    it as "cannot start: ..." like any other unusable option."""


class BuildError(RuntimeError):
    """TensorRT could not parse or build the network."""


def tensorrt_importable() -> bool:
    """True when `import tensorrt` would find a module (does not import it)."""
    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise BackendUnavailable(f"TensorRT is not installed ({e}); it comes from NVIDIA's pip index "
                                 "(pip install tensorrt) and needs an NVIDIA GPU") from None
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        raise BackendUnavailable(f"TensorRT {trt.__version__} is too old: this backend uses the TensorRT 10 API "
                                 "(named I/O tensors, execute_async_v3)")
    return trt


def _require_cuda(device_index: int = 0):
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("TensorRT needs a CUDA GPU and torch.cuda.is_available() is False "
                                 "(a CPU-only torch build, or no GPU)")
    if device_index >= torch.cuda.device_count():
        raise BackendUnavailable(f"no CUDA device {device_index} ({torch.cuda.device_count()} present)")
    return torch


def target_facts(device_index: int = 0) -> dict:
    """The facts of this machine an engine is only valid for (part of the cache key)."""
    trt = import_tensorrt()
    torch = _require_cuda(device_index)
    major, minor = torch.cuda.get_device_capability(device_index)
    return {"tensorrt_version": str(trt.__version__), "gpu_name": torch.cuda.get_device_name(device_index),
            "compute_capability": f"{major}.{minor}"}


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------
def _progress_monitor(trt, report):
    """A trt.IProgressMonitor that reports phase starts/ends and at most one step line per second
    per phase; None where this TensorRT has no IProgressMonitor."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):
        def __init__(self):
            base.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int, float]] = {}   # name -> (steps, depth, last report)

        def phase_start(self, phase_name, parent_phase, num_steps):
            with self._lock:
                depth = self._phases[parent_phase][1] + 1 if parent_phase in self._phases else 0
                self._phases[phase_name] = (int(num_steps), depth, time.monotonic())
            report(f"{'  ' * depth}{phase_name}: started ({num_steps} steps)")

        def step_complete(self, phase_name, step):
            now = time.monotonic()
            with self._lock:
                steps, depth, last = self._phases.get(phase_name, (0, 0, 0.0))
                due = now - last >= 1.0
                if due:
                    self._phases[phase_name] = (steps, depth, now)
            if due:
                report(f"{'  ' * depth}{phase_name}: {step + 1}/{steps}")
            return True                      # False would cancel the build

        def phase_finish(self, phase_name):
            with self._lock:
                depth = self._phases.pop(phase_name, (0, 0, 0.0))[1]
            report(f"{'  ' * depth}{phase_name}: done")

    return _Monitor()


class _Heartbeat:
    """Fallback progress: a log line every `period` seconds while a build runs."""

    def __init__(self, report, period: float = 15.0):
        self.report, self.period = report, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        t0 = time.monotonic()
        while not self._stop.wait(self.period):
            self.report(f"still building ({time.monotonic() - t0:.0f} s)")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=1)


_ONNX_LAYER = re.compile(r"ONNX Layer:\s*([^\]\n]+)")


def _pin_fp32(trt, network, fp32_nodes) -> dict:
    """layer.precision = float32 and float32 outputs for the layers that came from `fp32_nodes`
    (matched by layer name, or by the ONNX node name the parser records in layer.metadata) and
    for every SOFTMAX / NORMALIZATION / TOPK layer."""
    names = set(fp32_nodes)
    by_type = {getattr(trt.LayerType, t) for t in ("SOFTMAX", "NORMALIZATION", "TOPK") if hasattr(trt.LayerType, t)}
    skip = {getattr(trt.LayerType, t) for t in ("CONSTANT", "SHAPE", "CAST") if hasattr(trt.LayerType, t)}
    floats = {trt.float32, trt.float16}
    counts = {"by_type": 0, "by_name": 0, "layers": network.num_layers}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in skip:
            continue
        meta = getattr(layer, "metadata", "") or ""
        named = layer.name in names or any(m.strip() in names for m in _ONNX_LAYER.findall(meta))
        typed = layer.type in by_type
        if not (named or typed):
            continue
        outs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in floats]
        if not outs:
            continue                          # integer-only layer (indices, shapes): nothing to pin
        layer.precision = trt.float32
        for j in outs:
            layer.set_output_type(j, trt.float32)
        counts["by_type" if typed else "by_name"] += 1
    return counts


def build_serialized_engine(onnx_path, precision: str, timing_cache: Path | None, *, fp32_nodes=(),
                            workspace_mb: int | None = None, report=print) -> tuple[bytes, dict]:
    """ONNX file -> serialized engine bytes and build stats. Raises BuildError with the parser's
    or builder's messages."""
    if precision == "int8":
        raise BuildError(INT8_REFUSAL)
    if precision not in ("fp32", "fp16"):
        raise BuildError(f"precision must be fp32 or fp16, got {precision!r}")
    trt = import_tensorrt()
    t0 = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)            # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    report(f"parsing {onnx_path}")
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BuildError(f"TensorRT's ONNX parser rejected {onnx_path}:\n  " + "\n  ".join(errors))
    config = builder.create_builder_config()
    if workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    stats: dict[str, Any] = {"precision": precision, "tensorrt_version": str(trt.__version__)}
    if precision == "fp32":
        config.clear_flag(trt.BuilderFlag.TF32)
    else:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise BuildError(f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (weak typing removed in "
                             "TensorRT 11): FP16 there needs a strongly typed FP16 ONNX, not implemented; "
                             "build fp32 or use TensorRT 10")
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
        stats["fp32_pinned"] = _pin_fp32(trt, network, fp32_nodes)
        report(f"FP16 build, pinned to FP32: {stats['fp32_pinned']['by_type']} softmax/norm/topk layers by type, "
               f"{stats['fp32_pinned']['by_name']} geometry/score/decode layers by name "
               f"(of {stats['fp32_pinned']['layers']})")
    cache = None
    if timing_cache is not None:
        blob = b""
        if timing_cache.exists():
            blob = timing_cache.read_bytes()
            report(f"timing cache {timing_cache} ({len(blob)} bytes)")
        try:
            cache = config.create_timing_cache(blob)
            ok = config.set_timing_cache(cache, ignore_mismatch=False)
        except Exception as e:   # a corrupt cache file: start from an empty one
            report(f"timing cache unusable ({e}); starting an empty one")
            ok = False
        if not ok:
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = _progress_monitor(trt, report)
    report(f"building {precision} engine (minutes on a first build; the timing cache makes rebuilds faster)")
    if monitor is not None:
        config.progress_monitor = monitor
        serialized = builder.build_serialized_network(network, config)
    else:
        with _Heartbeat(report):
            serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError("builder.build_serialized_network returned None (see the TensorRT log above)")
    if timing_cache is not None:
        data = config.get_timing_cache().serialize()
        atomic_write(timing_cache, bytes(data))
    stats["build_seconds"] = round(time.perf_counter() - t0, 1)
    del monitor
    return bytes(serialized), stats


def ensure_engine(model_dir, precision: str = "fp16", *, cache_dir=None, onnx_path=None, allow_random_init=False,
                  force: bool = False, workspace_mb: int | None = None, device_index: int = 0,
                  report=print) -> tuple[Path, Lookup, EngineKey]:
    """The path of a cached engine valid for this model, machine and precision, building it when
    the cache has none or a mismatching one (a mismatch is rebuilt, never loaded)."""
    from perception.runtime.onnx_export import ensure_onnx, file_sha256, read_sidecar

    if precision == "int8":
        raise BuildError(INT8_REFUSAL)
    facts = target_facts(device_index)
    onnx_path = ensure_onnx(model_dir, onnx_path, allow_random_init=allow_random_init)
    side = read_sidecar(onnx_path) or {}
    shapes = {v["name"]: v["shape"] for v in side.get("inputs", [])}
    key = make_key(file_sha256(onnx_path), facts, precision, shapes)
    cache_dir = Path(cache_dir) if cache_dir else Path(model_dir)
    model_name = side.get("model_name") or Path(model_dir).name
    found = lookup(cache_dir, model_name, key)
    if found.load and not force:
        report(f"engine cache hit: {found.path.name}")
        return found.path, found, key
    report(f"building TensorRT engine {found.path.name}: {'--force' if found.load else found.reason}")
    blob, stats = build_serialized_engine(onnx_path, precision, timing_cache_path(cache_dir, facts),
                                          fp32_nodes=side.get("tensorrt_fp32_nodes", ()),
                                          workspace_mb=workspace_mb, report=report)
    path = store(cache_dir, model_name, key, blob,
                 extra={"onnx_file": str(onnx_path), "built_unix": int(time.time()), "build": stats})
    report(f"wrote {path} ({len(blob) / 1e6:.1f} MB) in {stats['build_seconds']} s")
    return path, found, key


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------
def _torch_dtype(trt, dt):
    import torch

    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32,
             trt.int8: torch.int8, trt.bool: torch.bool}
    for trt_name, torch_dtype in (("int64", torch.int64), ("uint8", torch.uint8), ("bfloat16", torch.bfloat16)):
        if hasattr(trt, trt_name):
            table[getattr(trt, trt_name)] = torch_dtype
    if dt not in table:
        raise RuntimeError(f"unsupported TensorRT I/O dtype {dt}")
    return table[dt]


class TensorRTEngine(Engine):
    def __init__(self, model_dir, precision: str = "fp16", *, device_index: int = 0, cache_dir=None,
                 onnx_path=None, allow_random_init: bool = False, workspace_mb: int | None = None,
                 report=None):
        report = report or (lambda msg: log.info("%s", msg))
        trt = import_tensorrt()
        torch = _require_cuda(device_index)
        self._torch = torch
        self.device = torch.device("cuda", device_index)
        self.precision = precision
        path, _, self.key = ensure_engine(model_dir, precision, cache_dir=cache_dir, onnx_path=onnx_path,
                                          allow_random_init=allow_random_init, workspace_mb=workspace_mb,
                                          device_index=device_index, report=report)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            # the key matched but this TensorRT cannot load the file: rebuild once, never crash on it
            report(f"{path.name} failed to deserialize; rebuilding it")
            engine_sidecar_path(path).unlink(missing_ok=True)
            path, _, self.key = ensure_engine(model_dir, precision, cache_dir=cache_dir, onnx_path=onnx_path,
                                              allow_random_init=allow_random_init, workspace_mb=workspace_mb,
                                              device_index=device_index, report=report)
            engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                raise BuildError(f"a freshly built {path} does not deserialize")
        self.engine_path = path
        self._engine = engine
        self._context = engine.create_execution_context()
        self._stream = torch.cuda.Stream(device=self.device)
        self._inputs: dict = {}
        self._outputs: dict = {}
        with torch.cuda.device(self.device):
            for i in range(engine.num_io_tensors):
                name = engine.get_tensor_name(i)
                shape = tuple(int(d) for d in engine.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise BuildError(f"{path.name}: tensor {name} has a dynamic shape {shape}; "
                                     "export with static shapes")
                buf = torch.empty(shape, dtype=_torch_dtype(trt, engine.get_tensor_dtype(name)), device=self.device)
                if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                    self._context.set_input_shape(name, shape)
                    self._inputs[name] = buf
                else:
                    self._outputs[name] = buf
        if set(self._inputs) != set(INPUT_NAMES) or not set(OUTPUT_NAMES) <= set(self._outputs):
            raise BuildError(f"{path.name}: I/O tensors {sorted(self._inputs)} -> {sorted(self._outputs)} do not "
                             f"match {INPUT_NAMES} -> {OUTPUT_NAMES}")
        self.name = f"tensorrt-{precision}"

    def _bind(self, inputs: dict, outputs: dict) -> None:
        for name, t in inputs.items():
            self._context.set_tensor_address(name, t.data_ptr())
        for name, t in outputs.items():
            self._context.set_tensor_address(name, t.data_ptr())

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        check_inputs(inputs)
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            for name, buf in self._inputs.items():
                src = torch.from_numpy(np.ascontiguousarray(inputs[name]))
                if tuple(src.shape) != tuple(buf.shape):
                    raise ValueError(f"{name}: engine built for {list(buf.shape)}, got {list(src.shape)}")
                buf.copy_(src, non_blocking=True)                # host -> device, on our stream
            self._bind(self._inputs, self._outputs)
            if not self._context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError("IExecutionContext.execute_async_v3 failed (see the TensorRT log)")
            # device -> host on the same stream; .cpu() waits for it: the only host copy
            out = {name: buf.cpu().numpy() for name, buf in self._outputs.items() if name in OUTPUT_NAMES}
        return out

    def infer_torch(self, inputs: dict) -> dict:
        """CUDA tensors in (INPUT_NAMES, the engine's dtypes and shapes), new CUDA tensors out, on the
        caller's current stream; no host copies."""
        torch = self._torch
        bound_in = {}
        for name, buf in self._inputs.items():
            t = inputs[name]
            if t.device != self.device or t.dtype != buf.dtype or tuple(t.shape) != tuple(buf.shape):
                raise ValueError(f"{name}: expected {buf.dtype} {list(buf.shape)} on {self.device}, got "
                                 f"{t.dtype} {list(t.shape)} on {t.device}")
            bound_in[name] = t.contiguous()
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            outs = {name: torch.empty_like(buf) for name, buf in self._outputs.items()}
            self._bind(bound_in, outs)
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("IExecutionContext.execute_async_v3 failed (see the TensorRT log)")
        return {n: outs[n] for n in OUTPUT_NAMES}

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._runtime = None
        self._inputs, self._outputs = {}, {}
