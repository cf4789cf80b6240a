"""The model-input contract: the one place that turns camera images and calibrations into the
model's inputs. Training (dataset.render_sample), evaluation, the live node and replay
(fusion.pipeline.Preprocessor) and the benchmarks all call these functions, so what a model was
trained on is exactly what it is served (tests/test_inputs.py checks a frame set both ways).

Inputs, for a batch of B frame sets, N cameras in the rig's order, model input H x W:
  images          uint8   [B, N, H, W, 3]  BGR, resized with INTER_AREA; normalisation is in the model
  intrinsics_inv  float32 [B, N, 3, 3]     inv(K) of the *resized* image
  ego_from_camera float32 [B, N, 4, 4]     camera frame (OpenCV) -> ego frame
  camera_mask     float32 [B, N]           1 = present, 0 = missing (its pixels/calibration never matter)
Outputs: heatmap [B, C, Hb, Wb], regression [B, 10, Hb, Wb], det_boxes [B, K, 9]
(x, y, z, l, w, h, yaw, vx, vy), det_scores [B, K], det_labels [B, K] int64 into cfg.classes.
"""
from __future__ import annotations

import cv2
import numpy as np

from perception.config import CameraConfig, RigConfig

INPUT_NAMES = ("images", "intrinsics_inv", "ego_from_camera", "camera_mask")
OUTPUT_NAMES = ("heatmap", "regression", "det_boxes", "det_scores", "det_labels")


def resize_into(image: np.ndarray, dst: np.ndarray) -> None:
    """Write `image` (H0 x W0 x 3 uint8) into `dst` (H x W x 3 uint8), resized with INTER_AREA (a
    proper low-pass when shrinking) or copied when the size already matches."""
    if image.shape[:2] == dst.shape[:2]:
        dst[...] = image
    else:
        cv2.resize(image, (dst.shape[1], dst.shape[0]), dst=dst, interpolation=cv2.INTER_AREA)


def camera_inputs(cam: CameraConfig, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (intrinsics_inv [3, 3], ego_from_camera [4, 4]) float32 for `cam`'s image resized to
    width x height."""
    k_inv = np.linalg.inv(cam.resized(width, height).K).astype(np.float32)
    return k_inv, np.asarray(cam.T_ego_from_camera, dtype=np.float32)


def calibration_inputs(rig: RigConfig, cfg) -> tuple[np.ndarray, np.ndarray]:
    """-> intrinsics_inv [N, 3, 3], ego_from_camera [N, 4, 4] of every camera of `rig`."""
    if len(rig.cameras) != cfg.num_cameras:
        raise ValueError(f"rig {rig.name!r} has {len(rig.cameras)} cameras, the model expects {cfg.num_cameras}")
    pairs = [camera_inputs(c, cfg.image_width, cfg.image_height) for c in rig.cameras]
    return np.stack([k for k, _ in pairs]), np.stack([t for _, t in pairs])


def example_inputs(cfg, batch: int, seed: int = 0):
    """Random uint8 views and the default rig's calibration, as torch tensors in INPUT_NAMES order
    (exporters, benchmarks, tests)."""
    import torch

    from perception.config import load_rig

    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (batch, cfg.num_cameras, cfg.image_height, cfg.image_width, 3),
                           dtype=torch.uint8, generator=g)
    k_np, t_np = calibration_inputs(load_rig(), cfg)
    k_inv = torch.from_numpy(k_np).unsqueeze(0).repeat(batch, 1, 1, 1)
    t = torch.from_numpy(t_np).unsqueeze(0).repeat(batch, 1, 1, 1)
    return images, k_inv, t, torch.ones(batch, cfg.num_cameras)
