"""What the renderer draws: ground-truth boxes, lighting and a scene made of convex parts.

Kept apart from `world.py` (which decides *where* things are at time t) so that the renderer and
tests can build scenes by hand (`scene_from_boxes`) without a world.

Every solid (a car, a tree, a building) is a handful of convex *parts*. A part is an 8-vertex
hexahedron: an axis-aligned box in the solid's own frame whose top face may be shrunk (a taper, for
cones, cabins, canopies). Vertex order is that of `geometry.box_corners`: bottom face counter-
clockwise seen from above starting at front-left, then the top face in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

from perception import geometry
from perception.boxes import CLASSES  # noqa: E402,F401  (the taxonomy; re-exported for the sim)

# Faces as vertex indices, counter-clockwise seen from outside (so the cross product of the first
# two edges points outwards): front (+x), back (-x), left (+y), right (-y), top (+z), bottom (-z).
FACES = np.array([[0, 4, 7, 3], [1, 2, 6, 5], [0, 1, 5, 4], [3, 7, 6, 2], [4, 5, 6, 7], [0, 3, 2, 1]])
FRONT, BACK, LEFT, RIGHT, TOP, BOTTOM = range(6)


@dataclass(frozen=True, eq=False)
class Box3D:
    """A ground-truth object in the ego frame (x forward, y left, z up, metres)."""

    cls: int                 # index into CLASSES
    center: np.ndarray       # (3,) box centre; z = h/2 for objects on the ground
    size: np.ndarray         # (3,) length (along yaw), width, height
    yaw: float               # radians, 0 = facing +x, left positive
    velocity: np.ndarray     # (2,) vx, vy in m/s, ego frame
    track_id: int

    def __post_init__(self):
        for name, n in (("center", 3), ("size", 3), ("velocity", 2)):
            a = np.array(getattr(self, name), dtype=np.float64).reshape(n)
            a.setflags(write=False)          # frozen means frozen, arrays included
            object.__setattr__(self, name, a)
        object.__setattr__(self, "cls", int(self.cls))
        object.__setattr__(self, "yaw", float(self.yaw))
        object.__setattr__(self, "track_id", int(self.track_id))

    @property
    def class_name(self) -> str:
        return CLASSES[self.cls]

    def corners(self) -> np.ndarray:
        """(8, 3) corners, order of geometry.box_corners."""
        return geometry.box_corners(self.center, self.size, self.yaw)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Box3D):
            return NotImplemented
        return (self.cls == other.cls and self.track_id == other.track_id and self.yaw == other.yaw
                and np.array_equal(self.center, other.center) and np.array_equal(self.size, other.size)
                and np.array_equal(self.velocity, other.velocity))

    __hash__ = None  # type: ignore[assignment]  # arrays inside: not hashable

    def __repr__(self) -> str:
        c, s, v = self.center, self.size, self.velocity
        return (f"Box3D({self.class_name}#{self.track_id} at ({c[0]:.2f}, {c[1]:.2f}, {c[2]:.2f}) "
                f"size ({s[0]:.2f}, {s[1]:.2f}, {s[2]:.2f}) yaw {self.yaw:+.2f} v ({v[0]:.2f}, {v[1]:.2f}))")


@dataclass(frozen=True, eq=False)
class Lighting:
    """Sun + ambient Lambert lighting and the atmosphere. Colours are BGR floats in 0..255."""

    sun_dir: np.ndarray          # (3,) unit vector towards the sun, ego frame
    sun: float                   # direct light strength
    ambient: float               # light every face gets
    sky_color: np.ndarray        # (3,) zenith-ish sky
    haze_color: np.ndarray       # (3,) horizon and distance haze
    haze_distance_m: float       # colour keeps exp(-d / haze_distance_m) of itself
    tint: np.ndarray             # (3,) per-channel white balance of the light

    def shade(self, albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
        """Lit colour (..., 3) of faces with the given albedo (..., 3) and normals (..., 3)."""
        n = normals / np.maximum(np.linalg.norm(normals, axis=-1, keepdims=True), 1e-12)
        lambert = np.maximum(n @ self.sun_dir, 0.0)
        # A little skylight from above keeps shadowed roofs brighter than shadowed walls.
        light = self.ambient * (0.85 + 0.15 * n[..., 2]) + self.sun * lambert
        return np.clip(albedo * light[..., None] * self.tint, 0.0, 255.0)

    @property
    def ground_shade(self) -> float:
        """Light on a sunlit horizontal surface (what `shade` gives for n = +z)."""
        return self.ambient + self.sun * max(float(self.sun_dir[2]), 0.0)

    @property
    def shadow_factor(self) -> float:
        """Brightness of ground in a cast shadow relative to sunlit ground (ambient only)."""
        return self.ambient / self.ground_shade

    @property
    def key(self) -> tuple:
        """Hashable identity, for caches keyed on lighting."""
        return tuple(np.round(np.concatenate([self.sun_dir, [self.sun, self.ambient], self.sky_color,
                                              self.haze_color, [self.haze_distance_m], self.tint]), 6))


DEFAULT_LIGHTING = Lighting(
    sun_dir=np.array([0.35, 0.45, 0.82]) / np.linalg.norm([0.35, 0.45, 0.82]), sun=0.6, ambient=0.45,
    sky_color=np.array([230.0, 185.0, 135.0]), haze_color=np.array([225.0, 215.0, 205.0]),
    haze_distance_m=400.0, tint=np.ones(3))


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything the renderer needs at one instant. Arrays are in the ego frame.

    Parts of all solids are stored flat. The order in which the renderer draws them is computed per
    camera (painter's algorithm), from the solid poses and the intra-solid `pairs` (see below).
    """

    t_ns: int
    boxes: tuple[Box3D, ...]          # detection targets (ground truth)
    lighting: Lighting
    part_vertices: np.ndarray         # (P, 8, 3) float64
    part_colors: np.ndarray           # (P, 6, 3) float32 lit BGR per face (before distance haze)
    part_solid: np.ndarray            # (P,) int, owning solid
    # Pairs of parts of one solid separated by an axis-aligned plane of the solid frame:
    # part pair_parts[q, 0] lies on the low side of `coordinate pair_axis[q] = pair_plane[q]`,
    # pair_parts[q, 1] on the high side. The one on the camera's side is drawn last.
    pair_parts: np.ndarray            # (Q, 2) int
    pair_axis: np.ndarray             # (Q,) int in 0..2
    pair_plane: np.ndarray            # (Q,) float, metres in the solid frame
    solid_origin: np.ndarray          # (S, 3) solid frame origin (on the ground under its centre)
    solid_yaw: np.ndarray             # (S,)
    solid_lo: np.ndarray              # (S, 3) bounding box of the solid in its own frame
    solid_hi: np.ndarray              # (S, 3)
    solid_large: np.ndarray           # (S,) bool: buildings; ordered against others by their faces
    solid_box: np.ndarray             # (S,) int index into boxes, -1 for distractors
    ground_vertices: np.ndarray       # (G, 3) flat polygons on z = 0, drawn in order before solids
    ground_starts: np.ndarray         # (NG + 1,) int, polygon k is vertices[starts[k]:starts[k+1]]
    ground_colors: np.ndarray         # (NG, 3) lit BGR
    shadow_vertices: np.ndarray       # (GS, 3) convex cast-shadow polygons on z = 0
    shadow_starts: np.ndarray         # (NS + 1,) int

    @cached_property
    def face_normals(self) -> np.ndarray:
        """(P, 6, 3) outward (unnormalised) normals of every part face."""
        return face_normals(self.part_vertices)

    @cached_property
    def ground_centroids(self) -> np.ndarray:
        """(NG, 3) vertex mean of every ground polygon (for distance haze)."""
        s = self.ground_starts
        sums = np.add.reduceat(self.ground_vertices, s[:-1], axis=0) if len(s) > 1 else np.zeros((0, 3))
        return sums / np.diff(s)[:, None]

    @property
    def solid_count(self) -> int:
        return len(self.solid_yaw)


def face_normals(vertices: np.ndarray) -> np.ndarray:
    """Outward normals (P, 6, 3) of hexahedra (P, 8, 3) with the FACES winding."""
    f = vertices[:, FACES]                                  # (P, 6, 4, 3)
    # Diagonals rather than edges: robust when a tapered face degenerates towards a point.
    return np.cross(f[:, :, 2] - f[:, :, 0], f[:, :, 3] - f[:, :, 1])


# --------------------------------------------------------------------------------------------
# Parts and solids in their own frame, and how they are assembled into a Scene.

@dataclass
class Part:
    """A convex part in its solid's frame (x forward, y left, z up; origin on the ground)."""

    lo: np.ndarray           # (3,) bounding box min
    hi: np.ndarray           # (3,) bounding box max
    colors: np.ndarray       # (6, 3) albedo BGR per face (FACES order)
    taper: tuple[float, float] = (1.0, 1.0)   # top face scale in x and y about the part's axis

    def vertices(self) -> np.ndarray:
        """(8, 3) vertices, geometry.box_corners order."""
        (x0, y0, z0), (x1, y1, z1) = np.asarray(self.lo, float).tolist(), np.asarray(self.hi, float).tolist()
        cx, cy, hx, hy = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
        tx, ty = hx * self.taper[0], hy * self.taper[1]
        return np.array([[cx + hx, cy + hy, z0], [cx - hx, cy + hy, z0], [cx - hx, cy - hy, z0],
                         [cx + hx, cy - hy, z0], [cx + tx, cy + ty, z1], [cx - tx, cy + ty, z1],
                         [cx - tx, cy - ty, z1], [cx + tx, cy - ty, z1]])


@dataclass
class Solid:
    """A set of parts in one frame. Large solids (buildings) are ordered against others by their
    faces when painting."""

    parts: list[Part]
    large: bool = False

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.min([p.lo for p in self.parts], axis=0)
        hi = np.max([p.hi for p in self.parts], axis=0)
        return lo, hi


def separation_pairs(parts: list[Part]) -> list[tuple[int, int, int, float]]:
    """(low part, high part, axis, plane) for every pair of parts separated along an axis of the
    solid frame. Overlapping pairs get no constraint (they are drawn in list order)."""
    out = []
    eps = 1e-6
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            a, b = parts[i], parts[j]
            for k in (2, 0, 1):  # prefer the vertical split: it is the common one (stacked parts)
                if a.hi[k] <= b.lo[k] + eps:
                    out.append((i, j, k, (a.hi[k] + b.lo[k]) / 2.0))
                    break
                if b.hi[k] <= a.lo[k] + eps:
                    out.append((j, i, k, (b.hi[k] + a.lo[k]) / 2.0))
                    break
    return out


class SolidTemplate:
    """Precomputed arrays of one solid in its own frame, ready to be posed many times."""

    def __init__(self, solid: Solid):
        self.local = np.stack([p.vertices() for p in solid.parts])          # (p, 8, 3)
        self.albedo = np.stack([np.asarray(p.colors, float) for p in solid.parts])  # (p, 6, 3)
        self.lo, self.hi = solid.bounds()
        self.large = solid.large
        pairs = separation_pairs(solid.parts)
        self.pairs = np.array([(i, j) for i, j, _, _ in pairs], dtype=np.int64).reshape(-1, 2)
        self.pair_axis = np.array([k for _, _, k, _ in pairs], dtype=np.int64)
        self.pair_plane = np.array([p for _, _, _, p in pairs], dtype=np.float64)

    @property
    def n_parts(self) -> int:
        return len(self.local)


def pose_vertices(local: np.ndarray, origin: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Vertices (P, 8, 3) of parts in their solid frames, posed by per-part origin (P, 3) and yaw
    (P,) into the ego frame."""
    c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
    x, y = local[..., 0], local[..., 1]
    out = np.empty_like(local)
    out[..., 0] = c * x - s * y + origin[:, None, 0]
    out[..., 1] = s * x + c * y + origin[:, None, 1]
    out[..., 2] = local[..., 2] + origin[:, None, 2]
    return out


def shadow_polygon(corners_xy: np.ndarray, height: float, sun_dir: np.ndarray) -> np.ndarray:
    """Convex hull (n, 2) of the shadow cast on the ground by a prism of the given height over the
    footprint corners (4, 2): the footprint swept along the sun's ground offset."""
    offset = -np.asarray(sun_dir[:2]) / max(float(sun_dir[2]), 0.15) * height
    pts = np.concatenate([corners_xy, corners_xy + offset]).astype(np.float32)
    return cv2.convexHull(pts)[:, 0].astype(np.float64)


class SceneAssembler:
    """Collects posed solids, ground polygons and shadows, then freezes them into a Scene.

    World builds its static part once with this and appends the moving part per time step;
    `scene_from_boxes` uses it for hand-made test scenes.
    """

    def __init__(self, lighting: Lighting):
        self.lighting = lighting
        self._templates: list[SolidTemplate] = []
        self._origins: list[np.ndarray] = []
        self._yaws: list[float] = []
        self._box_index: list[int] = []
        self._ground: list[tuple[np.ndarray, np.ndarray]] = []   # (verts (n, 3), lit colour (3,))
        self._shadows: list[np.ndarray] = []

    def add_solid(self, template: SolidTemplate, origin, yaw: float, box_index: int = -1,
                  shadow: bool = True) -> None:
        origin = np.asarray(origin, dtype=np.float64).reshape(3)
        self._templates.append(template)
        self._origins.append(origin)
        self._yaws.append(float(yaw))
        self._box_index.append(box_index)
        if shadow and self.lighting.sun > 0.05:
            lo, hi = template.lo, template.hi
            foot = np.array([[hi[0], hi[1]], [lo[0], hi[1]], [lo[0], lo[1]], [hi[0], lo[1]]])
            c, s = np.cos(yaw), np.sin(yaw)
            foot = foot @ np.array([[c, s], [-s, c]]) + origin[:2]
            self._shadows.append(shadow_polygon(foot, hi[2], self.lighting.sun_dir))

    def add_ground(self, polygon_xy, albedo) -> None:
        """A flat convex polygon (n, 2) on the ground with the given albedo (BGR)."""
        xy = np.asarray(polygon_xy, dtype=np.float64)
        verts = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)
        lit = np.clip(np.asarray(albedo, float) * self.lighting.ground_shade * self.lighting.tint, 0, 255)
        self._ground.append((verts, lit))

    def build(self, t_ns: int, boxes: tuple[Box3D, ...]) -> Scene:
        return build_scene(t_ns, boxes, self.lighting, self._templates, np.array(self._origins).reshape(-1, 3),
                           np.array(self._yaws, dtype=np.float64), np.array(self._box_index, dtype=np.int64),
                           self._ground, self._shadows)


def build_scene(t_ns, boxes, lighting, templates, origins, yaws, box_index, ground, shadows) -> Scene:
    """Pose and light the solids and pack everything into a Scene."""
    counts = np.array([t.n_parts for t in templates], dtype=np.int64)
    P = int(counts.sum())
    solid_of_part = np.repeat(np.arange(len(templates)), counts)
    if P:
        local = np.concatenate([t.local for t in templates])
        albedo = np.concatenate([t.albedo for t in templates])
        verts = pose_vertices(local, origins[solid_of_part], yaws[solid_of_part])
        colors = lighting.shade(albedo, face_normals(verts)).astype(np.float32)
    else:
        verts, colors = np.zeros((0, 8, 3)), np.zeros((0, 6, 3), np.float32)
    first_part = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    pair_parts = [t.pairs + first_part[s] for s, t in enumerate(templates) if len(t.pairs)]
    pair_axis = [t.pair_axis for t in templates if len(t.pairs)]
    pair_plane = [t.pair_plane for t in templates if len(t.pairs)]
    gv, gs, gc = _pack_polygons([g[0] for g in ground], [g[1] for g in ground])
    sv, ss, _ = _pack_polygons([np.concatenate([s, np.zeros((len(s), 1))], axis=1) for s in shadows], None)
    return Scene(
        t_ns=int(t_ns), boxes=tuple(boxes), lighting=lighting,
        part_vertices=verts, part_colors=colors, part_solid=solid_of_part,
        pair_parts=np.concatenate(pair_parts) if pair_parts else np.zeros((0, 2), np.int64),
        pair_axis=np.concatenate(pair_axis) if pair_axis else np.zeros(0, np.int64),
        pair_plane=np.concatenate(pair_plane) if pair_plane else np.zeros(0),
        solid_origin=origins.reshape(-1, 3), solid_yaw=yaws,
        solid_lo=np.array([t.lo for t in templates]).reshape(-1, 3),
        solid_hi=np.array([t.hi for t in templates]).reshape(-1, 3),
        solid_large=np.array([t.large for t in templates], dtype=bool),
        solid_box=box_index, ground_vertices=gv, ground_starts=gs, ground_colors=gc,
        shadow_vertices=sv, shadow_starts=ss)


def _pack_polygons(polys, colors):
    if not polys:
        return np.zeros((0, 3)), np.zeros(1, np.int64), np.zeros((0, 3))
    starts = np.concatenate([[0], np.cumsum([len(p) for p in polys])]).astype(np.int64)
    cols = np.array(colors, dtype=np.float64).reshape(-1, 3) if colors is not None else None
    return np.concatenate(polys), starts, cols


def merge_scenes(a: Scene, b: Scene, boxes: tuple[Box3D, ...] | None = None) -> Scene:
    """One scene with the solids, ground and shadows of `a` then `b` (same lighting and time as
    `b`). `b`'s box indices are shifted past `a`'s boxes; `boxes` overrides the concatenation."""
    na_parts, na_solids, na_boxes = len(a.part_vertices), a.solid_count, len(a.boxes)
    box_b = np.where(b.solid_box >= 0, b.solid_box + na_boxes, -1)

    def starts(sa, sb, n_verts_a):
        return np.concatenate([sa, sb[1:] + n_verts_a])

    return Scene(
        t_ns=b.t_ns, boxes=tuple(a.boxes) + tuple(b.boxes) if boxes is None else tuple(boxes),
        lighting=b.lighting,
        part_vertices=np.concatenate([a.part_vertices, b.part_vertices]),
        part_colors=np.concatenate([a.part_colors, b.part_colors]),
        part_solid=np.concatenate([a.part_solid, b.part_solid + na_solids]),
        pair_parts=np.concatenate([a.pair_parts, b.pair_parts + na_parts]),
        pair_axis=np.concatenate([a.pair_axis, b.pair_axis]),
        pair_plane=np.concatenate([a.pair_plane, b.pair_plane]),
        solid_origin=np.concatenate([a.solid_origin, b.solid_origin]),
        solid_yaw=np.concatenate([a.solid_yaw, b.solid_yaw]),
        solid_lo=np.concatenate([a.solid_lo, b.solid_lo]),
        solid_hi=np.concatenate([a.solid_hi, b.solid_hi]),
        solid_large=np.concatenate([a.solid_large, b.solid_large]),
        solid_box=np.concatenate([a.solid_box, box_b]),
        ground_vertices=np.concatenate([a.ground_vertices, b.ground_vertices]),
        ground_starts=starts(a.ground_starts, b.ground_starts, len(a.ground_vertices)),
        ground_colors=np.concatenate([a.ground_colors, b.ground_colors]),
        shadow_vertices=np.concatenate([a.shadow_vertices, b.shadow_vertices]),
        shadow_starts=starts(a.shadow_starts, b.shadow_starts, len(a.shadow_vertices)))


def select_solids(scene: Scene, keep: np.ndarray) -> Scene:
    """The scene with only the solids where keep (S,) is true; boxes of dropped targets are dropped
    too. Ground and cast shadows are kept as they are."""
    from dataclasses import replace

    keep = np.asarray(keep, dtype=bool)
    part_keep = keep[scene.part_solid]
    part_map = np.cumsum(part_keep) - 1                     # old part index -> new
    solid_map = np.cumsum(keep) - 1
    pair_keep = part_keep[scene.pair_parts[:, 0]] & part_keep[scene.pair_parts[:, 1]] if len(scene.pair_parts) \
        else np.zeros(0, bool)
    kept_boxes = scene.solid_box[keep]
    box_ids = sorted(int(b) for b in kept_boxes if b >= 0)
    box_map = {old: new for new, old in enumerate(box_ids)}
    return replace(
        scene, boxes=tuple(scene.boxes[b] for b in box_ids),
        part_vertices=scene.part_vertices[part_keep], part_colors=scene.part_colors[part_keep],
        part_solid=solid_map[scene.part_solid[part_keep]],
        pair_parts=part_map[scene.pair_parts[pair_keep]], pair_axis=scene.pair_axis[pair_keep],
        pair_plane=scene.pair_plane[pair_keep],
        solid_origin=scene.solid_origin[keep], solid_yaw=scene.solid_yaw[keep], solid_lo=scene.solid_lo[keep],
        solid_hi=scene.solid_hi[keep], solid_large=scene.solid_large[keep],
        solid_box=np.array([box_map[int(b)] if b >= 0 else -1 for b in kept_boxes], dtype=np.int64))


def without_targets(scene: Scene) -> Scene:
    """The scene with every detection target removed (distractors, ground and shadows stay)."""
    return select_solids(scene, scene.solid_box < 0)
