"""A small polygon rasteriser for the simulated world (OpenCV fills, numpy projection).

Model: ideal pinhole camera with the rig's K and T_ego_from_camera. Lens distortion coefficients
are ignored (the default rig has none); a rig with distortion is rendered as if undistorted.

Per camera:
1. sky: a cached gradient from the horizon haze to the sky colour (depends only on calibration and
   lighting);
2. ground: flat polygons (base rings, roads, sidewalks, markings, patches) in list order;
3. cast shadows: filled into a mask, then the ground under it is darkened;
4. solids: painter's algorithm. Solids are sorted far to near by the distance from the camera to
   their bounding box; buildings ("large" solids) are ordered against every other solid with the
   face plane that separates them, which a distance key gets wrong along a facade. Inside a solid,
   parts separated by a plane of the solid frame are ordered by the side the camera is on; inside
   a convex part, back-face culling is enough.

Polygons are clipped in 3D against the near plane (z = NEAR_M) and a guard band around the image
(so fixed-point coordinates cannot overflow) with Sutherland-Hodgman, then filled with
cv2.fillConvexPoly at 1/16 pixel precision. Pixel centres are at integer coordinates (OpenCV).
"""
from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np

from perception import geometry
from perception.sim.scene import FACES, Scene

NEAR_M = 0.05          # near clipping plane, metres along the optical axis
GUARD_PX = 1024        # polygons are clipped this far outside the image
_SHIFT = 4             # fractional bits of the vertex coordinates given to OpenCV
_ONE = 1 << _SHIFT


class _View:
    """A camera's transform, intrinsics and clip planes, computed once per render."""

    def __init__(self, camera):
        T = np.asarray(camera.T_ego_from_camera, dtype=np.float64)
        Tc = geometry.invert_transform(T)
        self.R, self.t = Tc[:3, :3], Tc[:3, 3]           # camera_from_ego
        self.C = T[:3, 3]                                 # camera centre, ego frame
        self.K = np.asarray(camera.K, dtype=np.float64)
        self.W, self.H = int(camera.width), int(camera.height)
        (fx, s, cx), (_, fy, cy) = self.K[0], self.K[1]
        G = GUARD_PX
        # Half-spaces a.p + d >= 0 in camera coordinates. With z > 0, u >= -G is
        # fx x + s y + cx z >= -G z, and so on; all side planes pass through the camera centre.
        self.planes = np.array([
            [0.0, 0.0, 1.0, -NEAR_M],
            [fx, s, cx + G, 0.0],
            [-fx, -s, self.W - 1 + G - cx, 0.0],
            [0.0, fy, cy + G, 0.0],
            [0.0, -fy, self.H - 1 + G - cy, 0.0],
        ])

    def to_camera(self, P: np.ndarray) -> np.ndarray:
        return P @ self.R.T + self.t

    def plane_distances(self, Pc: np.ndarray) -> np.ndarray:
        """(..., 5) signed distances of camera-frame points (..., 3) to the clip planes."""
        return Pc @ self.planes[:, :3].T + self.planes[:, 3]

    def fixed_point(self, Pc: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) as int32 with _SHIFT fractional bits. Only meaningful for
        points inside all clip planes; others get clamped garbage that callers never use."""
        z = Pc[..., 2:3]
        uv = (Pc @ self.K[:2].T) / np.where(z > NEAR_M * 0.5, z, 1.0)
        return np.rint(np.clip(uv, -1e6, 1e6) * _ONE).astype(np.int32)


def render(scene: Scene, camera) -> np.ndarray:
    """Render `scene` into `camera` (a perception.config.CameraConfig).

    Returns a C-contiguous (camera.height, camera.width, 3) uint8 BGR image. Pinhole model:
    `camera.distortion` is ignored.
    """
    view = _View(camera)
    img = _sky(view, camera, scene.lighting).copy()
    haze = scene.lighting.haze_color
    hd = float(scene.lighting.haze_distance_m)
    _draw_ground(img, view, scene, haze, hd)
    _draw_shadows(img, view, scene)
    _draw_solids(img, view, scene, haze, hd)
    return img


def render_rig(scene: Scene, rig) -> list[np.ndarray]:
    """Render `scene` into every camera of a RigConfig, in rig order."""
    return [render(scene, cam) for cam in rig.cameras]


# ------------------------------------------------------------------------------------------------
# sky

_SKY_CACHE: OrderedDict = OrderedDict()
_SKY_CACHE_SIZE = 64


def _sky(view: _View, camera, lighting) -> np.ndarray:
    """Sky gradient for this camera and lighting (cached: it is a pure function of both)."""
    key = (camera.calibration_id, view.W, view.H, lighting.key)
    img = _SKY_CACHE.get(key)
    if img is None:
        u, v = np.meshgrid(np.arange(view.W, dtype=np.float64), np.arange(view.H, dtype=np.float64))
        rays = geometry.pixel_rays(np.stack([u.ravel(), v.ravel()], 1), view.K, _ego_from(view))
        elev = np.arcsin(np.clip(rays[:, 2], -1, 1)).reshape(view.H, view.W)
        w = np.clip(elev / np.radians(35.0), 0.0, 1.0) ** 0.6    # haze at the horizon, sky above
        col = lighting.haze_color * (1 - w[..., None]) + lighting.sky_color * w[..., None]
        img = np.ascontiguousarray(np.clip(np.rint(col), 0, 255).astype(np.uint8))
        img.setflags(write=False)
        _SKY_CACHE[key] = img
        if len(_SKY_CACHE) > _SKY_CACHE_SIZE:
            _SKY_CACHE.popitem(last=False)
    return img


def _ego_from(view: _View) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = view.R.T
    T[:3, 3] = view.C
    return T


# ------------------------------------------------------------------------------------------------
# polygons

def _clip(P: np.ndarray, planes: np.ndarray):
    """Sutherland-Hodgman clip of a convex polygon (n, 3) against half-spaces (m, 4); returns the
    clipped polygon (k, 3) or None when nothing is left."""
    for pl in planes:
        d = P @ pl[:3] + pl[3]
        inside = d >= 0
        if inside.all():
            continue
        if not inside.any():
            return None
        out = []
        n = len(P)
        for i in range(n):
            j = (i + 1) % n
            if inside[i]:
                out.append(P[i])
            if inside[i] != inside[j]:
                out.append(P[i] + (P[j] - P[i]) * (d[i] / (d[i] - d[j])))
        P = np.array(out)
        if len(P) < 3:
            return None
    return P


def _polygon_classes(D: np.ndarray, starts: np.ndarray):
    """For polygons packed as vertices with plane distances D (G, 5) and starts (n + 1,):
    (culled, inside) booleans (n,): entirely outside one plane / entirely inside all planes."""
    if len(starts) <= 1:
        return np.zeros(0, bool), np.zeros(0, bool)
    dmax = np.maximum.reduceat(D, starts[:-1], axis=0)
    dmin = np.minimum.reduceat(D, starts[:-1], axis=0)
    return (dmax < 0).any(axis=1), (dmin >= 0).all(axis=1)


def _fill_polygons(img, view, Pc, starts, colors, line_type) -> None:
    """Fill packed convex polygons (camera frame) in order with per-polygon colours."""
    if len(starts) <= 1:
        return
    culled, inside = _polygon_classes(view.plane_distances(Pc), starts)
    fixed = view.fixed_point(Pc)
    fill = cv2.fillConvexPoly
    for k in np.flatnonzero(~culled).tolist():
        a, b = starts[k], starts[k + 1]
        if inside[k]:
            pts = fixed[a:b]
        else:
            poly = _clip(Pc[a:b], view.planes)
            if poly is None:
                continue
            pts = view.fixed_point(poly)
        fill(img, pts, colors[k], line_type, _SHIFT)


def _hazed(colors: np.ndarray, dist: np.ndarray, haze: np.ndarray, hd: float) -> np.ndarray:
    """Blend colours (..., 3) towards the haze colour with distance (...,)."""
    f = np.exp(-np.asarray(dist) / hd)[..., None]
    return np.rint(colors * f + haze * (1.0 - f))


def _draw_ground(img, view, scene, haze, hd) -> None:
    if len(scene.ground_starts) <= 1:
        return
    Pc = view.to_camera(scene.ground_vertices)
    dist = np.linalg.norm(scene.ground_centroids - view.C, axis=1)
    colors = _hazed(scene.ground_colors, dist, haze, hd).astype(int).tolist()
    # No anti-aliasing on the ground: abutting road segments would leave seams.
    _fill_polygons(img, view, Pc, scene.ground_starts, colors, cv2.LINE_8)


def _draw_shadows(img, view, scene) -> None:
    if len(scene.shadow_starts) <= 1:
        return
    mask = np.zeros(img.shape[:2], np.uint8)
    Pc = view.to_camera(scene.shadow_vertices)
    n = len(scene.shadow_starts) - 1
    _fill_polygons(mask, view, Pc, scene.shadow_starts, [255] * n, cv2.LINE_8)
    dark = cv2.convertScaleAbs(img, alpha=scene.lighting.shadow_factor)
    cv2.copyTo(dark, mask, img)


# ------------------------------------------------------------------------------------------------
# solids

def _camera_in_solid_frames(scene: Scene, C: np.ndarray) -> np.ndarray:
    """(S, 3) camera centre in every solid's own frame."""
    rel = C - scene.solid_origin
    c, s = np.cos(scene.solid_yaw), np.sin(scene.solid_yaw)
    return np.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1], rel[:, 2]], axis=1)


def solid_draw_rank(scene: Scene, C: np.ndarray, cam_local: np.ndarray | None = None) -> np.ndarray:
    """(S,) painter's rank of every solid for a camera at ego point C (0 = drawn first)."""
    S = scene.solid_count
    if cam_local is None:
        cam_local = _camera_in_solid_frames(scene, C)
    nearest = np.clip(cam_local, scene.solid_lo, scene.solid_hi)
    dist = np.linalg.norm(cam_local - nearest, axis=1)
    large = scene.solid_large
    big = np.flatnonzero(large)
    small = np.flatnonzero(~large)
    big = big[np.argsort(-dist[big], kind="stable")]
    small = small[np.argsort(-dist[small], kind="stable")]
    key = np.empty(S, dtype=np.int64)
    key[big] = 2 * np.arange(len(big)) + 1
    if len(big) and len(small):
        # For each (building b, solid o): take the side plane of b that o's origin lies farthest
        # beyond. If the camera is beyond it too, b cannot hide o: draw b first. Otherwise b is
        # between them wherever they overlap on screen: draw o first.
        rel = scene.solid_origin[small][None, :, :2] - scene.solid_origin[big][:, None, :2]   # (B, O, 2)
        c, s = np.cos(scene.solid_yaw[big])[:, None], np.sin(scene.solid_yaw[big])[:, None]
        lx, ly = c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1]
        lo, hi = scene.solid_lo[big], scene.solid_hi[big]
        beyond = np.stack([lx - hi[:, None, 0], lo[:, None, 0] - lx, ly - hi[:, None, 1], lo[:, None, 1] - ly], -1)
        side = np.argmax(beyond, axis=-1)                                                # (B, O)
        cl = cam_local[big]
        cam_beyond = np.stack([cl[:, 0] - hi[:, 0], lo[:, 0] - cl[:, 0], cl[:, 1] - hi[:, 1], lo[:, 1] - cl[:, 1]], -1)
        b_first = np.take_along_axis(cam_beyond, side, axis=1) > 0                        # (B, O)
        last = np.where(b_first.any(axis=0), len(big) - 1 - np.argmax(b_first[::-1], axis=0), -1)
        # A nearer solid never goes before a farther one: keep positions non-decreasing.
        pos = np.maximum.accumulate(last + 1)
        key[small] = 2 * pos
    elif len(small):
        key[small] = 0
    within = np.empty(S, dtype=np.int64)
    within[big] = np.arange(len(big))
    within[small] = np.arange(len(small))
    order = np.lexsort((within, key))
    rank = np.empty(S, dtype=np.int64)
    rank[order] = np.arange(S)
    return rank


def part_draw_order(scene: Scene, C: np.ndarray) -> np.ndarray:
    """Indices of all parts in painter's order for a camera at ego point C."""
    P = len(scene.part_vertices)
    cam_local = _camera_in_solid_frames(scene, C)
    rank = solid_draw_rank(scene, C, cam_local)
    before = np.zeros(P, dtype=np.int64)
    if len(scene.pair_parts):
        lo_part, hi_part = scene.pair_parts[:, 0], scene.pair_parts[:, 1]
        cam_coord = cam_local[scene.part_solid[lo_part], scene.pair_axis]
        # The part on the camera's side of the separating plane is nearer: the other goes first.
        first = np.where(cam_coord > scene.pair_plane, lo_part, hi_part)
        before = np.bincount(first, minlength=P)
    return np.lexsort((np.arange(P), -before, rank[scene.part_solid]))


def _draw_solids(img, view, scene, haze, hd) -> None:
    V = scene.part_vertices                                          # (P, 8, 3) ego
    if not len(V):
        return
    Pc = view.to_camera(V)                                           # (P, 8, 3) camera
    Df = view.plane_distances(Pc)[:, FACES]                          # (P, 6, 4, 5)
    culled = (Df.max(axis=2) < 0).any(axis=-1)                       # (P, 6) off-screen faces
    inside = (Df.min(axis=2) >= 0).all(axis=-1)                      # (P, 6) no clipping needed
    v0 = V[:, FACES[:, 0]]                                           # (P, 6, 3)
    facing = np.einsum("pfk,pfk->pf", scene.face_normals, v0 - view.C) < 0   # back-face culling
    draw = facing & ~culled
    dist = np.linalg.norm(V.mean(axis=1) - view.C, axis=1)            # (P,)
    colors = _hazed(scene.part_colors, dist[:, None], haze, hd).astype(np.int64)   # (P, 6, 3)
    face_pts = np.ascontiguousarray(view.fixed_point(Pc)[:, FACES])  # (P, 6, 4, 2)

    order = part_draw_order(scene, view.C)
    rows, faces = np.nonzero(draw[order])
    parts = order[rows]
    col_list = colors[parts, faces].tolist()
    fill = cv2.fillConvexPoly
    for i, (p, f) in enumerate(zip(parts.tolist(), faces.tolist())):
        if inside[p, f]:
            pts = face_pts[p, f]
        else:
            poly = _clip(Pc[p, FACES[f]], view.planes)
            if poly is None:
                continue
            pts = view.fixed_point(poly)
        fill(img, pts, col_list[i], cv2.LINE_AA, _SHIFT)
