"""The engine interface: one model, several ways to run it (PyTorch, ONNX Runtime, TensorRT).

Every backend takes the same named numpy inputs and returns the same named numpy outputs, so
the fusion node, the benchmark and the parity tests never care which one runs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from perception.inputs import INPUT_NAMES, OUTPUT_NAMES  # noqa: E402,F401  (the contract)


class Engine(ABC):
    """A loaded, ready-to-run model."""

    #: what runs, e.g. "torch-cpu", "onnxruntime-cpu", "tensorrt-fp16"; published in node status
    name: str = "engine"

    @abstractmethod
    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch. Inputs and outputs are keyed by INPUT_NAMES / OUTPUT_NAMES."""

    def close(self) -> None:
        """Release resources (GPU memory, sessions). Safe to call twice."""


#: the inputs the calibration-only geometry (BEVViT.geometry) depends on, in its argument order
GEOMETRY_INPUT_NAMES = ("intrinsics_inv", "ego_from_camera", "camera_mask")


def calibration_key(k_inv: np.ndarray, t: np.ndarray, mask: np.ndarray) -> tuple:
    """A hashable key of the calibration and camera mask (shapes and exact bytes): backends that
    cache the geometry recompute it only when this key changes."""
    return tuple((a.shape, a.tobytes()) for a in (np.ascontiguousarray(k_inv), np.ascontiguousarray(t),
                                                   np.ascontiguousarray(mask)))


def check_inputs(inputs: dict[str, np.ndarray]) -> None:
    """Clear errors for wrong names, dtypes or inconsistent shapes before any backend sees them."""
    missing = [n for n in INPUT_NAMES if n not in inputs]
    if missing:
        raise ValueError(f"engine inputs missing: {missing}")
    images = inputs["images"]
    if images.dtype != np.uint8 or images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B, N, H, W, 3], got {images.dtype} {images.shape}")
    B, N = images.shape[:2]
    expect = {"intrinsics_inv": (B, N, 3, 3), "ego_from_camera": (B, N, 4, 4), "camera_mask": (B, N)}
    for name, shape in expect.items():
        a = inputs[name]
        if a.shape != shape or a.dtype != np.float32:
            raise ValueError(f"{name} must be float32 {shape}, got {a.dtype} {a.shape}")
