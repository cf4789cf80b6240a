"""Pictures of the simulated world: a mosaic of a rig's camera views beside a bird's-eye view of the
ground truth, and 3D box wireframes drawn into a camera view (`perception render`)."""
from __future__ import annotations

import cv2
import numpy as np

from perception.sim.scene import CLASSES
from perception.sim.world import EGO_FOOTPRINT

# BGR per class for overlays and the bird's-eye view.
CLASS_COLORS = {0: (255, 160, 40), 1: (60, 60, 255), 2: (60, 230, 60), 3: (0, 230, 255), 4: (0, 140, 255)}


def draw_box(img: np.ndarray, camera, box, color=None) -> None:
    """Wireframe of a 3D box in a camera view (edges clipped at the near plane)."""
    from perception import geometry

    color = color or CLASS_COLORS.get(box.cls, (255, 255, 255))
    T = geometry.invert_transform(camera.T_ego_from_camera)
    P = geometry.transform_points(T, box.corners())                       # (8, 3) camera frame
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    near = 0.1
    for i, j in edges:
        a, b = P[i], P[j]
        if a[2] < near and b[2] < near:
            continue
        if a[2] < near:
            a = a + (b - a) * (near - a[2]) / (b[2] - a[2])
        elif b[2] < near:
            b = b + (a - b) * (near - b[2]) / (a[2] - b[2])
        uv = np.stack([a, b]) @ np.asarray(camera.K).T
        uv = uv[:, :2] / uv[:, 2:3]
        if np.abs(uv).max() > 1e5:
            continue
        p0, p1 = (np.rint(uv * 16).astype(np.int64)).tolist()
        cv2.line(img, tuple(p0), tuple(p1), color, 1, cv2.LINE_AA, 4)
    # The front face gets a cross, so the heading shows.
    for i, j in ((0, 7), (3, 4)):
        if P[i][2] > near and P[j][2] > near:
            uv = np.stack([P[i], P[j]]) @ np.asarray(camera.K).T
            uv = uv[:, :2] / uv[:, 2:3]
            if np.abs(uv).max() < 1e5:
                p0, p1 = (np.rint(uv * 16).astype(np.int64)).tolist()
                cv2.line(img, tuple(p0), tuple(p1), color, 1, cv2.LINE_AA, 4)


def _label(img, text, org, scale=0.4):
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def _grid_order(rig) -> list[int]:
    """Camera indices for a 2x3 grid laid out like the car (front row left to right, back row left
    to right as seen looking backwards over the left shoulder: back_left, back, back_right)."""
    n = len(rig.cameras)
    yaws = [np.degrees(np.arctan2(c.T_ego_from_camera[1, 2], c.T_ego_from_camera[0, 2])) for c in rig.cameras]
    front = sorted([i for i in range(n) if abs(yaws[i]) <= 90], key=lambda i: -yaws[i])
    back = sorted([i for i in range(n) if abs(yaws[i]) > 90], key=lambda i: yaws[i] % 360)
    if n == 6 and len(front) == 3:
        return front + back
    return list(range(n))


def make_mosaic(rig, images: list[np.ndarray], scene) -> np.ndarray:
    """Camera views in rows of 3 with their names, and a bird's-eye view on the right."""
    order = _grid_order(rig)
    th, tw = images[0].shape[:2]
    cols = 3
    rows = (len(order) + cols - 1) // cols
    grid = np.zeros((rows * th, cols * tw, 3), np.uint8)
    for k, i in enumerate(order):
        tile = images[i] if images[i].shape[:2] == (th, tw) else cv2.resize(images[i], (tw, th))
        r, c = divmod(k, cols)
        grid[r * th:(r + 1) * th, c * tw:(c + 1) * tw] = tile
        _label(grid, rig.cameras[i].name, (c * tw + 4, r * th + 14))
    bev = bird_eye_view(scene, rig, size=max(grid.shape[0], 240))
    if bev.shape[0] != grid.shape[0]:
        pad = np.zeros((max(bev.shape[0], grid.shape[0]) - grid.shape[0], grid.shape[1], 3), np.uint8)
        grid = np.concatenate([grid, pad])
    return np.concatenate([grid, bev], axis=1)


def bird_eye_view(scene, rig, size: int = 360, extent_m: float = 40.0) -> np.ndarray:
    """Top view of the scene: ground (dimmed), distractor footprints (grey), ground-truth boxes by
    class with heading and velocity; ego at the centre, x forward up, y left to the left."""
    img = np.full((size, size, 3), 30, np.uint8)
    s = size / (2 * extent_m)
    c = size / 2

    def px(xy):   # ego (x, y) -> pixel (col, row), fixed point with 4 fractional bits
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return np.rint(np.stack([c - xy[:, 1] * s, c - xy[:, 0] * s], 1) * 16).astype(np.int32)

    gs, gv = scene.ground_starts, scene.ground_vertices
    for k in range(len(gs) - 1):
        poly = gv[gs[k]:gs[k + 1], :2]
        col = (scene.ground_colors[k] * 0.45).astype(int).tolist()
        cv2.fillConvexPoly(img, px(np.clip(poly, -2000, 2000)), col, cv2.LINE_8, 4)
    for r in (10, 20, 30, 40):
        cv2.circle(img, (int(c), int(c)), int(r * s), (70, 70, 70), 1, cv2.LINE_AA)
    half = 32 * s
    cv2.rectangle(img, (int(c - half), int(c - half)), (int(c + half), int(c + half)), (90, 90, 90), 1)
    # Camera viewing directions.
    for cam in rig.cameras:
        T = cam.T_ego_from_camera
        hf = np.arctan((cam.width / 2) / cam.K[0, 0])
        yaw = np.arctan2(T[1, 2], T[0, 2])
        for a in (yaw - hf, yaw + hf):
            tip = T[:2, 3] + 12 * np.array([np.cos(a), np.sin(a)])
            cv2.line(img, tuple(px(T[:2, 3])[0]), tuple(px(tip)[0]), (110, 110, 110), 1, cv2.LINE_AA, 4)
    # Distractors (not targets).
    for i in np.flatnonzero(scene.solid_box < 0):
        lo, hi, o, yaw = scene.solid_lo[i], scene.solid_hi[i], scene.solid_origin[i], scene.solid_yaw[i]
        if np.abs(o[:2]).max() > extent_m + 30:
            continue
        foot = np.array([[hi[0], hi[1]], [lo[0], hi[1]], [lo[0], lo[1]], [hi[0], lo[1]]])
        R = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        cv2.polylines(img, [px(foot @ R.T + o[:2])], True, (120, 120, 120), 1, cv2.LINE_AA, 4)
    x0, x1, y0, y1 = EGO_FOOTPRINT
    cv2.fillConvexPoly(img, px([[x1, y1], [x0, y1], [x0, y0], [x1, y0]]), (200, 200, 200), cv2.LINE_AA, 4)
    for b in scene.boxes:
        col = CLASS_COLORS.get(b.cls, (255, 255, 255))
        corners = b.corners()[:4, :2]
        cv2.polylines(img, [px(corners)], True, col, 1, cv2.LINE_AA, 4)
        front = (corners[0] + corners[3]) / 2
        cv2.line(img, tuple(px(b.center[:2])[0]), tuple(px(front)[0]), col, 1, cv2.LINE_AA, 4)
        if np.linalg.norm(b.velocity) > 0.1:
            tip = b.center[:2] + b.velocity * 1.0          # where it will be in one second
            cv2.arrowedLine(img, tuple(px(b.center[:2])[0]), tuple(px(tip)[0]), (255, 255, 255), 1,
                            cv2.LINE_AA, 4, 0.3)
    y = 14
    for k, name in enumerate(CLASSES):
        n = sum(b.cls == k for b in scene.boxes)
        cv2.putText(img, f"{name} {n}", (4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, CLASS_COLORS[k], 1, cv2.LINE_AA)
        y += 13
    _label(img, "BEV 80 m, x up", (4, size - 6), 0.38)
    return img

