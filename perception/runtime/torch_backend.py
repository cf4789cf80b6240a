"""PyTorch backend: the reference implementation, the embedded default on CPUs, and the CUDA
path when neither ONNX Runtime nor TensorRT is wanted.

Precision: fp32 (reference); bf16 (CPU or CUDA autocast: matmuls in bf16, the model keeps its
calibration geometry and the top-K choice in fp32 whatever autocast says); fp16 (CUDA autocast,
the default on CUDA). Outputs are always float32 (the model casts heatmap/regression back).

Calibration-only work (rays, geometric scores, top-K keys, key geometry: BEVViT.geometry(), about
a quarter of a CPU forward) is cached per (calibration, camera mask) and recomputed only when
those inputs change, as the model's usage guide suggests; the output is bit-identical.

Inductor (backend spec `inductor`, CPU): the same model compiled ahead of time by AOTInductor
into a package in the engine cache (runtime/inductor_artifact.py). Compiling never happens in
this process: Inductor's tracing patches process-wide state and crashed a concurrent eager
forward. With compiled="upgrade" (what the fusion node uses) the engine serves eagerly from the
first frame set, starts the build in a separate low-priority process when the cache has no
artifact, and switches to the compiled graph between two frame sets once the artifact is built,
loaded and has passed a parity self-check; `switches` records each switch and why.
compiled="require" builds first (in a subprocess) and serves compiled from the first call.
"""
from __future__ import annotations

import logging
import shutil
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from perception.runtime.base import INPUT_NAMES, OUTPUT_NAMES, Engine, calibration_key, check_inputs
from perception.runtime.engine_cache import Lookup

CPU_PRECISIONS = ("fp32", "bf16")
CUDA_PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILED_MODES = ("off", "upgrade", "require")

log = logging.getLogger(__name__)


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor's CPU code generation would use, or None."""
    import os

    found = (shutil.which(name) for name in (os.environ.get("CXX"), "g++", "c++", "clang++") if name)
    return next((path for path in found if path), None)


class TorchEngine(Engine):
    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int | None = None,
                 allow_random_init: bool = False, precision: str | None = None, cache_geometry: bool = True,
                 compiled: str = "off", cache_dir: str | Path | None = None):
        from perception.model.cpu_tuning import tune_cpu_allocator
        from perception.model.weights import load_model

        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("torch backend: device cuda requested but torch.cuda.is_available() is False")
        allowed = CUDA_PRECISIONS if self.device.type == "cuda" else CPU_PRECISIONS
        self.precision = precision or ("fp16" if self.device.type == "cuda" else "fp32")
        if self.precision not in allowed:
            raise ValueError(f"torch backend on {self.device.type}: precision must be one of {allowed}, "
                             f"got {self.precision!r}")
        if self.device.type == "cpu":
            tune_cpu_allocator()
        elif self.precision == "fp32":
            # fp32 means fp32: no TF32 in cuDNN convolutions (on by default) or matmuls (process-wide flags)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        if threads:
            torch.set_num_threads(threads)
        self.model, self.config = load_model(model_dir, allow_random_init=allow_random_init)
        self.model.to(self.device).eval()
        self.cache_geometry = cache_geometry
        self._geo_key: tuple | None = None
        self._geo: dict | None = None
        suffix = "" if self.precision == "fp32" and self.device.type == "cpu" else f"-{self.precision}"
        self.name = f"torch-{self.device.type}{suffix}"
        self._compiled = None          # inductor_artifact.CompiledGraph once switched
        self._pending: tuple | None = None   # (CompiledGraph, reason): loaded, self-checked, waiting for the next call
        self._watcher: threading.Thread | None = None
        self._stop = threading.Event()
        self.switches: list[dict] = []  # {"unix_ns", "from", "to", "reason"} per engine switch
        if compiled not in COMPILED_MODES:
            raise ValueError(f"compiled must be one of {COMPILED_MODES}, got {compiled!r}")
        if compiled == "off":
            return
        if self.device.type != "cpu":
            raise ValueError("the inductor backend compiles for the CPU; on a GPU use tensorrt or torch (fp16)")
        if self.precision != "fp32":
            raise ValueError("the inductor backend builds fp32 artifacts; use --backend torch:bf16 for bf16")
        if cxx_compiler() is None:
            raise ValueError("the inductor backend needs a C++ compiler (g++ or clang++; set CXX) for "
                             "Inductor's CPU code generation; use --backend torch instead")
        self._start_compiled(compiled, Path(model_dir), cache_dir, allow_random_init)

    # -- the compiled artifact -----------------------------------------------------------
    def _start_compiled(self, mode: str, model_dir: Path, cache_dir, allow_random_init: bool) -> None:
        from perception.runtime import inductor_artifact as ia
        from perception.runtime.engine_cache import default_cache_dir

        self._cache_dir = Path(cache_dir) if cache_dir else default_cache_dir(model_dir)
        self._model_dir, self._allow_random_init = model_dir, allow_random_init
        self._threads = torch.get_num_threads()
        key = ia.artifact_key(self.model, self.config, self._threads)
        found = ia.find_artifact(self._cache_dir, self.config.name, key)
        self._artifact = found.path
        self._build_log = found.path.with_name(found.path.name + ".build.log")
        if found.load:
            runner = self._load_checked(found.path)
            if runner is not None:
                self._switch(runner, f"compiled artifact {found.path.name} found in the cache")
                return
            found = Lookup("rebuild", found.path, "the cached artifact failed to load or its self-check")
        log.info("inductor: %s (%s)", found.reason, found.path)
        if mode == "require":
            proc = ia.start_background_build(self._model_dir, self._cache_dir, self._threads, self._build_log,
                                             allow_random_init, background=False, force=True)
            log.info("inductor: building %s (pid %d, log %s)", found.path.name, proc.pid, self._build_log)
            if proc.wait() != 0 or not ia.find_artifact(self._cache_dir, self.config.name, key).load:
                raise RuntimeError(f"the inductor build failed (exit {proc.returncode}); see {self._build_log}")
            runner = self._load_checked(found.path)
            if runner is None:
                raise RuntimeError(f"the freshly built {found.path} failed to load or its self-check")
            self._switch(runner, f"compiled artifact {found.path.name} built")
            return
        self._watcher = threading.Thread(target=self._watch_build, args=(key,), name="inductor-watch", daemon=True)
        self._watcher.start()

    def _load_checked(self, path: Path):
        """Load an artifact and compare it with the eager model; None (logged) when either fails."""
        from perception.runtime import inductor_artifact as ia

        t0 = time.perf_counter()
        try:
            runner = ia.load_artifact(path)
            check = ia.self_check(self.model, runner, self.config)
        except Exception as e:               # a corrupt or foreign package must never stop the node
            log.warning("inductor: cannot load %s (%s: %s)", path.name, e.__class__.__name__, e)
            return None
        if not check["ok"]:
            log.error("inductor: %s disagrees with the eager model (heatmap diff %.2e, same detections %s): "
                      "not used", path.name, check["heatmap_max_abs_diff"], check["same_detections"])
            return None
        log.info("inductor: loaded %s in %.2f s, self-check heatmap diff %.1e", path.name,
                 time.perf_counter() - t0, check["heatmap_max_abs_diff"])
        return runner

    def _watch_build(self, key: dict) -> None:
        """Background thread: start the build unless one runs, wait for the artifact, load and check
        it, then hand it to the serving thread (_pending). Never compiles in this process."""
        from perception.runtime import inductor_artifact as ia

        t0 = time.monotonic()
        proc = None
        if ia.build_in_progress(self._artifact):
            log.info("inductor: another process is building %s; serving eagerly until it is ready",
                     self._artifact.name)
        else:
            proc = ia.start_background_build(self._model_dir, self._cache_dir, self._threads, self._build_log,
                                             self._allow_random_init)
            log.info("inductor: serving eagerly while pid %d builds %s in the background (log %s)",
                     proc.pid, self._artifact.name, self._build_log)
        while not self._stop.wait(0.5):
            if ia.find_artifact(self._cache_dir, self.config.name, key).load:
                runner = self._load_checked(self._artifact)
                if runner is not None:
                    self._pending = (runner, f"compiled artifact {self._artifact.name} ready after "
                                             f"{time.monotonic() - t0:.0f} s of background build")
                return
            if proc is not None and proc.poll() is not None:
                log.warning("inductor: the background build ended (exit %d) without a usable artifact: staying on "
                            "the eager model; see %s", proc.returncode, self._build_log)
                return
            if proc is None and not ia.build_in_progress(self._artifact):
                proc = ia.start_background_build(self._model_dir, self._cache_dir, self._threads,
                                                 self._build_log, self._allow_random_init)
                log.info("inductor: the other build ended without an artifact; pid %d builds it now", proc.pid)

    def _switch(self, runner, reason: str) -> None:
        old = self.name
        self._compiled = runner
        self.name = old.replace("torch-cpu", "torch-cpu-inductor")
        self.switches.append({"unix_ns": time.time_ns(), "from": old, "to": self.name, "reason": reason})
        log.info("engine switch: %s -> %s (%s)", old, self.name, reason)

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPE[self.precision])

    def _geometry(self, k_inv: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, key) -> dict:
        if self._geo is None or key is None or key != self._geo_key:
            self._geo = self.model.geometry(k_inv, t, mask)
            self._geo_key = key
        return self._geo

    def _forward(self, images, k_inv, t, mask, key=None) -> dict[str, torch.Tensor]:
        """BEVViT.forward, with the geometry from the cache when enabled (same ops, same order;
        tests/test_backends.py checks that the two agree exactly)."""
        from perception.model.decode import decode

        if self._pending is not None:         # between two frame sets: the only place a switch happens
            runner, reason = self._pending
            self._pending = None
            self._switch(runner, reason)
        if not self.cache_geometry:
            with self._autocast():
                return self.model(images, k_inv, t, mask)
        with self._autocast():
            geo = self._geometry(k_inv, t, mask, key)
            if self._compiled is not None:
                heat, reg, boxes, scores, labels = self._compiled(images, geo)
            else:
                out = self.model.forward_features(images, geo)
                heat = torch.sigmoid(out["heatmap_logits"].float())
                reg = out["regression"].float()
                cfg = self.config
                boxes, scores, labels = decode(heat, reg, cfg, cfg.max_detections)
        return {"heatmap": heat, "regression": reg, "det_boxes": boxes, "det_scores": scores,
                "det_labels": labels}

    @staticmethod
    def _calibration_key(k_inv, t, mask):
        return calibration_key(k_inv, t, mask)

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs)
        key = self._calibration_key(inputs["intrinsics_inv"], inputs["ego_from_camera"], inputs["camera_mask"])
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device, non_blocking=True)
                for n in INPUT_NAMES]
        out = self._forward(args[0], args[1], args[2], args[3], key=key)
        # CPU: .cpu() is a no-op and .numpy() a view (no copy); CUDA: one device->host copy each
        return {n: out[n].cpu().numpy() for n in OUTPUT_NAMES}

    @torch.inference_mode()
    def infer_torch(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Device tensors in, device tensors out (no host round trip); same names as infer().
        The geometry cache is keyed on the calibration tensors' values (a small device->host read)."""
        args = [inputs[n].to(self.device, non_blocking=True) for n in INPUT_NAMES]
        key = None
        if self.cache_geometry:
            key = tuple((tuple(a.shape), a.detach().float().cpu().numpy().tobytes()) for a in args[1:])
        return self._forward(args[0], args[1], args[2], args[3], key=key)

    def close(self) -> None:
        self._stop.set()
