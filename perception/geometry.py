"""Rig math: rigid transforms, projection into cameras and viewing rays.

Conventions: ego frame x forward, y left, z up (metres); camera frame as
OpenCV (x right, y down, z forward); `T_ego_from_camera` maps camera points to ego points;
K is in pixels of the image as sent, with pixel centres at integer coordinates (OpenCV).
"""
from __future__ import annotations

import numpy as np

# Columns are the camera axes expressed in the ego frame for a camera looking along +x:
# camera x (right) = ego -y, camera y (down) = ego -z, camera z (forward) = ego +x.
_EGO_FROM_OPENCV = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def camera_rotation(yaw: float, pitch: float = 0.0, roll: float = 0.0) -> np.ndarray:
    """R_ego_from_camera for a camera mounted with the given yaw (left positive), pitch (down
    positive) and roll (about its optical axis), all in radians."""
    return rot_z(yaw) @ rot_y(pitch) @ rot_x(roll) @ _EGO_FROM_OPENCV


def make_transform(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform (R^T, -R^T t), exact and cheaper than np.linalg.inv."""
    R, t = T[:3, :3], T[:3, 3]
    Ti = np.eye(4)
    Ti[:3, :3] = R.T
    Ti[:3, 3] = -R.T @ t
    return Ti


def intrinsics_from_fov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """Pinhole K with square pixels, principal point at the image centre."""
    fx = (width / 2.0) / np.tan(np.radians(hfov_deg) / 2.0)
    return np.array([[fx, 0.0, (width - 1) / 2.0], [0.0, fx, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """K of the same camera after resizing the image by (sx, sy), OpenCV's pixel-centre
    convention: u' = (u + 0.5) * sx - 0.5."""
    S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return S @ K


def transform_points(T: np.ndarray, P: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to points (..., 3)."""
    return P @ T[:3, :3].T + T[:3, 3]


def project_points(P_ego: np.ndarray, K: np.ndarray, T_ego_from_camera: np.ndarray):
    """Project ego-frame points (N, 3) into a camera. Returns pixel coordinates (N, 2) and depth
    along the optical axis (N,); points with depth <= 0 are behind the camera (uv is then
    meaningless and callers must mask them)."""
    P_cam = transform_points(invert_transform(T_ego_from_camera), np.asarray(P_ego, dtype=np.float64))
    depth = P_cam[:, 2]
    safe = np.where(np.abs(depth) < 1e-9, 1e-9, depth)
    uvw = P_cam @ K.T
    uv = uvw[:, :2] / safe[:, None]
    return uv, depth


def unproject_pixels(uv: np.ndarray, depth: np.ndarray, K: np.ndarray, T_ego_from_camera: np.ndarray) -> np.ndarray:
    """Inverse of project_points: pixels (N, 2) at the given optical-axis depths (N,) to ego points."""
    uv1 = np.concatenate([np.asarray(uv, dtype=np.float64), np.ones((len(uv), 1))], axis=1)
    P_cam = (uv1 @ np.linalg.inv(K).T) * np.asarray(depth, dtype=np.float64)[:, None]
    return transform_points(T_ego_from_camera, P_cam)


def pixel_rays(uv: np.ndarray, K: np.ndarray, T_ego_from_camera: np.ndarray) -> np.ndarray:
    """Unit viewing-ray directions (N, 3) in the ego frame through pixels (N, 2)."""
    uv1 = np.concatenate([np.asarray(uv, dtype=np.float64), np.ones((len(uv), 1))], axis=1)
    d = uv1 @ np.linalg.inv(K).T @ T_ego_from_camera[:3, :3].T
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def box_corners(center, size, yaw: float) -> np.ndarray:
    """The 8 corners (8, 3) of a yawed box. Order: bottom face (z-) counter-clockwise seen from
    above starting at front-left, then the top face in the same order."""
    l, w, h = size
    x = np.array([1, -1, -1, 1]) * (l / 2.0)
    y = np.array([1, 1, -1, -1]) * (w / 2.0)
    c, s = np.cos(yaw), np.sin(yaw)
    xr, yr = c * x - s * y, s * x + c * y
    bottom = np.stack([xr, yr, np.full(4, -h / 2.0)], axis=1)
    top = bottom.copy()
    top[:, 2] = h / 2.0
    return np.concatenate([bottom, top]) + np.asarray(center, dtype=np.float64)


def wrap_angle(a):
    """Wrap radians to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi
