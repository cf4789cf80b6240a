"""The built-in simulated world: a street scene around a parked ego vehicle.

It is the only training data of the model, so it is built to make geometry the easy way to win:
objects of every class at every range and bearing, in all cameras, with distractors that are not
targets (buildings, poles, trees, signs, bins, barriers) and per-seed lighting and materials.

Determinism: a World is a pure function of (seed, config). `boxes_at(t)` and `scene_at(t)` are
pure functions of t: positions are closed-form in t, so independent processes with the same seed
agree on the world at any instant (no global RNG, no state carried between calls). Time is reduced
modulo one hour in integer nanoseconds before it becomes a float, so epoch times (~1.7e18 ns) lose
no precision; speeds are rounded so that every motion has a period dividing one hour, which makes
that reduction seamless.

Layout (per seed). In a "layout frame" (u along the main road, v across it) the ego stands in a
parking strip beside a main road (1-2 lanes per direction, shoulders used by cyclists, parking,
sidewalks, buildings); a perpendicular cross road at a random offset makes an intersection; the
whole layout is rotated about the ego by a random angle (half of the seeds: ego parallel to the
road). Lane traffic moves at a constant per-lane speed and wraps within +-extent_m along the lane,
so the area stays populated forever and vehicles in a lane keep their spacing. Pedestrians walk
back and forth along sidewalk segments that do not cross a road (each in its own sub-lane), a few
use the crosswalks of the cross road; cyclists ride the shoulders; parked cars and traffic cones
(construction zones) are static. Where paths still cross (intersection, crosswalks) a lower-
priority object that would overlap another is left out of that instant's scene (main-road traffic
> cyclists > cross-road traffic > pedestrians): the scene never shows interpenetrating objects,
at the price of an occasional object vanishing for a moment at a crossing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from perception.sim import shapes
from perception.sim.render import render, render_rig  # noqa: F401  (part of this module's API)
from perception.sim.scene import (
    CLASSES,
    DEFAULT_LIGHTING,
    Box3D,
    Lighting,
    Scene,
    SceneAssembler,
    SolidTemplate,
    merge_scenes,
    shadow_polygon,
)

__all__ = ["CLASSES", "Box3D", "WorldConfig", "World", "Scene", "Lighting", "scene_from_boxes", "render",
           "render_rig", "EGO_FOOTPRINT"]

PERIOD_NS = 3600 * 10**9          # every motion repeats exactly after this
PERIOD_S = PERIOD_NS / 1e9
# Keep-out of the ego vehicle itself, ego frame: x_min, x_max, y_min, y_max (metres).
EGO_FOOTPRINT = (-1.0, 4.5, -1.2, 1.2)

from perception.boxes import CAR, CONE, CYCLIST, PEDESTRIAN, TRUCK  # noqa: E402,F401

# Who gives way when two paths cross (the lower number is left out of the scene).
PRIO_PED, PRIO_CROSS, PRIO_CYCLIST, PRIO_MAIN, PRIO_STATIC = range(5)

Range = tuple[float, float]
IntRange = tuple[int, int]


@dataclass(frozen=True)
class WorldConfig:
    """Ranges the world is sampled from, per seed (uniform unless noted; int ranges inclusive)."""

    extent_m: float = 45.0                          # moving objects wrap / turn within +-extent along their path
    static_extent_m: float = 110.0                  # buildings and street furniture are placed out to here
    aligned_prob: float = 0.5                       # ego parallel to the road (else any heading)
    lanes_per_direction: IntRange = (1, 2)
    lane_width_m: Range = (3.0, 3.7)
    cross_road_prob: float = 0.7
    cross_road_offset_m: Range = (4.0, 28.0)        # distance from the ego's footprint to the cross road's sidewalk
    vehicle_gap_m: Range = (8.0, 35.0)              # bumper-to-bumper gap in moving lanes
    vehicle_speed_mps: Range = (3.0, 14.0)
    stopped_lane_prob: float = 0.15                 # a main lane in a queue (speed 0)
    cross_vehicles_per_lane: IntRange = (0, 2)
    truck_fraction: float = 0.2
    parked_vehicles: IntRange = (1, 6)
    pedestrians: IntRange = (3, 10)
    crossing_pedestrians: IntRange = (0, 2)
    pedestrian_speed_mps: Range = (0.6, 1.8)
    standing_pedestrian_prob: float = 0.2
    cyclists: IntRange = (0, 4)
    cyclist_speed_mps: Range = (2.5, 7.0)
    construction_zone_prob: float = 0.5
    cones_per_zone: IntRange = (4, 9)
    loose_cones: IntRange = (0, 2)
    size_jitter: float = 0.12                       # +- fraction on every object dimension
    color_jitter: float = 0.12                      # +- fraction on object colours
    building_height_m: Range = (4.0, 24.0)
    street_light_spacing_m: Range = (18.0, 35.0)
    tree_prob: float = 0.7                          # a side of the street has a row of trees
    furniture_per_100m: IntRange = (3, 12)          # signs, bins, bollards per sidewalk
    ground_patches: IntRange = (4, 14)
    sun_elevation_deg: Range = (15.0, 70.0)
    sun_strength: Range = (0.25, 0.85)
    ambient: Range = (0.3, 0.6)
    haze_distance_m: Range = (150.0, 800.0)

    def __post_init__(self):
        for name, value in self.__dict__.items():
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"WorldConfig.{name}: expected (low, high) with low <= high, got {value}")
        if self.extent_m < 20 or self.static_extent_m < self.extent_m:
            raise ValueError("WorldConfig: need extent_m >= 20 and static_extent_m >= extent_m")


# ------------------------------------------------------------------------------------------------
# small 2-D helpers (layout frame)

def _rot2(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _rect(cx, cy, length, width, yaw=0.0) -> np.ndarray:
    """(4, 2) corners of an oriented rectangle, counter-clockwise."""
    x = np.array([1, -1, -1, 1]) * length / 2
    y = np.array([1, 1, -1, -1]) * width / 2
    c, s = math.cos(yaw), math.sin(yaw)
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], axis=1)


def _aabb(u0, u1, v0, v1) -> np.ndarray:
    return np.array([[u1, v1], [u0, v1], [u0, v0], [u1, v0]], dtype=np.float64)


def _polys_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons (n, 2)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pa, pb = a @ normals.T, b @ normals.T
        if np.any((pa.max(0) < pb.min(0) - 1e-9) | (pb.max(0) < pa.min(0) - 1e-9)):
            return False
    return True


def overlapping_pairs(corners: np.ndarray) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of oriented footprints (N, 4, 2) that overlap."""
    n = len(corners)
    if n < 2:
        return []
    centre = corners.mean(axis=1)
    radius = np.linalg.norm(corners - centre[:, None], axis=2).max(axis=1)
    d = np.linalg.norm(centre[:, None] - centre[None], axis=2)
    cand = np.argwhere(np.triu(d < radius[:, None] + radius[None], k=1))
    return [(int(i), int(j)) for i, j in cand if _polys_overlap(corners[i], corners[j])]


class _Occupancy:
    """Footprints of static things placed so far (layout frame), to keep them apart. Bounding
    boxes are tested in bulk first; the exact test runs on the few that touch."""

    def __init__(self):
        self.polys: list[np.ndarray] = []
        self._bounds = np.zeros((64, 4))          # (capacity, [u0, v0, u1, v1])

    def free(self, poly: np.ndarray) -> bool:
        lo, hi = poly.min(0), poly.max(0)
        b = self._bounds[:len(self.polys)]
        near = np.flatnonzero((b[:, 0] <= hi[0]) & (lo[0] <= b[:, 2]) & (b[:, 1] <= hi[1]) & (lo[1] <= b[:, 3]))
        return not any(_polys_overlap(self.polys[i], poly) for i in near.tolist())

    def add(self, poly: np.ndarray) -> None:
        n = len(self.polys)
        if n == len(self._bounds):
            self._bounds = np.concatenate([self._bounds, np.zeros_like(self._bounds)])
        self._bounds[n] = np.concatenate([poly.min(0), poly.max(0)])
        self.polys.append(poly)


def _intervals_free(a: float, b: float, blocked: list[tuple[float, float]]) -> bool:
    return all(b <= lo or a >= hi for lo, hi in blocked)


def _split(a: float, b: float, blocked: list[tuple[float, float]], min_len: float = 0.0) -> list[tuple[float, float]]:
    """[a, b] minus the blocked intervals, pieces at least min_len long."""
    pieces = [(a, b)]
    for lo, hi in blocked:
        nxt = []
        for p0, p1 in pieces:
            if hi <= p0 or lo >= p1:
                nxt.append((p0, p1))
                continue
            if lo > p0:
                nxt.append((p0, lo))
            if hi < p1:
                nxt.append((hi, p1))
        pieces = nxt
    return [(p0, p1) for p0, p1 in pieces if p1 - p0 >= min_len]


def _segments(a: float, b: float):
    """Split [a, b] (metres from the ego along a strip) into pieces that grow with distance, so
    distance haze is per piece and far pieces cost little."""
    edges = [a]
    x = a
    while x < b:
        step = 10.0 if abs(x) < 60 else (30.0 if abs(x) < 150 else 200.0)
        x = min(b, x + step)
        edges.append(x)
    return list(zip(edges[:-1], edges[1:]))


# ------------------------------------------------------------------------------------------------

@dataclass
class _Layout:
    phi: float                 # layout frame -> ego frame rotation
    vc: float                  # main road centre line (v)
    n_lanes: int
    lane_w: float
    median: float
    shoulder: float
    kerb_near: float           # v of the ego-side kerb
    kerb_far: float
    park_far: float            # width of the far parking lane (0 = none)
    sw_far: tuple[float, float]   # far sidewalk (v0, v1)
    sw_near: tuple[float, float]  # ego-side sidewalk (v0, v1)
    line_far: float            # building line beyond the far sidewalk
    line_near: float
    cross: bool
    uc: float                  # cross road centre (u)
    ch: float                  # cross road half width (kerb to kerb / 2)
    cross_lane_w: float
    sw_cross: float            # cross road sidewalk width
    ego_poly: np.ndarray       # (4, 2) ego footprint, layout frame

    @property
    def road_half(self) -> float:
        return self.vc - self.kerb_near

    def cross_block(self, margin: float = 0.0) -> list[tuple[float, float]]:
        """u interval taken by the cross road and its sidewalks."""
        if not self.cross:
            return []
        w = self.ch + self.sw_cross + margin
        return [(self.uc - w, self.uc + w)]

    def cross_carriageway(self, margin: float = 0.0) -> list[tuple[float, float]]:
        return [(self.uc - self.ch - margin, self.uc + self.ch + margin)] if self.cross else []


@dataclass
class _Mover:
    """A detection target moving along a straight path (ego frame), or standing still."""

    cls: int
    size: np.ndarray
    template: SolidTemplate
    origin: np.ndarray        # (2,) path start reference, ego frame
    direction: np.ndarray     # (2,) unit
    s0: float                 # path coordinate of the loop start
    loop: float               # wrap: path length; bounce: 2 x segment length
    bounce: bool
    speed: float
    offset: float             # metres along the loop at t = 0
    prio: int


def _quantised_speed(speed: float, loop: float) -> float:
    """Round a speed so that the motion repeats exactly after PERIOD_S (seamless time wrap)."""
    q = loop / PERIOD_S
    return round(speed / q) * q


class World:
    """A seeded street scene; see the module docstring."""

    def __init__(self, seed: int, config: WorldConfig | None = None):
        self.seed = int(seed)
        self.config = config or WorldConfig()
        rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFFFFFFFFFF, 0x5EED]))
        cfg = self.config
        self.lighting = _sample_lighting(rng, cfg)
        self._layout = lay = _sample_layout(rng, cfg)
        self._R = _rot2(lay.phi)
        self._occ = _Occupancy()
        # Parked vehicles and cones keep a metre from the ego footprint (layout frame); street
        # furniture keeps 3 m (a pole against a lens would waste that camera).
        x0, x1, y0, y1 = EGO_FOOTPRINT
        self._occ.add(_aabb(x0 - 1.0, x1 + 1.0, y0 - 1.0, y1 + 1.0) @ _rot2(-lay.phi).T)
        self._ego_clear = _aabb(x0 - 3.0, x1 + 3.0, y0 - 3.0, y1 + 3.0) @ _rot2(-lay.phi).T
        self._static = SceneAssembler(self.lighting)
        self._movers: list[_Mover] = []

        mat = _sample_materials(rng)
        self._build_ground(rng, mat)
        self._build_traffic(rng)
        self._build_parked(rng)
        self._build_construction(rng)
        self._build_cyclists(rng)
        self._build_pedestrians(rng)
        self._build_street_furniture(rng)
        self._build_buildings(rng)
        self._static_scene = self._static.build(0, ())
        self._last_scene: tuple[int, Scene] | None = None
        self._freeze_movers()

    # -- public -----------------------------------------------------------------------------------

    def boxes_at(self, t_ns: int) -> list[Box3D]:
        """Ground-truth boxes of the detection targets present at time t (ego frame)."""
        return self._state(t_ns)[0]

    def scene_at(self, t_ns: int) -> Scene:
        """Everything needed to render time t: boxes, their parts, distractors, ground, lighting.
        The last instant is kept: the sim camera renders it and then publishes its truth."""
        if self._last_scene is not None and self._last_scene[0] == t_ns:
            return self._last_scene[1]
        boxes, active, pos, yaw = self._state(t_ns)
        asm = SceneAssembler(self.lighting)
        for k, i in enumerate(active):
            m = self._movers[i]
            asm.add_solid(m.template, (pos[i, 0], pos[i, 1], 0.0), yaw[i], box_index=k, shadow=False)
        dynamic = asm.build(t_ns, tuple(boxes))
        scene = merge_scenes(self._static_scene, dynamic)
        scene = _with_shadows(scene, self._shadow_polys(active, pos, yaw))
        self._last_scene = (t_ns, scene)
        return scene

    @property
    def num_tracks(self) -> int:
        return len(self._movers)

    # -- motion -----------------------------------------------------------------------------------

    def _freeze_movers(self) -> None:
        ms = self._movers
        self._m_origin = np.array([m.origin for m in ms]).reshape(-1, 2)
        self._m_dir = np.array([m.direction for m in ms]).reshape(-1, 2)
        self._m_s0 = np.array([m.s0 for m in ms])
        self._m_loop = np.array([m.loop for m in ms])
        self._m_bounce = np.array([m.bounce for m in ms], dtype=bool)
        self._m_speed = np.array([m.speed for m in ms])
        self._m_offset = np.array([m.offset for m in ms])
        self._m_prio = np.array([m.prio for m in ms], dtype=np.int64)
        self._m_size = np.array([m.size for m in ms]).reshape(-1, 3)
        self._m_yaw = np.arctan2(self._m_dir[:, 1], self._m_dir[:, 0])
        # Footprint corners in the mover frame (N, 4, 2), centred on the box.
        L, W = self._m_size[:, 0:1] / 2, self._m_size[:, 1:2] / 2
        self._m_foot = np.stack([np.concatenate([L, -L, -L, L], 1), np.concatenate([W, W, -W, -W], 1)], -1)
        self._ego_foot = _aabb(*EGO_FOOTPRINT[:2], *EGO_FOOTPRINT[2:])

    def _kinematics(self, t_ns: int):
        """Positions (N, 2), yaws (N,) and velocities (N, 2) of all movers at t (ego frame)."""
        t = (int(t_ns) % PERIOD_NS) / 1e9            # exact integer reduction, then float seconds
        q = np.mod(self._m_offset + self._m_speed * t, self._m_loop)
        half = self._m_loop / 2
        back = self._m_bounce & (q >= half)
        s = self._m_s0 + np.where(back, self._m_loop - q, q)
        sign = np.where(back, -1.0, 1.0)
        pos = self._m_origin + self._m_dir * s[:, None]
        yaw = np.where(back, self._m_yaw + np.pi, self._m_yaw)
        yaw = (yaw + np.pi) % (2 * np.pi) - np.pi
        vel = self._m_dir * (self._m_speed * sign)[:, None]
        return pos, yaw, vel

    def _state(self, t_ns: int):
        pos, yaw, vel = self._kinematics(t_ns)
        n = len(pos)
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        fx, fy = self._m_foot[..., 0], self._m_foot[..., 1]
        corners = np.stack([c * fx - s * fy + pos[:, 0:1], s * fx + c * fy + pos[:, 1:2]], -1)   # (N, 4, 2)
        keep = np.ones(n, dtype=bool)
        # Safety net: the layout keeps paths off the ego, but never show anything inside it.
        allc = np.concatenate([self._ego_foot[None], corners])
        pairs = overlapping_pairs(allc)
        pairs.sort(key=lambda ij: -max(self._prio(ij[0]), self._prio(ij[1])))
        for i, j in pairs:
            a, b = i - 1, j - 1               # -1 is the ego
            if (a >= 0 and not keep[a]) or not keep[b]:
                continue
            if a < 0:
                keep[b] = False
                continue
            loser = b if (self._m_prio[b], -b) < (self._m_prio[a], -a) else a
            keep[loser] = False
        active = np.flatnonzero(keep)
        boxes = []
        for k in active.tolist():
            size = self._m_size[k]
            boxes.append(Box3D(cls=self._movers[k].cls, center=np.array((pos[k, 0], pos[k, 1], size[2] / 2)), size=size,
                               yaw=yaw[k], velocity=vel[k], track_id=k + 1))
        return boxes, active.tolist(), pos, yaw

    def _prio(self, i: int) -> int:
        return 99 if i == 0 else int(self._m_prio[i - 1])

    def _shadow_polys(self, active, pos, yaw):
        if self.lighting.sun <= 0.05:
            return []
        out = []
        sun = self.lighting.sun_dir
        for i in active:
            c, s = math.cos(yaw[i]), math.sin(yaw[i])
            foot = self._m_foot[i] @ np.array([[c, s], [-s, c]]) + pos[i]
            out.append(shadow_polygon(foot, self._m_size[i, 2], sun))
        return out

    # -- construction helpers ---------------------------------------------------------------------

    def _to_ego(self, uv) -> np.ndarray:
        return np.asarray(uv, dtype=np.float64) @ self._R.T

    def _ground(self, poly_uv, albedo) -> None:
        self._static.add_ground(self._to_ego(poly_uv), albedo)

    def _strip_u(self, u0, u1, v0, v1, albedo, blocked=()) -> None:
        """A ground strip along u, cut into pieces and around blocked u intervals."""
        for a, b in _split(u0, u1, list(blocked)):
            for p, q in _segments(a, b):
                self._ground(_aabb(p, q, v0, v1), albedo)

    def _strip_v(self, v0, v1, u0, u1, albedo, blocked=()) -> None:
        for a, b in _split(v0, v1, list(blocked)):
            for p, q in _segments(a, b):
                self._ground(_aabb(u0, u1, p, q), albedo)

    def _add_static(self, solid, u, v, yaw_layout, margin=0.2, occupy=True, foot=None) -> bool:
        """Place a static distractor at layout (u, v) unless it would overlap something. `foot`
        (lo, hi) overrides the footprint used for that test (a lamp arm or a tree crown is above
        what it could collide with)."""
        lo, hi = foot if foot is not None else solid.bounds()
        c, s = math.cos(yaw_layout), math.sin(yaw_layout)
        corners = _aabb(lo[0] - margin, hi[0] + margin, lo[1] - margin, hi[1] + margin) @ np.array([[c, s], [-s, c]])
        poly = corners + (u, v)
        if not self._occ.free(poly) or (not solid.large and _polys_overlap(poly, self._ego_clear)):
            return False
        tpl = SolidTemplate(solid)
        if occupy:
            self._occ.add(poly)
        xy = self._to_ego((u, v))
        self._static.add_solid(tpl, (xy[0], xy[1], 0.0), yaw_layout + self._layout.phi)
        return True

    def _object(self, rng, cls: int) -> tuple[np.ndarray, SolidTemplate]:
        base = np.array(shapes.CLASS_SIZES[cls], dtype=np.float64)
        if cls == TRUCK:                       # trucks vary more than the jitter: vans to rigid trucks
            base = base * np.array([rng.uniform(0.8, 1.25), 1.0, rng.uniform(0.95, 1.1)])
        j = self.config.size_jitter
        size = base * rng.uniform(1 - j, 1 + j, 3)
        if cls == CONE:                        # cones are square
            size[1] = size[0]
        solid = shapes.BUILDERS[cls](rng, size, self.config.color_jitter)
        return size, SolidTemplate(solid)

    def _add_mover(self, rng, cls, origin_uv, dir_uv, s0, loop, bounce, speed, offset, prio,
                   sized=None) -> _Mover:
        size, tpl = sized if sized is not None else self._object(rng, cls)
        d = np.asarray(dir_uv, float) / np.linalg.norm(dir_uv)
        m = _Mover(cls=cls, size=size, template=tpl, origin=self._to_ego(origin_uv), direction=self._to_ego(d),
                   s0=s0, loop=loop, bounce=bounce, speed=_quantised_speed(speed, loop) if speed else 0.0,
                   offset=offset % loop, prio=prio)
        self._movers.append(m)
        return m

    def _add_static_target(self, rng, cls, u, v, yaw_layout, sized=None, margin=0.3) -> bool:
        """A detection target that never moves (parked vehicle, cone), if the spot is free."""
        size, tpl = sized if sized is not None else self._object(rng, cls)
        poly = _rect(u, v, size[0] + 2 * margin, size[1] + 2 * margin, yaw_layout)
        if not self._occ.free(poly):
            return False
        self._occ.add(poly)
        self._add_mover(rng, cls, (u, v), (math.cos(yaw_layout), math.sin(yaw_layout)), 0.0, 1.0, False, 0.0,
                        0.0, PRIO_STATIC, sized=(size, tpl))
        return True

    # -- the scene, piece by piece ----------------------------------------------------------------

    def _build_ground(self, rng, mat) -> None:
        lay, E = self._layout, self.config.static_extent_m
        far = 3 * E
        # Base ground: concentric square rings (convex trapezoids), hazed by their distance.
        radii = [0.0, 30.0, 70.0, 150.0, 400.0, 3000.0]
        self._ground(_aabb(-radii[1], radii[1], -radii[1], radii[1]), mat["base"])
        for r0, r1 in zip(radii[1:-1], radii[2:]):
            for k in range(4):
                R = _rot2(k * np.pi / 2)
                quad = np.array([[r1, -r1], [r1, r1], [r0, r0], [r0, -r0]]) @ R.T
                self._ground(quad, mat["base"] * rng.uniform(0.93, 1.07))
        cross_u = lay.cross_block()
        carriage_u = lay.cross_carriageway()
        # Cross road first: the main road and its markings are drawn over the intersection.
        if lay.cross:
            self._strip_v(-far, far, lay.uc - lay.ch, lay.uc + lay.ch, mat["asphalt"])
            for side in (-1, 1):
                u0 = lay.uc + side * lay.ch
                u1 = u0 + side * lay.sw_cross
                self._strip_v(-E, E, min(u0, u1), max(u0, u1), mat["sidewalk"],
                              blocked=[(lay.kerb_near, lay.kerb_far)])
        self._strip_u(-far, far, lay.kerb_near, lay.kerb_far, mat["asphalt"])
        self._strip_u(-E, E, lay.sw_near[1], lay.kerb_near, mat["parking"], blocked=cross_u)
        if lay.park_far:
            self._strip_u(-E, E, lay.kerb_far, lay.kerb_far + lay.park_far, mat["parking"], blocked=cross_u)
        self._strip_u(-E, E, *lay.sw_far, mat["sidewalk"], blocked=carriage_u)
        self._strip_u(-E, E, *lay.sw_near, mat["sidewalk"], blocked=carriage_u)
        self._strip_u(-E, E, lay.sw_far[1], lay.line_far, mat["verge"], blocked=cross_u)
        self._strip_u(-E, E, lay.line_near, lay.sw_near[0], mat["verge"], blocked=cross_u)
        self._build_markings(rng, mat)
        self._build_patches(rng, mat)

    def _build_markings(self, rng, mat) -> None:
        lay, E = self._layout, self.config.static_extent_m
        white, yellow = mat["white"], mat["yellow"]
        lw = 0.13
        gap_u = lay.cross_carriageway(margin=1.0)

        def line(v, dashed, color):
            if dashed:
                dash, period = rng.uniform(2.5, 4.0), rng.uniform(8.0, 12.0)
                u = -E + rng.uniform(0, period)
                while u < E:
                    if _intervals_free(u, u + dash, gap_u):
                        self._ground(_aabb(u, u + dash, v - lw / 2, v + lw / 2), color)
                    u += period
            else:
                self._strip_u(-E, E, v - lw / 2, v + lw / 2, color, blocked=gap_u)

        half_lanes = lay.median / 2 + lay.n_lanes * lay.lane_w
        if lay.median > 0.3:
            self._strip_u(-E, E, lay.vc - lay.median / 2, lay.vc + lay.median / 2, mat["median"], blocked=gap_u)
        elif rng.random() < 0.5:
            line(lay.vc - 0.12, False, yellow)
            line(lay.vc + 0.12, False, yellow)
        else:
            line(lay.vc, True, white)
        for side in (-1, 1):
            for k in range(1, lay.n_lanes):
                line(lay.vc + side * (lay.median / 2 + k * lay.lane_w), True, white)
            line(lay.vc + side * half_lanes, False, white)               # edge line (shoulder starts)
        if lay.park_far:
            line(lay.kerb_far + lay.park_far - 0.1, False, white)
        if not lay.cross:
            return
        # Zebra crossings across the main road on both sides of the intersection, stop lines,
        # and the cross road's centre line.
        stripe = rng.uniform(0.4, 0.6)
        depth = rng.uniform(2.5, 4.0)
        for side in (-1, 1):
            u0 = lay.uc + side * (lay.ch + 1.0)
            u1 = u0 + side * depth
            v = lay.kerb_near + 0.3
            while v + stripe < lay.kerb_far - 0.3:
                self._ground(_aabb(min(u0, u1), max(u0, u1), v, v + stripe), white)
                v += 2 * stripe
            us = u1 + side * 0.8
            # Stop line across the lanes that approach the junction from this side.
            v0, v1 = (lay.kerb_near, lay.vc) if side < 0 else (lay.vc, lay.kerb_far)
            self._ground(_aabb(min(us, us + side * 0.4), max(us, us + side * 0.4), v0, v1), white)
        for v0, v1 in ((-E, lay.kerb_near - 1.0), (lay.kerb_far + 1.0, E)):
            self._strip_v(v0, v1, lay.uc - lw / 2, lay.uc + lw / 2, yellow)

    def _build_patches(self, rng, mat) -> None:
        """Repairs, stains, manholes and puddles: texture that is not an object."""
        lay = self._layout
        n = rng.integers(*np.add(self.config.ground_patches, (0, 1)))
        for _ in range(n):
            u = rng.uniform(-self.config.extent_m, self.config.extent_m)
            v = rng.uniform(lay.sw_near[0], lay.sw_far[1])
            kind = rng.random()
            if kind < 0.5:
                size = rng.uniform(1.0, 6.0, 2)
                col = mat["asphalt"] * rng.uniform(0.75, 1.3)
            elif kind < 0.75:
                size = np.full(2, rng.uniform(0.6, 0.9))
                col = np.array([45.0, 48.0, 52.0])
            else:
                size = rng.uniform(0.8, 3.0, 2)
                col = mat["asphalt"] * 0.6 + np.array([30.0, 10.0, 0.0])
            self._ground(_rect(u, v, size[0], size[1], rng.uniform(0, np.pi)), col)

    def _build_traffic(self, rng) -> None:
        lay, cfg, E = self._layout, self.config, self.config.extent_m
        self._closed_lane = None
        if lay.n_lanes >= 2 and rng.random() < cfg.construction_zone_prob * 0.5:
            self._closed_lane = (int(rng.choice([-1, 1])), lay.n_lanes - 1)   # (side, outermost lane)
        self._construction_in_lane = self._closed_lane is not None
        for side in (-1, 1):                      # side -1: v < vc, travels +u (right-hand traffic)
            for k in range(lay.n_lanes):
                if self._closed_lane == (side, k):
                    continue
                v = lay.vc + side * (lay.median / 2 + (k + 0.5) * lay.lane_w)
                direction = (-side, 0.0)
                stopped = rng.random() < cfg.stopped_lane_prob
                speed = 0.0 if stopped else rng.uniform(*cfg.vehicle_speed_mps)
                gap = (1.5, 6.0) if stopped else cfg.vehicle_gap_m
                for s, size_tpl, cls in self._fill_loop(rng, 2 * E, gap, count=None):
                    u = -E + s if side < 0 else E - s          # position along +direction
                    if stopped and not _intervals_free(u - size_tpl[0][0] / 2, u + size_tpl[0][0] / 2,
                                                       lay.cross_carriageway(2.0)):
                        continue                              # a queue never blocks the junction
                    lat = rng.uniform(-0.25, 0.25) * max(lay.lane_w - size_tpl[0][1], 0.0)
                    self._add_mover(rng, cls, (0.0, v + lat), direction, -E, 2 * E, False, speed, s, PRIO_MAIN,
                                    sized=size_tpl)
        if not lay.cross:
            return
        for side in (-1, 1):                      # side +1: u > uc, travels +v
            u = lay.uc + side * lay.cross_lane_w / 2
            n = int(rng.integers(cfg.cross_vehicles_per_lane[0], cfg.cross_vehicles_per_lane[1] + 1))
            speed = rng.uniform(max(4.0, cfg.vehicle_speed_mps[0]), max(4.0, cfg.vehicle_speed_mps[1]))
            for s, size_tpl, cls in self._fill_loop(rng, 2 * E, cfg.vehicle_gap_m, count=n):
                self._add_mover(rng, cls, (u, 0.0), (0.0, side), -E, 2 * E, False, speed, s, PRIO_CROSS,
                                sized=size_tpl)

    def _fill_loop(self, rng, loop: float, gap: tuple[float, float], count: int | None):
        """Vehicles spaced around a loop of the given length: list of (centre coordinate,
        (size, template), class). With count=None, as many as fit with gaps drawn from `gap`;
        the gap from the last vehicle round to the first is at least gap[0]."""
        out: list = []
        front = 0.0                                  # front bumper of the previous vehicle
        while count is None or len(out) < count:
            cls = TRUCK if rng.random() < self.config.truck_fraction else CAR
            size_tpl = self._object(rng, cls)
            length = size_tpl[0][0]
            centre = length / 2 if not out else front + rng.uniform(*gap) + length / 2
            if centre + length / 2 + gap[0] > loop:  # would reach the first one around the loop
                break
            out.append((centre, size_tpl, cls))
            front = centre + length / 2
        phase = rng.uniform(0, loop)
        return [((c + phase) % loop, st, cls) for c, st, cls in out]

    def _build_parked(self, rng) -> None:
        lay, cfg = self._layout, self.config
        n = int(rng.integers(cfg.parked_vehicles[0], cfg.parked_vehicles[1] + 1))
        spots = []
        if lay.park_far:
            spots.append((lay.kerb_far + lay.park_far / 2, lay.park_far))
        spots.append((lay.kerb_near - 1.25, 2.5))      # the ego's own parking strip
        blocked = lay.cross_block(margin=1.0)
        # Parking lot rows on the ego side: nose-in at right angles to the road.
        lot_v0, lot_v1 = lay.sw_near[1] + 0.3, lay.kerb_near - 2.6
        if lot_v1 - lot_v0 > 4.8:
            for _ in range(int(rng.integers(0, 7))):
                cls = CAR if rng.random() < 0.9 else TRUCK
                size, tpl = self._object(rng, cls)
                yaw = (np.pi / 2 if rng.random() < 0.5 else -np.pi / 2) + rng.normal(0, 0.05)
                if rng.random() < 0.2:
                    yaw = rng.uniform(-np.pi, np.pi)
                # Half extents of the rotated footprint: it must stay inside the lot.
                ext_u = abs(size[0] / 2 * math.cos(yaw)) + abs(size[1] / 2 * math.sin(yaw))
                ext_v = abs(size[0] / 2 * math.sin(yaw)) + abs(size[1] / 2 * math.cos(yaw))
                if 2 * ext_v > lot_v1 - lot_v0:
                    continue
                u = rng.uniform(-cfg.extent_m * 0.8, cfg.extent_m * 0.8)
                v = rng.uniform(lot_v0 + ext_v, lot_v1 - ext_v)
                if not _intervals_free(u - ext_u, u + ext_u, blocked):
                    continue
                self._add_static_target(rng, cls, u, v, yaw, sized=(size, tpl))
        for _ in range(4 * n):
            if n <= 0:
                break
            v, width = spots[rng.integers(len(spots))]
            u = rng.uniform(-cfg.extent_m, cfg.extent_m)
            cls = TRUCK if rng.random() < 0.15 else CAR
            size, tpl = self._object(rng, cls)
            if size[1] > width + 0.3 or not _intervals_free(u - size[0] / 2, u + size[0] / 2, blocked):
                continue
            yaw = (0.0 if rng.random() < 0.5 else np.pi) + rng.normal(0, 0.03)
            if self._add_static_target(rng, cls, u, v + rng.uniform(-0.15, 0.15), yaw, sized=(size, tpl)):
                n -= 1

    def _build_construction(self, rng) -> None:
        lay, cfg = self._layout, self.config
        blocked = lay.cross_block(margin=2.0)
        if self._closed_lane is not None:
            side, k = self._closed_lane
            v_lane = lay.vc + side * (lay.median / 2 + (k + 0.5) * lay.lane_w)
            length = rng.uniform(12, 30)
            pieces = _split(-cfg.extent_m * 0.7, cfg.extent_m * 0.7, blocked, min_len=length)
            if not pieces:
                return
            a, b = pieces[rng.integers(len(pieces))]
            u0 = rng.uniform(a, b - length)
            n = int(rng.integers(cfg.cones_per_zone[0], cfg.cones_per_zone[1] + 1))
            inner = v_lane - side * lay.lane_w * 0.4            # cones along the edge with the open lane
            for i in range(n):
                u = u0 + length * i / max(n - 1, 1)
                taper = min(1.0, i / 2.0) if side < 0 else min(1.0, (n - 1 - i) / 2.0)
                v = v_lane + (inner - v_lane) * taper
                self._add_static_target(rng, CONE, u, v, rng.uniform(-np.pi, np.pi), margin=0.05)
            for i in range(int(rng.integers(0, 3))):
                u = u0 + length * rng.uniform(0.3, 0.9)
                self._add_static(shapes.barrier(rng, rng.uniform(2.0, 3.5)), u, v_lane + side * 0.5, 0.0)
        elif rng.random() < cfg.construction_zone_prob:
            # A work area on the ego-side parking strip or the far parking lane / shoulder.
            # (Cones stay off the shoulders: cyclists ride there.)
            far = rng.random() < 0.5
            v_edge = (lay.kerb_far + 0.4) if far else lay.kerb_near - 0.4
            length = rng.uniform(6, 18)
            u0 = rng.uniform(-cfg.extent_m * 0.8, cfg.extent_m * 0.8 - length)
            if _intervals_free(u0, u0 + length, blocked):
                n = int(rng.integers(cfg.cones_per_zone[0], cfg.cones_per_zone[1] + 1))
                for i in range(n):
                    self._add_static_target(rng, CONE, u0 + length * i / max(n - 1, 1), v_edge,
                                            rng.uniform(-np.pi, np.pi), margin=0.05)
                inside = v_edge + (1.6 if far else -1.6)
                for i in range(int(rng.integers(1, 4))):
                    self._add_static(shapes.barrier(rng, rng.uniform(2.0, 3.5)),
                                     u0 + length * rng.uniform(0.1, 0.9), inside, 0.0)
        for _ in range(int(rng.integers(cfg.loose_cones[0], cfg.loose_cones[1] + 1))):
            v = rng.choice([lay.kerb_near - 0.4, lay.kerb_far + 0.35, lay.sw_far[0] + 0.3])
            self._add_static_target(rng, CONE, rng.uniform(-cfg.extent_m, cfg.extent_m), v,
                                    rng.uniform(-np.pi, np.pi), margin=0.05)

    def _build_cyclists(self, rng) -> None:
        lay, cfg, E = self._layout, self.config, self.config.extent_m
        n = int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))
        per_side = {-1: 0, 1: 0}
        for _ in range(n):
            per_side[int(rng.choice([-1, 1]))] += 1
        for side, count in per_side.items():
            if not count:
                continue
            v = lay.vc + side * (lay.road_half - lay.shoulder / 2)
            speed = rng.uniform(*cfg.cyclist_speed_mps)          # one speed per shoulder: no overtaking
            start = rng.uniform(0, 2 * E)
            for i in range(count):
                s = start + i * 2 * E / count + rng.uniform(-3, 3)
                self._add_mover(rng, CYCLIST, (0.0, v), (-side, 0.0), -E, 2 * E, False, speed, s, PRIO_CYCLIST)

    def _walk_segments(self):
        """Sidewalk segments that cross no road: (origin, direction, s range, lateral slots), layout
        frame. Slots are lateral offsets of sub-lanes one person wide."""
        lay, E = self._layout, self.config.extent_m
        out = []

        def slots(lo, hi):
            n = int((hi - lo - 0.7) // 0.8) + 1 if hi - lo >= 0.7 else 0
            return [lo + 0.35 + 0.8 * i for i in range(n)]

        u_pieces = _split(-E, E, lay.cross_carriageway(0.6), min_len=6.0)
        # Along the main road: keep the kerb-side 0.8 m for street furniture.
        for v_slots in (slots(lay.sw_far[0] + 0.9, lay.sw_far[1] - 0.2),
                        slots(lay.sw_near[0] + 0.2, lay.sw_near[1] - 0.9)):
            for a, b in u_pieces:
                out.append(((0.0, 0.0), (1.0, 0.0), (a, b), [(0.0, v) for v in v_slots]))
        if lay.cross:
            v_pieces = _split(-E, E, [(lay.sw_near[1] - 0.5, lay.sw_far[0] + 0.5)], min_len=6.0)
            for side in (-1, 1):
                k0 = lay.uc + side * (lay.ch + 0.9)
                k1 = lay.uc + side * (lay.ch + lay.sw_cross - 0.2)
                u_slots = slots(min(k0, k1), max(k0, k1))
                for a, b in v_pieces:
                    out.append(((0.0, 0.0), (0.0, 1.0), (a, b), [(u, 0.0) for u in u_slots]))
        return out

    def _build_pedestrians(self, rng) -> None:
        lay, cfg = self._layout, self.config
        segs = [s for s in self._walk_segments() if s[3]]
        free = [(i, j) for i, s in enumerate(segs) for j in range(len(s[3]))]
        rng.shuffle(free)
        n = int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))
        for i, j in free[:n]:
            _, d, (a, b), slot_list = segs[i]
            length = min(b - a, rng.uniform(6.0, 40.0))
            a = a + rng.uniform(0.0, max(b - a - length, 0.0))
            origin = np.array(slot_list[j])
            standing = rng.random() < cfg.standing_pedestrian_prob
            speed = 0.0 if standing else rng.uniform(*cfg.pedestrian_speed_mps)
            if standing:        # a standing person faces any way
                ang = rng.uniform(-np.pi, np.pi)
                pos = origin + np.array(d) * rng.uniform(a, a + length)
                self._add_mover(rng, PEDESTRIAN, pos, (math.cos(ang), math.sin(ang)), 0.0, 1.0, False, 0.0, 0.0,
                                PRIO_PED)
            else:
                self._add_mover(rng, PEDESTRIAN, origin, d, a, 2 * length, True, speed,
                                rng.uniform(0, 2 * length), PRIO_PED)
        if lay.cross:
            # People on the zebra crossings of the cross road (they may give way to traffic).
            for _ in range(int(rng.integers(cfg.crossing_pedestrians[0], cfg.crossing_pedestrians[1] + 1))):
                v = rng.choice([lay.sw_far[0] + 1.5, lay.sw_near[1] - 1.5]) + rng.uniform(-0.5, 0.5)
                a, b = lay.uc - lay.ch - 1.0, lay.uc + lay.ch + 1.0
                self._add_mover(rng, PEDESTRIAN, (0.0, v), (1.0, 0.0), a, 2 * (b - a), True,
                                rng.uniform(*cfg.pedestrian_speed_mps), rng.uniform(0, 2 * (b - a)), PRIO_PED)

    def _build_street_furniture(self, rng) -> None:
        lay, cfg = self._layout, self.config
        SE = min(cfg.static_extent_m, 70.0)     # farther out they would be a pixel or two
        blocked = lay.cross_block(margin=1.0)
        # (kerb-side furniture line v, direction towards the road)
        lines = [(lay.sw_far[0] + 0.45, -1.0), (lay.sw_near[1] - 0.45, 1.0)]
        for v, to_road in lines:
            # Street lights, lamp arm over the road.
            u = -SE + rng.uniform(0, cfg.street_light_spacing_m[1])
            while u < SE:
                if _intervals_free(u - 1, u + 1, blocked):
                    h = rng.uniform(5.5, 9.0)
                    self._add_static(shapes.street_light(rng, h), u, v, np.pi / 2 * to_road,
                                     foot=(np.array([-0.1, -0.1]), np.array([0.1, 0.1])))
                u += rng.uniform(*cfg.street_light_spacing_m)
            # A row of trees.
            if rng.random() < cfg.tree_prob:
                u = -SE + rng.uniform(0, 12)
                while u < SE:
                    if _intervals_free(u - 2, u + 2, blocked):
                        self._add_static(shapes.tree(rng, max_radius=1.3), u, v, rng.uniform(0, np.pi / 2),
                                         foot=(np.array([-0.2, -0.2]), np.array([0.2, 0.2])))
                    u += rng.uniform(7, 16)
            # Signs, bins and bollards.
            per100 = rng.integers(cfg.furniture_per_100m[0], cfg.furniture_per_100m[1] + 1)
            for _ in range(int(per100 * 2 * SE / 100)):
                u = rng.uniform(-SE, SE)
                if not _intervals_free(u - 1, u + 1, blocked):
                    continue
                solid = shapes.sign(rng) if rng.random() < 0.35 else shapes.bin_or_bollard(rng)
                yaw = np.pi / 2 * to_road + (rng.uniform(-0.2, 0.2) if rng.random() < 0.7 else rng.uniform(0, 6.3))
                self._add_static(solid, u, v + rng.uniform(-0.1, 0.1), yaw)
        # Bollards along the cross road's kerbs.
        if lay.cross:
            for side in (-1, 1):
                u = lay.uc + side * (lay.ch + 0.45)
                for v in np.arange(-SE, SE, rng.uniform(6, 20)):
                    if _intervals_free(v - 1, v + 1, [(lay.sw_near[0] - 1, lay.sw_far[1] + 1)]) and rng.random() < 0.4:
                        self._add_static(shapes.bin_or_bollard(rng), u, v, 0.0)

    def _build_buildings(self, rng) -> None:
        lay, cfg = self._layout, self.config
        SE = cfg.static_extent_m
        blocked = lay.cross_block(margin=0.5)
        for line, out in ((lay.line_far, 1.0), (lay.line_near, -1.0)):
            u = -SE
            while u < SE:
                width = rng.uniform(8, 30)
                if rng.random() < 0.15:                       # an open lot: see farther
                    u += rng.uniform(5, 15)
                    continue
                if _intervals_free(u, u + width, blocked):
                    depth = rng.uniform(8, 20)
                    h = rng.uniform(*cfg.building_height_m)
                    self._add_static(shapes.building(rng, width, depth, h), u + width / 2,
                                     line + out * depth / 2, 0.0, margin=-0.05)
                u += width + (rng.uniform(1, 6) if rng.random() < 0.5 else 0.0)
        if not lay.cross:
            return
        # Along the cross road, beyond the main road's buildings.
        for side in (-1, 1):
            line = lay.uc + side * (lay.ch + lay.sw_cross + rng.uniform(0, 4))
            for sign_v in (-1, 1):
                v = (lay.line_far + 8) if sign_v > 0 else (lay.line_near - 8)
                while abs(v) < SE:
                    width = rng.uniform(8, 25)
                    depth = rng.uniform(8, 18)
                    h = rng.uniform(*cfg.building_height_m)
                    self._add_static(shapes.building(rng, width, depth, h), line + side * depth / 2,
                                     v + sign_v * width / 2, np.pi / 2, margin=-0.05)
                    v += sign_v * (width + rng.uniform(0, 5))


# ------------------------------------------------------------------------------------------------
# sampling

def _sample_layout(rng, cfg: WorldConfig) -> _Layout:
    if rng.random() < cfg.aligned_prob:
        phi = float(rng.choice([0.0, np.pi]) + rng.normal(0.0, 0.04))
    else:
        phi = float(rng.uniform(-np.pi, np.pi))
    ego = _aabb(*EGO_FOOTPRINT[:2], *EGO_FOOTPRINT[2:]) @ _rot2(-phi).T      # ego corners, layout frame
    eu = np.abs(ego[:, 0]).max()
    ev0, ev1 = ego[:, 1].min(), ego[:, 1].max()
    n = int(rng.integers(cfg.lanes_per_direction[0], cfg.lanes_per_direction[1] + 1))
    lw = rng.uniform(*cfg.lane_width_m)
    median = rng.uniform(0.6, 2.5) if (n >= 2 and rng.random() < 0.3) else 0.0
    shoulder = rng.uniform(1.3, 2.0)
    half = median / 2 + n * lw + shoulder
    kerb_near = ev1 + rng.uniform(0.3, 1.5)
    vc = kerb_near + half
    kerb_far = vc + half
    park_far = rng.uniform(2.2, 2.6) if rng.random() < 0.7 else 0.0
    sw_far_w, sw_near_w = rng.uniform(2.6, 4.5), rng.uniform(2.6, 4.5)
    sw_far = (kerb_far + park_far, kerb_far + park_far + sw_far_w)
    # The ego-side strip between kerb and sidewalk: a parking lane, often widened into a parking
    # lot (room for parked cars at any angle, and the side cameras see more than a wall).
    lot = rng.uniform(3.0, 14.0) if rng.random() < 0.6 else 0.0
    v_si = min(kerb_near - rng.uniform(2.3, 2.7), ev0 - rng.uniform(1.0, 3.0)) - lot
    sw_near = (v_si - sw_near_w, v_si)
    line_far = sw_far[1] + (rng.uniform(0.5, 6.0) if rng.random() < 0.7 else 0.3)
    line_near = sw_near[0] - (rng.uniform(0.5, 6.0) if rng.random() < 0.7 else 0.3)
    cross = rng.random() < cfg.cross_road_prob
    cross_lane_w = rng.uniform(2.9, 3.4)
    ch = cross_lane_w + rng.uniform(0.3, 0.9)
    sw_cross = rng.uniform(2.6, 3.8)
    uc = float(rng.choice([-1.0, 1.0])) * (eu + ch + sw_cross + rng.uniform(*cfg.cross_road_offset_m))
    return _Layout(phi=phi, vc=vc, n_lanes=n, lane_w=lw, median=median, shoulder=shoulder, kerb_near=kerb_near,
                   kerb_far=kerb_far, park_far=park_far, sw_far=sw_far, sw_near=sw_near, line_far=line_far,
                   line_near=line_near, cross=cross, uc=uc, ch=ch, cross_lane_w=cross_lane_w, sw_cross=sw_cross,
                   ego_poly=ego)


def _sample_materials(rng) -> dict[str, np.ndarray]:
    g = rng.uniform(55, 110)
    asphalt = g + rng.uniform(-5, 5, 3)
    if rng.random() < 0.2:
        sidewalk = np.array([95.0, 105.0, 150.0]) * rng.uniform(0.85, 1.15)     # red brick paving
    else:
        sidewalk = rng.uniform(135, 190) + rng.uniform(-8, 8, 3)
    base = [np.array([60.0, 120.0, 80.0]), np.array([80.0, 110.0, 135.0]), np.array([120.0, 125.0, 130.0]),
            np.array([70.0, 100.0, 90.0])][rng.integers(4)] * rng.uniform(0.8, 1.2)
    return {
        "asphalt": asphalt,
        "parking": asphalt * rng.uniform(0.9, 1.15),
        "sidewalk": sidewalk,
        "base": base,
        "verge": base * rng.uniform(0.85, 1.15),
        "median": sidewalk * rng.uniform(0.8, 1.0),
        "white": np.full(3, rng.uniform(200, 240)),
        "yellow": np.array([40.0, 185.0, 225.0]) * rng.uniform(0.85, 1.05),
    }


def _sample_lighting(rng, cfg: WorldConfig) -> Lighting:
    elev = np.radians(rng.uniform(*cfg.sun_elevation_deg))
    az = rng.uniform(-np.pi, np.pi)
    sun_dir = np.array([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)])
    overcast = rng.random() ** 2                     # mostly fair weather
    sun = rng.uniform(*cfg.sun_strength) * (1 - 0.8 * overcast)
    ambient = rng.uniform(*cfg.ambient)
    # Normalise exposure: lit ground between 0.8 and 1.1 of its albedo, like an auto-exposed camera.
    scale = rng.uniform(0.8, 1.1) / (ambient + sun * np.sin(elev))
    sun, ambient = sun * scale, ambient * scale
    clear = np.array([235.0, 185.0, 125.0]) + rng.uniform(-20, 15, 3)
    grey = np.full(3, rng.uniform(170, 225))
    sky = clear * (1 - overcast) + grey * overcast
    warm = np.clip((np.degrees(elev) - 30.0) / -15.0, 0, 1) * rng.uniform(0.3, 1.0)   # low sun: warm light
    tint = np.array([1 - 0.12 * warm, 1 - 0.02 * warm, 1 + 0.08 * warm]) * rng.uniform(0.96, 1.04, 3)
    haze = (sky * 0.4 + np.array([215.0, 215.0, 215.0]) * 0.6) * tint
    return Lighting(sun_dir=sun_dir, sun=float(sun), ambient=float(ambient), sky_color=np.clip(sky, 0, 255),
                    haze_color=np.clip(haze, 0, 255), haze_distance_m=float(rng.uniform(*cfg.haze_distance_m)),
                    tint=tint)


def _with_shadows(scene: Scene, polys: list[np.ndarray]) -> Scene:
    """Append cast-shadow polygons (ego frame, (n, 2) each) to a scene."""
    if not polys:
        return scene
    from dataclasses import replace

    verts = np.concatenate([np.concatenate([p, np.zeros((len(p), 1))], axis=1) for p in polys])
    starts = np.concatenate([[0], np.cumsum([len(p) for p in polys])]) + len(scene.shadow_vertices)
    return replace(scene, shadow_vertices=np.concatenate([scene.shadow_vertices, verts]),
                   shadow_starts=np.concatenate([scene.shadow_starts, starts[1:]]))


# ------------------------------------------------------------------------------------------------
# hand-made scenes

def scene_from_boxes(boxes, lighting: Lighting | None = None, seed: int = 0, ground: bool = True,
                     t_ns: int = 0) -> Scene:
    """A scene with exactly these boxes (drawn as their class), on a plain road, no distractors.
    Appearance is deterministic in (seed, track_id). For tests and visual checks."""
    lighting = lighting or DEFAULT_LIGHTING
    asm = SceneAssembler(lighting)
    if ground:
        asm.add_ground(_aabb(-3000, 3000, -3000, 3000), (70, 110, 90))
        asm.add_ground(_aabb(-3000, 3000, -6, 6), (85, 85, 88))
    for k, b in enumerate(boxes):
        rng = np.random.default_rng([seed & 0xFFFFFFFF, b.track_id & 0xFFFFFFFF])
        tpl = SolidTemplate(shapes.BUILDERS[b.cls](rng, b.size))
        origin = (b.center[0], b.center[1], b.center[2] - b.size[2] / 2)
        asm.add_solid(tpl, origin, b.yaw, box_index=k)
    return asm.build(t_ns, tuple(boxes))
