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

import threading
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
        self.proj = (float(fx), float(s), float(cx), float(fy), float(cy))
        # Half-spaces a.p + d >= 0 in camera coordinates. With z > 0, u >= -G is
        # fx x + s y + cx z >= -G z, and so on; all side planes pass through the camera centre.
        # Columns 0-4: the near plane and the four sides of the image widened by the guard band
        # (what polygons are clipped to); columns 5-8: the sides of the image plus one pixel
        # (a polygon entirely beyond one of them is not drawn at all).
        planes = [[0.0, 0.0, 1.0, -NEAR_M]]
        for G in (GUARD_PX, 1.0):
            planes += [[fx, s, cx + G, 0.0], [-fx, -s, self.W - 1 + G - cx, 0.0],
                       [0.0, fy, cy + G, 0.0], [0.0, -fy, self.H - 1 + G - cy, 0.0]]
        self.all_planes = np.array(planes)                 # (9, 4)
        self.planes = self.all_planes[:5]
        self.plane_list = [tuple(map(float, p)) for p in self.planes]

    def to_camera(self, P: np.ndarray) -> np.ndarray:
        return P @ self.R.T + self.t

    def plane_distances(self, Pc: np.ndarray) -> np.ndarray:
        """(..., 9) signed distances of camera-frame points (..., 3) to all planes (see above)."""
        return Pc @ self.all_planes[:, :3].T + self.all_planes[:, 3]

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
_SKY_LOCK = threading.Lock()


def _sky(view: _View, camera, lighting) -> np.ndarray:
    """Sky gradient for this camera and lighting (cached: it is a pure function of both)."""
    key = (camera.calibration_id, view.W, view.H, lighting.key)
    with _SKY_LOCK:
        img = _SKY_CACHE.get(key)
    if img is None:
        u, v = np.meshgrid(np.arange(view.W, dtype=np.float64), np.arange(view.H, dtype=np.float64))
        rays = geometry.pixel_rays(np.stack([u.ravel(), v.ravel()], 1), view.K, _ego_from(view))
        elev = np.arcsin(np.clip(rays[:, 2], -1, 1)).reshape(view.H, view.W)
        w = np.clip(elev / np.radians(35.0), 0.0, 1.0) ** 0.6    # haze at the horizon, sky above
        col = lighting.haze_color * (1 - w[..., None]) + lighting.sky_color * w[..., None]
        img = np.ascontiguousarray(np.clip(np.rint(col), 0, 255).astype(np.uint8))
        img.setflags(write=False)
        with _SKY_LOCK:
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

def _clip_project(P: np.ndarray, view: _View):
    """Sutherland-Hodgman clip of a small convex polygon (n, 3), camera frame, against the near
    plane and the guard band, then projection to fixed-point pixels. Returns (k, 2) int32 or None
    when nothing is left. Plain Python: for a handful of vertices it beats numpy's call overhead."""
    poly = P.tolist()
    for a, b, c, d in view.plane_list:
        dist = [a * x + b * y + c * z + d for x, y, z in poly]
        if min(dist) >= 0:
            continue
        if max(dist) < 0:
            return None
        out = []
        n = len(poly)
        for i in range(n):
            j = i + 1 if i + 1 < n else 0
            di, dj = dist[i], dist[j]
            if di >= 0:
                out.append(poly[i])
            if (di >= 0) != (dj >= 0):
                w = di / (di - dj)
                pi, pj = poly[i], poly[j]
                out.append([pi[0] + (pj[0] - pi[0]) * w, pi[1] + (pj[1] - pi[1]) * w, pi[2] + (pj[2] - pi[2]) * w])
        poly = out
        if len(poly) < 3:
            return None
    fx, s, cx, fy, cy = view.proj
    return np.array([[round((fx * x + s * y) / z * _ONE + cx * _ONE), round(fy * y / z * _ONE + cy * _ONE)]
                     for x, y, z in poly], dtype=np.int32)


def _polygon_classes(D: np.ndarray, starts: np.ndarray):
    """For polygons packed as vertices with plane distances D (G, 9) and starts (n + 1,):
    (culled, inside) booleans (n,): entirely behind the near plane or beside the image / entirely
    inside the clip planes (no clipping needed)."""
    if len(starts) <= 1:
        return np.zeros(0, bool), np.zeros(0, bool)
    dmax = np.maximum.reduceat(D, starts[:-1], axis=0)
    dmin = np.minimum.reduceat(D[:, :5], starts[:-1], axis=0)
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
            pts = _clip_project(Pc[a:b], view)
            if pts is None:
                continue
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


def _a_first(scene: Scene, a: np.ndarray, b: np.ndarray, cam_local: np.ndarray) -> np.ndarray:
    """For pairs of solids (a[k], b[k]) where a is a building (a box): must a be drawn before b?

    Take the side plane of a's box that b's origin lies farthest beyond. If the camera is beyond
    it too, a cannot hide b: a goes first. Otherwise a lies between them wherever they overlap on
    screen: b goes first. (A distance key gets this wrong along a facade: a person on the
    sidewalk can be farther from the camera than the nearest corner of the building behind.)"""
    rel = scene.solid_origin[b, :2] - scene.solid_origin[a, :2]
    c, s = np.cos(scene.solid_yaw[a]), np.sin(scene.solid_yaw[a])
    lx, ly = c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]
    lo, hi = scene.solid_lo[a], scene.solid_hi[a]
    beyond = np.stack([lx - hi[:, 0], lo[:, 0] - lx, ly - hi[:, 1], lo[:, 1] - ly], axis=1)
    cl = cam_local[a]
    cam_beyond = np.stack([cl[:, 0] - hi[:, 0], lo[:, 0] - cl[:, 0], cl[:, 1] - hi[:, 1], lo[:, 1] - cl[:, 1]], 1)
    side = np.argmax(beyond, axis=1)
    return cam_beyond[np.arange(len(a)), side] > 0


def solid_draw_rank(scene: Scene, C: np.ndarray, solids: np.ndarray, boxes: np.ndarray,
                    cam_local: np.ndarray) -> np.ndarray:
    """Painter's order of the given solids (k,) with screen bounding boxes (k, 4) [u0, v0, u1, v1]:
    returns their rank (k,), 0 = drawn first.

    Only solids whose screen boxes overlap constrain each other: buildings by their face planes
    (`_a_first`), everything else far before near by the distance from the camera to the solid's
    bounding box. A topological sort (far first among the ready ones) orders them; a cycle, which
    these rules make rare, is broken at its farthest solid.
    """
    k = len(solids)
    nearest = np.clip(cam_local[solids], scene.solid_lo[solids], scene.solid_hi[solids])
    dist = np.linalg.norm(cam_local[solids] - nearest, axis=1)
    if k <= 1:
        return np.zeros(k, dtype=np.int64)
    overlap = ((boxes[:, None, 0] < boxes[None, :, 2]) & (boxes[None, :, 0] < boxes[:, None, 2]) &
               (boxes[:, None, 1] < boxes[None, :, 3]) & (boxes[None, :, 1] < boxes[:, None, 3]))
    i, j = np.nonzero(np.triu(overlap, 1))
    large = scene.solid_large[solids]
    i_first = dist[i] >= dist[j]
    with_large = large[i] | large[j]
    if with_large.any():
        a = np.where(large[i], i, j)[with_large]          # the building of the pair
        b = np.where(large[i], j, i)[with_large]
        a_first = _a_first(scene, solids[a], solids[b], cam_local)
        i_first[with_large] = a_first == (a == i[with_large])
    first, second = np.where(i_first, i, j), np.where(i_first, j, i)
    return _topological_rank(k, first, second, dist)


def _topological_rank(k: int, first: np.ndarray, second: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Kahn's algorithm over edges first -> second; among ready nodes the farthest goes first."""
    import heapq

    indeg = np.bincount(second, minlength=k).tolist()
    order = np.argsort(first, kind="stable")
    succ_sorted = second[order].tolist()
    bounds = np.searchsorted(first[order], np.arange(k + 1)).tolist()
    d = dist.tolist()
    heap = [(-d[n], n) for n in range(k) if indeg[n] == 0]
    heapq.heapify(heap)
    rank = [-1] * k
    r = 0
    while r < k:
        if not heap:   # a cycle: release the farthest node still waiting
            n = max((n for n in range(k) if rank[n] < 0), key=lambda n: d[n])
            indeg[n] = 0
            heap.append((-d[n], n))
        _, n = heapq.heappop(heap)
        if rank[n] >= 0:
            continue
        rank[n] = r
        r += 1
        for m in succ_sorted[bounds[n]:bounds[n + 1]]:
            indeg[m] -= 1
            if indeg[m] == 0 and rank[m] < 0:
                heapq.heappush(heap, (-d[m], m))
    return np.array(rank, dtype=np.int64)


def _intra_solid_precedence(scene: Scene, cam_local: np.ndarray) -> np.ndarray:
    """(P,) for each part, how many parts of its solid it must be drawn before: parts separated by
    a plane of the solid frame are ordered by the side the camera is on. Sorting by this count
    (descending) orders stacked parts correctly (legs, torso, head; wheels, body, cabin)."""
    P = len(scene.part_vertices)
    if not len(scene.pair_parts):
        return np.zeros(P, dtype=np.int64)
    lo_part, hi_part = scene.pair_parts[:, 0], scene.pair_parts[:, 1]
    cam_coord = cam_local[scene.part_solid[lo_part], scene.pair_axis]
    # The part on the camera's side of the separating plane is nearer: the other goes first.
    first = np.where(cam_coord > scene.pair_plane, lo_part, hi_part)
    return np.bincount(first, minlength=P)


def visible_pixels(scene: Scene, camera) -> np.ndarray:
    """Pixels of each ground-truth box's solid that are visible in `camera` (after occlusion by
    every other solid, at the camera's resolution): int64 (len(scene.boxes),). A box index
    image is drawn in the same painter's order as the colour image, distractors as 0."""
    view = _View(camera)
    ids = np.zeros((view.H, view.W), np.uint16)
    _draw_solids(None, view, scene, None, 0.0, ids=ids)
    return np.bincount(ids.ravel(), minlength=len(scene.boxes) + 1)[1:len(scene.boxes) + 1]


def _draw_solids(img, view, scene, haze, hd, ids=None) -> None:
    """Colour faces into img (BGR) and/or box indices + 1 into ids (uint16; 0 = not a target)."""
    V_all = scene.part_vertices                                      # (P, 8, 3) ego
    if not len(V_all):
        return
    Pc_all = view.to_camera(V_all)                                   # (P, 8, 3) camera
    D_all = view.plane_distances(Pc_all)                             # (P, 8, 9)
    parts = np.flatnonzero(~(D_all.max(axis=1) < 0).any(axis=-1))    # parts at least partly in view
    if not len(parts):
        return
    V, Pc, D = V_all[parts], Pc_all[parts], D_all[parts]
    fixed = view.fixed_point(Pc)                                     # (n, 8, 2)

    # Solid order: screen boxes of the visible parts, grouped by solid (parts of a solid are
    # contiguous). A part reaching behind the near plane may cover anything: full-screen box.
    part_solid = scene.part_solid[parts]
    pmin = fixed.min(axis=1).astype(np.float64)
    pmax = fixed.max(axis=1).astype(np.float64)
    behind = (D[..., 0] < 0).any(axis=1)
    pmin[behind], pmax[behind] = -np.inf, np.inf
    starts = np.flatnonzero(np.r_[True, part_solid[1:] != part_solid[:-1]])
    solids = part_solid[starts]
    boxes = np.concatenate([np.minimum.reduceat(pmin, starts), np.maximum.reduceat(pmax, starts)], axis=1)
    cam_local = _camera_in_solid_frames(scene, view.C)
    solid_rank = np.zeros(scene.solid_count, dtype=np.int64)
    solid_rank[solids] = solid_draw_rank(scene, view.C, solids, boxes, cam_local)
    before = _intra_solid_precedence(scene, cam_local)[parts]
    order = np.lexsort((parts, -before, solid_rank[part_solid]))    # into the visible parts

    Df = D[:, FACES]                                                 # (n, 6, 4, 9)
    culled = (Df.max(axis=2) < 0).any(axis=-1)                       # (n, 6) off-screen faces
    inside = (Df[..., :5].min(axis=2) >= 0).all(axis=-1)             # (n, 6) no clipping needed
    normals = scene.face_normals[parts]                              # (n, 6, 3)
    facing = np.einsum("pfk,pfk->pf", normals, V[:, FACES[:, 0]] - view.C) < 0   # back-face culling
    draw = facing & ~culled
    face_pts = np.ascontiguousarray(fixed[:, FACES])                 # (n, 6, 4, 2)

    rows, faces = np.nonzero(draw[order])
    idx = order[rows]
    if img is not None:
        dist = np.linalg.norm(V.mean(axis=1) - view.C, axis=1)        # (n,)
        colors = _hazed(scene.part_colors[parts], dist[:, None], haze, hd).astype(np.int64)   # (n, 6, 3)
        col_list = colors[idx, faces].tolist()
    if ids is not None:
        id_list = (scene.solid_box[part_solid[idx]] + 1).tolist()
    fill = cv2.fillConvexPoly
    for n, (p, f) in enumerate(zip(idx.tolist(), faces.tolist())):
        if inside[p, f]:
            pts = face_pts[p, f]
        else:
            pts = _clip_project(Pc[p, FACES[f]], view)
            if pts is None:
                continue
        if img is not None:
            fill(img, pts, col_list[n], cv2.LINE_AA, _SHIFT)
        if ids is not None:
            fill(ids, pts, id_list[n], cv2.LINE_8, _SHIFT)


def time_rendering(world, rig, t0_ns: int, n: int) -> dict:
    """Time world.scene_at + render_rig for n frame sets at successive times (50 ms apart) on one
    thread, after one warm-up set -> milliseconds per frame set (`perception render --bench`)."""
    import time

    cv2.setNumThreads(1)
    try:  # torch is not used here, but a caller may have imported it
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass
    render_rig(world.scene_at(t0_ns), rig)     # warm-up: sky gradients are cached per camera
    scene_ms, total_ms = [], []
    for k in range(n):
        t = t0_ns + (k + 1) * 50_000_000
        a = time.perf_counter()
        scene = world.scene_at(t)
        b = time.perf_counter()
        render_rig(scene, rig)
        c = time.perf_counter()
        scene_ms.append((b - a) * 1e3)
        total_ms.append((c - a) * 1e3)
    return {"frame_sets": n, "total_ms": total_ms, "scene_ms": scene_ms,
            "median_ms": float(np.median(total_ms)), "p90_ms": float(np.percentile(total_ms, 90)),
            "scene_median_ms": float(np.median(scene_ms))}
