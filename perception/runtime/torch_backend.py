"""PyTorch backend: the reference implementation, the embedded default on CPUs, and the CUDA
path when neither ONNX Runtime nor TensorRT is wanted.

Precision: fp32 (reference); bf16 (CPU or CUDA autocast: matmuls in bf16, the model keeps its
calibration geometry and the top-K choice in fp32 whatever autocast says); fp16 (CUDA autocast,
the default on CUDA). Outputs are always float32 (the model casts heatmap/regression back).

Calibration-only work (rays, geometric scores, top-K keys, key geometry: BEVViT.geometry(), about
a quarter of a CPU forward) is cached per (calibration, camera mask) and recomputed only when
those inputs change, as the model's usage guide suggests; the output is bit-identical.

Inductor (backend spec `inductor`, CPU): the same module through torch.compile with Inductor's
C++ code generation and weight freezing. It fuses the elementwise work between the matrix
products (layer norms, GELU, softmax, masks, residual adds, the gathers' index arithmetic) that
eager mode runs as separate memory-bound kernels: on the 2-core reference machine, timed
interleaved with eager in one `perception bench` run, the shipped model took 26.5 ms per frame
set against 31.0 ms, with max |heatmap difference| 2.7e-7 (README, Engines; 19.7 against 26.9
ms before the model had token depth).
Compiling takes ~40 s on 2 cores the first time (Inductor caches the result on disk: ~15-20 s
later) and happens in the constructor, like building a TensorRT engine. It cannot run in a
background thread beside eager inference: Inductor's compile patches torch.nn.Module.__call__
process-wide while it traces, and a concurrent eager forward then fails ("module is not installed
as a submodule"; seen in the live pipeline). A failed compile logs a warning and leaves the eager
model running, with the engine's name "torch-cpu".
"""
from __future__ import annotations

import logging
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from perception.runtime.base import INPUT_NAMES, OUTPUT_NAMES, Engine, check_inputs

CPU_PRECISIONS = ("fp32", "bf16")
CUDA_PRECISIONS = ("fp32", "fp16", "bf16")
_AUTOCAST_DTYPE = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES = ("off", "sync")

log = logging.getLogger(__name__)


def cxx_compiler() -> str | None:
    """The C++ compiler Inductor's CPU code generation would use, or None."""
    import os

    found = (shutil.which(name) for name in (os.environ.get("CXX"), "g++", "c++", "clang++") if name)
    return next((path for path in found if path), None)


class TorchEngine(Engine):
    def __init__(self, model_dir: str | Path, device: str = "cpu", threads: int | None = None,
                 allow_random_init: bool = False, precision: str | None = None, cache_geometry: bool = True,
                 compile_mode: str = "off"):
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
        self._geo_key = None
        self._geo = None
        suffix = "" if self.precision == "fp32" and self.device.type == "cpu" else f"-{self.precision}"
        self.name = f"torch-{self.device.type}{suffix}"
        self._features = self.model.forward_features      # what _forward calls: eager, later compiled
        if compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
        if compile_mode == "off":
            return
        if self.device.type != "cpu":
            raise ValueError("the inductor backend compiles for the CPU; on a GPU use tensorrt or torch (fp16)")
        if cxx_compiler() is None:
            raise ValueError("the inductor backend needs a C++ compiler (g++ or clang++; set CXX) for "
                             "Inductor's CPU code generation; use --backend torch instead")
        self._compile(self.name)

    def _compile(self, eager_name: str) -> None:
        """Compile forward_features with Inductor and run it once on stand-in inputs of the right
        shapes (that is when compilation happens); _forward then calls it."""
        import torch._inductor.config as inductor_config

        cfg = self.config
        t0 = time.perf_counter()
        log.info("inductor: compiling %s (about 40 s on 2 cores the first time, less with Inductor's "
                 "on-disk cache)", cfg.name)
        try:
            # Weights become constants: folded, and pre-packed once for oneDNN's matrix products.
            inductor_config.freezing = True
            compiled = torch.compile(self.model.forward_features, dynamic=False)
            N = cfg.num_cameras
            # stand-ins made exactly as infer() makes its inputs (inference tensors), or the first
            # real call would fail a guard and compile again
            with torch.inference_mode(), self._autocast():
                images = torch.from_numpy(np.zeros((1, N, cfg.image_height, cfg.image_width, 3), np.uint8))
                k_inv = torch.from_numpy(np.tile(np.eye(3, dtype=np.float32), (1, N, 1, 1)))
                t = torch.from_numpy(np.tile(np.eye(4, dtype=np.float32), (1, N, 1, 1)))
                compiled(images, self.model.geometry(k_inv, t, torch.from_numpy(np.ones((1, N), np.float32))))
        except Exception as e:            # never take the node down: the eager model serves instead
            log.warning("inductor: compilation failed after %.0f s, staying with the eager model: %s",
                        time.perf_counter() - t0, e)
            self.name = eager_name
        else:
            self._features = compiled
            self.name = eager_name.replace("torch-cpu", "torch-cpu-inductor")
            log.info("inductor: compiled in %.1f s", time.perf_counter() - t0)

    def _autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_AUTOCAST_DTYPE[self.precision])

    def _geometry(self, k_inv: torch.Tensor, t: torch.Tensor, mask: torch.Tensor, key) -> dict:
        if key is None or key != self._geo_key:
            self._geo = self.model.geometry(k_inv, t, mask)
            self._geo_key = key
        return self._geo

    def _forward(self, images, k_inv, t, mask, key=None) -> dict[str, torch.Tensor]:
        """BEVViT.forward, with the geometry from the cache when enabled (same ops, same order;
        tests/test_backends.py checks that the two agree exactly)."""
        from perception.model.decode import decode

        if not self.cache_geometry:
            with self._autocast():
                return self.model(images, k_inv, t, mask)
        with self._autocast():
            geo = self._geometry(k_inv, t, mask, key)
            out = self._features(images, geo)
            heat = torch.sigmoid(out["heatmap_logits"].float())
            reg = out["regression"].float()
            cfg = self.config
            boxes, scores, labels = decode(heat, reg, cfg, cfg.max_detections)
        return {"heatmap": heat, "regression": reg, "det_boxes": boxes, "det_scores": scores,
                "det_labels": labels}

    @staticmethod
    def _calibration_key(k_inv, t, mask):
        return tuple((a.shape, a.tobytes()) for a in (np.ascontiguousarray(k_inv), np.ascontiguousarray(t),
                                                       np.ascontiguousarray(mask)))

    @torch.inference_mode()
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs)
        key = self._calibration_key(inputs["intrinsics_inv"], inputs["ego_from_camera"], inputs["camera_mask"])
        args = [torch.from_numpy(np.ascontiguousarray(inputs[n])).to(self.device, non_blocking=True)
                for n in INPUT_NAMES]
        out = self._forward(*args, key=key)
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
        return self._forward(*args, key=key)
