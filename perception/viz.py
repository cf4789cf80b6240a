"""Pictures: camera views with projected 3D boxes, and a bird's-eye view of boxes."""
from __future__ import annotations

import cv2
import numpy as np

from perception import geometry

# BGR
GT_COLOR = (80, 220, 80)
DET_COLOR = (40, 40, 240)
_EDGES = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]


def draw_boxes_in_camera(image: np.ndarray, boxes, camera, color, thickness: int = 1) -> np.ndarray:
    """Draw the edges of boxes (objects with .center, .size, .yaw) projected into `camera`
    (a CameraConfig of this image's size). Edges behind the camera are skipped."""
    out = image.copy()
    for b in boxes:
        corners = geometry.box_corners(b.center, b.size, b.yaw)
        uv, depth = geometry.project_points(corners, camera.K, camera.T_ego_from_camera)
        for i, j in _EDGES:
            if depth[i] > 0.1 and depth[j] > 0.1:
                p, q = uv[i], uv[j]
                if np.all(np.abs(np.concatenate([p, q])) < 1e4):
                    cv2.line(out, tuple(np.round(p).astype(int)), tuple(np.round(q).astype(int)), color,
                             thickness, cv2.LINE_AA)
    return out


def draw_bev(gt, detections, extent: float = 32.0, size: int = 480, rig=None) -> np.ndarray:
    """Top view, ego at the centre, x (forward) up, y (left) to the left. Ground truth filled
    green, detections outlined red with a heading tick."""
    img = np.full((size, size, 3), 30, np.uint8)
    scale = size / (2 * extent)

    def to_px(xy):
        xy = np.atleast_2d(xy)
        return np.stack([size / 2 - xy[:, 1] * scale, size / 2 - xy[:, 0] * scale], axis=1)

    for r in range(10, int(extent) + 1, 10):
        cv2.circle(img, (size // 2, size // 2), int(r * scale), (60, 60, 60), 1, cv2.LINE_AA)
    if rig is not None:
        for cam in rig.cameras:
            c = to_px(cam.position[:2])[0]
            d = to_px(cam.position[:2] + 4 * cam.T_ego_from_camera[:2, 2])[0]
            cv2.line(img, tuple(c.astype(int)), tuple(d.astype(int)), (200, 200, 0), 1, cv2.LINE_AA)
    for b, color, filled in [(b, GT_COLOR, True) for b in gt] + [(b, DET_COLOR, False) for b in detections]:
        corners = geometry.box_corners(b.center, b.size, b.yaw)[:4, :2]
        poly = np.round(to_px(corners)).astype(np.int32)
        if filled:
            cv2.fillConvexPoly(img, poly, tuple(int(c * 0.6) for c in color), cv2.LINE_AA)
        cv2.polylines(img, [poly], True, color, 1, cv2.LINE_AA)
        if not filled:
            head = to_px(np.array(b.center[:2]) + 0.6 * b.size[0] * np.array([np.cos(b.yaw), np.sin(b.yaw)]))[0]
            cv2.line(img, tuple(np.round(to_px(b.center[:2])[0]).astype(int)), tuple(np.round(head).astype(int)),
                     color, 1, cv2.LINE_AA)
    ego = np.round(to_px(geometry.box_corners([1.4, 0, 0.8], [4.6, 1.9, 1.6], 0.0)[:4, :2])).astype(np.int32)
    cv2.fillConvexPoly(img, ego, (255, 255, 255))
    cv2.putText(img, "BEV: green = truth, red = detections", (8, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                (230, 230, 230), 1, cv2.LINE_AA)
    return img


def scene_picture(images, rig, gt, detections, cols: int = 3) -> np.ndarray:
    """All camera views (with projected truth and detections) in a grid, and the BEV beside it."""
    tiles = []
    for img, cam in zip(images, rig.cameras):
        cam_img = cam if img.shape[:2] == (cam.height, cam.width) else cam.resized(img.shape[1], img.shape[0])
        t = draw_boxes_in_camera(img, gt, cam_img, GT_COLOR)
        t = draw_boxes_in_camera(t, detections, cam_img, DET_COLOR)
        cv2.putText(t, cam.name, (5, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    h, w = tiles[0].shape[:2]
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % cols)
    grid = np.concatenate([np.concatenate(tiles[r:r + cols], axis=1) for r in range(0, len(tiles), cols)], axis=0)
    bev = draw_bev(gt, detections, size=grid.shape[0], rig=rig)
    return np.concatenate([grid, bev], axis=1)
