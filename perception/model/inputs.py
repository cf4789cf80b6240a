"""Building the model's calibration inputs from a rig (what the fusion node feeds the engine)."""
from __future__ import annotations

import numpy as np

from perception.config import RigConfig
from perception.model.config import ModelConfig


def calibration_inputs(rig: RigConfig, cfg: ModelConfig) -> tuple[np.ndarray, np.ndarray]:
    """-> intrinsics_inv [N, 3, 3], ego_from_camera [N, 4, 4], float32, for the images resized
    to (cfg.image_width, cfg.image_height): K_inv = inv(cam.resized(W, H).K)."""
    if len(rig.cameras) != cfg.num_cameras:
        raise ValueError(f"rig {rig.name!r} has {len(rig.cameras)} cameras, the model expects {cfg.num_cameras}")
    k_inv = np.stack([np.linalg.inv(c.resized(cfg.image_width, cfg.image_height).K) for c in rig.cameras])
    t = np.stack([np.asarray(c.T_ego_from_camera, dtype=np.float64) for c in rig.cameras])
    return k_inv.astype(np.float32), t.astype(np.float32)
