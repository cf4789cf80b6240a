"""Training-time augmentation of simulated frames. Deterministic given the rng passed in."""
from __future__ import annotations

import cv2
import numpy as np

from perception import geometry


def photometric(image: np.ndarray, rng: np.random.Generator, exposure=(0.6, 1.4), noise_std=(0.0, 6.0),
                blur_sigma=(0.0, 1.0)) -> np.ndarray:
    """A camera-like version of a uint8 image (H, W, C): a random exposure gain, then a gaussian
    blur (optics), then gaussian sensor noise (grey levels, per pixel and channel), in that order.
    Each strength is drawn uniformly from its (low, high) range. Returns a new uint8 array of the
    same shape; the input is not modified."""
    gain = rng.uniform(*exposure)
    sigma_blur = rng.uniform(*blur_sigma)
    sigma_noise = rng.uniform(*noise_std)
    img = image.astype(np.float32) * np.float32(gain)
    if sigma_blur > 0.05:          # below that the 3-tap kernel is an identity anyway
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma_blur), borderType=cv2.BORDER_REFLECT_101)
    if sigma_noise > 0:
        img += rng.normal(0.0, sigma_noise, size=img.shape).astype(np.float32)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).reshape(image.shape)


def jitter_extrinsics(camera, rng: np.random.Generator, max_rot_deg: float = 1.5, max_trans_m: float = 0.05):
    """The camera as actually mounted, within a mounting tolerance of its calibration: rotated about
    its own centre by up to max_rot_deg about each camera axis, and moved by up to max_trans_m
    along each ego axis (uniform). Returns a new CameraConfig; K and size are unchanged.

    Typical use: render with the jittered camera and give the model the nominal calibration (or
    the reverse), so it tolerates small calibration errors."""
    angles = np.radians(rng.uniform(-max_rot_deg, max_rot_deg, 3))
    delta_R, _ = cv2.Rodrigues(angles.reshape(3, 1))                     # camera frame rotation
    shift = rng.uniform(-max_trans_m, max_trans_m, 3)
    T = np.asarray(camera.T_ego_from_camera, dtype=np.float64)
    R = T[:3, :3] @ delta_R
    return camera.with_extrinsics(geometry.make_transform(R, T[:3, 3] + shift))
