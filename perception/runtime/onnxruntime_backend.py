"""ONNX Runtime backend: CPU execution provider, or CUDA where onnxruntime-gpu provides it.

On first use the model is exported (or re-exported when the sidecar's fingerprint of config,
weights and model code no longer matches: onnx_export.ensure_split_onnx / ensure_onnx).

Split graphs (split=True, the default): like the torch backend, the calibration-only work
(BEVViT.geometry: rays, top-K keys, key geometry, logit bias) runs in its own session
(<model>.geometry.onnx) only when intrinsics_inv / ego_from_camera / camera_mask change (their
bytes are compared, base.calibration_key); every frame runs <model>.features.onnx on the images
and the cached geometry tensors (named as BEVViT.geometry names them, the Inductor package's
convention). `geometry_runs` counts the geometry runs. When the pair cannot be had (no onnx
package to export it and no up-to-date pair on disk, or its export fails) the engine logs why and
runs the single full graph <model>.onnx every frame, as with split=False.

Session options (all constructor arguments, defaults in brackets; see docs/engines.md for how
each was measured):
- intra_op threads [--threads, else ORT's default]
- graph optimisation level: disable | basic | extended | all [all]
- execution mode: sequential | parallel [sequential]; inter-op threads [1] (used by parallel only)
- allow_spinning [off; ORT's own default is on]: idle intra-op threads spin for a while before
  sleeping. On a CPU shared with the camera processes spinning burns their cycles, and in the
  interleaved benchmark it slowed whatever ran next (the GEMM peak read 97 instead of ~180
  GFLOP/s); ORT alone was about as fast without it (`perception bench --ort-variants`).
- profile_dir: ONNX Runtime's per-op profiler writes its JSON there (never into the cwd).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from perception.runtime.base import GEOMETRY_INPUT_NAMES, INPUT_NAMES, OUTPUT_NAMES, Engine, calibration_key, check_inputs

log = logging.getLogger(__name__)

OPT_LEVELS = ("disable", "basic", "extended", "all")
EXECUTION_MODES = ("sequential", "parallel")


def _opt_level(ort, level: str):
    return {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]


def cuda_provider_available() -> bool:
    try:
        import onnxruntime as ort
    except ImportError:
        return False
    return "CUDAExecutionProvider" in ort.get_available_providers()


class OnnxRuntimeEngine(Engine):
    def __init__(self, model_dir: str | Path, threads: int | None = None, allow_random_init: bool = False,
                 onnx_path: str | Path | None = None, device: str | None = None, graph_optimization: str = "all",
                 execution_mode: str = "sequential", inter_op_threads: int | None = None,
                 allow_spinning: bool | None = False, profile_dir: str | Path | None = None, split: bool = True):
        import onnxruntime as ort

        from perception.runtime.onnx_export import ExportError, ensure_onnx, ensure_split_onnx, read_sidecar

        if graph_optimization not in OPT_LEVELS:
            raise ValueError(f"graph_optimization must be one of {OPT_LEVELS}, got {graph_optimization!r}")
        if execution_mode not in EXECUTION_MODES:
            raise ValueError(f"execution_mode must be one of {EXECUTION_MODES}, got {execution_mode!r}")
        self.geometry_path: Path | None = None
        if split:
            try:
                self.geometry_path, self.onnx_path = ensure_split_onnx(model_dir, onnx_path,
                                                                       allow_random_init=allow_random_init)
            except (ImportError, ExportError) as e:
                log.warning("onnxruntime: no split geometry/features graphs (%s: %s); running the full graph "
                            "every frame", e.__class__.__name__, e)
        if self.geometry_path is None:
            self.onnx_path = ensure_onnx(model_dir, onnx_path, allow_random_init=allow_random_init)
        side = read_sidecar(self.onnx_path) or {}
        self.input_shapes = {v["name"]: tuple(v["shape"]) for v in side.get("inputs", [])}

        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if execution_mode == "sequential"
                             else ort.ExecutionMode.ORT_PARALLEL)
        so.inter_op_num_threads = int(inter_op_threads or 1)
        so.graph_optimization_level = _opt_level(ort, graph_optimization)
        if allow_spinning is not None:
            so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
        if profile_dir is not None:
            Path(profile_dir).mkdir(parents=True, exist_ok=True)
            so.enable_profiling = True
            so.profile_file_prefix = str(Path(profile_dir) / "ort_profile")

        want_cuda = device == "cuda" or (device is None and cuda_provider_available())
        if device == "cuda" and not cuda_provider_available():
            raise ValueError("onnxruntime backend: device cuda requested but this onnxruntime has no "
                               "CUDAExecutionProvider (install onnxruntime-gpu)")
        providers = (["CUDAExecutionProvider", "CPUExecutionProvider"] if want_cuda else ["CPUExecutionProvider"])
        self.session = ort.InferenceSession(str(self.onnx_path), so, providers=providers)
        self.geometry_session = None
        self.geometry_runs = 0
        self._geo_key: tuple | None = None
        self._geo: dict[str, np.ndarray] | None = None
        if self.geometry_path is not None:
            self.geometry_session = ort.InferenceSession(str(self.geometry_path), so, providers=providers)
            self._geo_outputs = [o.name for o in self.geometry_session.get_outputs()]
            self._geo_inputs = [i.name for i in self.geometry_session.get_inputs()]
            # the geometry tensors the features graph reads (an unused one, e.g. key_angle once it
            # is folded into logit_bias, is not a graph input), in the features graph's input order
            self._feature_geo = [i.name for i in self.session.get_inputs() if i.name != "images"]
            missing_geo = set(self._feature_geo) - set(self._geo_outputs)
            if missing_geo:
                raise RuntimeError(f"{self.geometry_path.name} lacks outputs {sorted(missing_geo)} that "
                                   f"{self.onnx_path.name} needs")
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers and self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.name = f"onnxruntime-{self.device}"
        self.options = {"threads": threads, "graph_optimization": graph_optimization,
                        "execution_mode": execution_mode, "inter_op_threads": so.inter_op_num_threads,
                        "allow_spinning": allow_spinning, "providers": self.providers,
                        "split": self.geometry_session is not None}
        self._outputs = [o.name for o in self.session.get_outputs()]
        missing = set(OUTPUT_NAMES) - set(self._outputs)
        if missing:
            raise RuntimeError(f"{self.onnx_path} lacks outputs {sorted(missing)}")

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        check_inputs(inputs)
        shape = self.input_shapes.get("images")
        if shape and tuple(inputs["images"].shape) != shape:
            raise ValueError(f"{self.onnx_path.name} was exported for images {list(shape)}, got "
                             f"{list(inputs['images'].shape)} (export again with `perception export --batch`)")
        if self.geometry_session is None:
            outs = self.session.run(self._outputs, {n: inputs[n] for n in INPUT_NAMES})
            return dict(zip(self._outputs, outs))
        geo = self._geometry(inputs)
        feed = {"images": inputs["images"], **{n: geo[n] for n in self._feature_geo}}
        return dict(zip(self._outputs, self.session.run(self._outputs, feed)))

    def _geometry(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The geometry tensors of this calibration and camera mask: from the cache, or computed
        (geometry session) when those inputs changed since the last call."""
        session = self.geometry_session
        assert session is not None, "_geometry needs the split graphs"
        key = calibration_key(*(inputs[n] for n in GEOMETRY_INPUT_NAMES))
        if self._geo is None or key != self._geo_key:
            outs = session.run(self._geo_outputs, {n: inputs[n] for n in self._geo_inputs})
            self._geo = dict(zip(self._geo_outputs, outs))
            self._geo_key = key
            self.geometry_runs += 1
        return self._geo

    def end_profiling(self) -> str | None:
        """Stop ORT's profiler and return the JSON file it wrote (None when profiling is off). With
        split graphs that is the features session's (what runs every frame); the geometry
        session's profile is written beside it."""
        if self.geometry_session is not None:
            try:
                self.geometry_session.end_profiling()
            except Exception:
                pass
        try:
            path = self.session.end_profiling()
        except Exception:
            return None
        return path or None

    def close(self) -> None:
        self.session = None
        self.geometry_session = None
        self._geo = None
