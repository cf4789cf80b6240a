"""A street scene in MuJoCo, rendered into the rig's cameras, with ground truth read from MuJoCo's
own state: the bridge a team with its own simulator would write against perception.client.

What is MuJoCo's and what is ours. The scene is an MJCF model built here per seed: a road with
lanes, a parking strip, a bike lane and sidewalks (textured planes, painted markings), buildings,
trees and street lights (distractors), and detection targets made of MuJoCo primitives (cars and
trucks: boxes on cylinder wheels; pedestrians and cyclists: capsules and a sphere head; cones: a
convex mesh). MuJoCo does the rest: moving targets are bodies on a slide joint with a velocity,
integrated by mj_step (no gravity, no contacts: kinematic traffic); the cameras are MuJoCo cameras
on the ego body, rendered by MuJoCo's OpenGL renderer (offscreen EGL, Mesa's software rasteriser
on a machine without a GPU: lighting, shadows, fog, skybox are its own); the ground truth is read
back from the model and the data (body poses from xpos/xmat, velocities from mj_objectVelocity,
box sizes from the geoms' bounding boxes, classes from body names), and visibility from MuJoCo's
segmentation render, counted as perception/sim/truth.py counts it for the built-in world.

Conventions. World: the main road runs along +x, z up. The ego body carries the rig: a rig
camera's T_ego_from_camera (OpenCV: x right, y down, z forward) becomes a MuJoCo camera (looks
along -z with y up) by flipping y and z. MuJoCo cameras are symmetric pinholes with square pixels,
so a rig camera must have fx = fy and its principal point at the image centre ((w-1)/2, (h-1)/2
in OpenCV's pixel-centre convention); others are refused with a ConfigError.

mujoco is imported lazily (MUJOCO_GL defaults to egl); without it MujocoUnavailable says what to
install.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception import geometry
from perception.boxes import CAR, CLASSES, CONE, CYCLIST, MIN_VISIBLE_PX, PEDESTRIAN, TRUCK
from perception.config import ConfigError, RigConfig

VISIBILITY_WIDTH = 160          # the box-index (here: segmentation) render width of perception/sim/truth.py
# Typical (length, width, height) per class: the built-in world's (perception/sim/shapes.py).
CLASS_SIZES = {CAR: (4.5, 1.85, 1.55), TRUCK: (8.0, 2.5, 3.3), PEDESTRIAN: (0.6, 0.62, 1.75),
               CYCLIST: (1.75, 0.6, 1.75), CONE: (0.42, 0.42, 0.72)}
EGO_FOOTPRINT = (-1.0, 4.5, -1.2, 1.2)     # x_min, x_max, y_min, y_max in the ego frame: nothing placed there

# RGB 0..1 palettes.
CAR_PAINT = [(.92, .92, .92), (.12, .12, .13), (.68, .68, .66), (.43, .43, .45), (.67, .14, .14), (.12, .27, .59),
             (.08, .16, .35), (.16, .43, .2), (.9, .75, .16), (.78, .7, .6), (.43, .24, .16), (.47, .08, .24)]
CARGO = [(.92, .92, .92), (.8, .8, .78), (.7, .24, .24), (.16, .4, .63), (.24, .59, .16), (.86, .67, .16), (.47, .47, .47)]
CLOTHES = [(.16, .16, .16), (.12, .27, .55), (.78, .78, .78), (.63, .24, .24), (.24, .47, .2), (.86, .51, .12),
           (.43, .24, .47), (.31, .31, .31), (.47, .59, .67), (.35, .12, .12), (.78, .39, .08), (.7, .55, .35)]
SKIN = [(.86, .69, .59), (.75, .55, .43), (.55, .37, .27), (.39, .27, .2)]
BUILDING = [(.78, .73, .67), (.59, .31, .24), (.78, .78, .78), (.55, .51, .47), (.71, .65, .59), (.67, .55, .43),
            (.47, .59, .67), (.43, .39, .35), (.86, .82, .78), (.67, .43, .31)]
LEAVES = [(.24, .43, .16), (.35, .51, .2), (.2, .35, .12), (.43, .47, .24)]
CONE_ORANGE = (.96, .4, .08)


class MujocoUnavailable(RuntimeError):
    """mujoco is not installed, or cannot render offscreen on this machine (the message says why)."""


def import_mujoco():
    """The mujoco module, with MUJOCO_GL defaulting to egl (headless)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import mujoco
    except ImportError as e:
        raise MujocoUnavailable(f"mujoco is not installed ({e}): pip install 'perception[mujoco]'; offscreen rendering "
                                f"also needs EGL and Mesa (Debian: apt-get install -y libegl1 libgl1-mesa-dri)") from e
    return mujoco


def rendering_unavailable_reason() -> str | None:
    """None when mujoco can render offscreen here; otherwise why not (for a test's skip message)."""
    try:
        mujoco = import_mujoco()
        model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><geom type='sphere' size='1'/></worldbody></mujoco>")
        renderer = mujoco.Renderer(model, 8, 8)
        try:
            renderer.update_scene(mujoco.MjData(model))
            renderer.render()
        finally:
            renderer.close()
    except Exception as e:  # noqa: BLE001  (any failure to get a GL context is a reason to skip, with its text)
        return f"MuJoCo offscreen rendering (MUJOCO_GL={os.environ.get('MUJOCO_GL')}) is unavailable: {type(e).__name__}: {e}"
    return None


@dataclass(frozen=True)
class StreetConfig:
    """Ranges a street is drawn from per seed (uniform; int ranges inclusive). Counts and sizes follow
    the built-in world's (perception/sim/world.py WorldConfig), so the two are comparable."""

    extent_m: float = 45.0                      # targets are placed within +-extent along the road
    lanes_per_direction: tuple[int, int] = (1, 2)
    lane_width_m: tuple[float, float] = (3.0, 3.6)
    sidewalk_m: tuple[float, float] = (2.5, 4.0)
    cross_road_prob: float = 0.6
    cross_road_x_m: tuple[float, float] = (10.0, 35.0)   # |x| of the cross road's centre line
    vehicle_gap_m: tuple[float, float] = (6.0, 30.0)
    vehicle_speed_mps: tuple[float, float] = (3.0, 12.0)
    truck_fraction: float = 0.2
    parked_vehicles: tuple[int, int] = (1, 6)
    pedestrians: tuple[int, int] = (3, 10)
    crossing_pedestrians: tuple[int, int] = (0, 2)
    pedestrian_speed_mps: tuple[float, float] = (0.6, 1.8)
    standing_pedestrian_prob: float = 0.25
    cyclists: tuple[int, int] = (0, 3)
    cyclist_speed_mps: tuple[float, float] = (2.5, 7.0)
    construction_zone_prob: float = 0.5
    cones_per_zone: tuple[int, int] = (4, 9)
    aligned_prob: float = 0.7                   # ego heading along the road (else any heading)
    size_jitter: float = 0.12
    shadows: bool = True
    fog: bool = True
    timestep_s: float = 0.01


@dataclass
class _Target:
    cls: int
    size: np.ndarray        # l, w, h
    xy: np.ndarray          # world position of the ground point under the centre
    yaw: float              # world heading
    speed: float            # m/s along the heading (0: static, no joint)


# ------------------------------------------------------------------------------------------------
# MJCF pieces

def _f(*v) -> str:
    return " ".join(f"{float(x):.5g}" for x in v)


def _rgba(c, a: float = 1.0) -> str:
    return _f(*c, a)


def _jitter(rng: np.random.Generator, c, amount: float = 0.1) -> tuple[float, ...]:
    c = np.asarray(c, float) * rng.uniform(1 - amount, 1 + amount) * rng.uniform(1 - amount / 2, 1 + amount / 2, 3)
    return tuple(np.clip(c, 0, 1))


def _box(pos, half, rgba, material="matte", euler=None) -> str:
    e = f' euler="{_f(*euler)}"' if euler is not None else ""
    return f'<geom type="box" pos="{_f(*pos)}" size="{_f(*half)}" rgba="{rgba}" material="{material}"{e}/>'


def _wheel(x, y, r, half_w, rgba="0.08 0.08 0.09 1") -> str:
    return f'<geom type="cylinder" pos="{_f(x, y, r)}" size="{_f(r, half_w)}" euler="90 0 0" rgba="{rgba}" material="matte"/>'


def _car_geoms(rng, l, w, h) -> list[str]:
    paint = _rgba(_jitter(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))]))
    r = min(0.34, 0.23 * h)
    clear, belt = 0.55 * r, rng.uniform(0.56, 0.64) * h
    cab_f, cab_b = rng.uniform(0.1, 0.2) * l, -rng.uniform(0.28, 0.36) * l
    g = [_box((0, 0, (clear + belt) / 2), (l / 2, 0.49 * w, (belt - clear) / 2), paint, "paint"),
         # cabin: dark glass under a painted roof
         _box(((cab_f + cab_b) / 2, 0, (belt + h - 0.06) / 2), ((cab_f - cab_b) / 2, 0.42 * w, (h - 0.06 - belt) / 2),
              "0.12 0.14 0.17 1", "glass"),
         _box(((cab_f + cab_b) / 2, 0, h - 0.03), ((cab_f - cab_b) / 2 - 0.05, 0.4 * w, 0.03), paint, "paint"),
         _box((l / 2 - 0.01, 0.36 * w, belt - 0.12), (0.012, 0.1 * w, 0.05), "1 0.95 0.8 1", "lamp"),
         _box((l / 2 - 0.01, -0.36 * w, belt - 0.12), (0.012, 0.1 * w, 0.05), "1 0.95 0.8 1", "lamp"),
         _box((-l / 2 + 0.01, 0.38 * w, belt - 0.1), (0.012, 0.09 * w, 0.05), "0.8 0.05 0.05 1", "lamp"),
         _box((-l / 2 + 0.01, -0.38 * w, belt - 0.1), (0.012, 0.09 * w, 0.05), "0.8 0.05 0.05 1", "lamp")]
    for x in (0.31 * l, -0.29 * l):
        for s in (1, -1):
            g.append(_wheel(x, s * (w / 2 - 0.11), r, 0.11))
    return g


def _truck_geoms(rng, l, w, h) -> list[str]:
    cab = _rgba(_jitter(rng, CAR_PAINT[rng.integers(len(CAR_PAINT))]))
    cargo = _rgba(_jitter(rng, CARGO[rng.integers(len(CARGO))]))
    r = 0.5
    cab_len = min(2.3, 0.3 * l)
    x_cab = l / 2 - cab_len
    cab_top = rng.uniform(0.72, 0.85) * h
    g = [_box((x_cab + cab_len / 2, 0, (0.6 * r + 0.55 * h) / 2), (cab_len / 2, 0.48 * w, (0.55 * h - 0.6 * r) / 2), cab, "paint"),
         _box((x_cab + cab_len / 2 - 0.05, 0, (0.55 * h + cab_top) / 2), (cab_len / 2 - 0.05, 0.46 * w, (cab_top - 0.55 * h) / 2),
              "0.12 0.14 0.17 1", "glass"),
         _box(((-l / 2 + x_cab - 0.15) / 2, 0, (1.3 * r + h) / 2), ((x_cab - 0.15 + l / 2) / 2, w / 2, (h - 1.3 * r) / 2), cargo),
         _box((-l / 2 + 0.01, 0, 1.3 * r - 0.1), (0.012, 0.45 * w, 0.08), "0.8 0.05 0.05 1", "lamp")]
    for x in (l / 2 - 0.55 * cab_len, -l / 2 + 0.25 * l, -l / 2 + 0.12 * l):
        for s in (1, -1):
            g.append(_wheel(x, s * (w / 2 - 0.16), r, 0.16))
    return g


def _pedestrian_geoms(rng, l, w, h) -> list[str]:
    trousers = _rgba(_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2))
    shirt = _rgba(_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2))
    skin = _rgba(_jitter(rng, SKIN[rng.integers(len(SKIN))]))
    hip, shoulder = 0.5 * h, 0.81 * h
    head_r = 0.065 * h
    leg_r, arm_r = 0.065, 0.045
    stride = l / 2 - leg_r                  # feet at +-stride along the heading: the length is the stride
    g = []
    for s in (1, -1):                       # legs: capsules from the hip to a foot ahead / behind
        foot = np.array([s * stride, s * 0.05, leg_r])
        top = np.array([0.0, s * 0.08, hip])
        g.append(f'<geom type="capsule" fromto="{_f(*foot, *top)}" size="{leg_r}" rgba="{trousers}" material="matte"/>')
    g.append(f'<geom type="capsule" fromto="{_f(0, 0, hip + 0.1, 0, 0, shoulder - 0.06)}" size="{0.14 * w / 0.62 * 1.1:.4g}" '
             f'rgba="{shirt}" material="matte"/>')
    for s in (1, -1):                       # arms hanging slightly out: the width is the shoulders' span
        y0, y1 = s * (w / 2 - arm_r - 0.06), s * (w / 2 - arm_r)
        g.append(f'<geom type="capsule" fromto="{_f(0, y0, shoulder - 0.04, -s * 0.04, y1, hip + 0.02)}" size="{arm_r}" '
                 f'rgba="{shirt}" material="matte"/>')
    g.append(f'<geom type="sphere" pos="{_f(0.01, 0, h - head_r)}" size="{head_r:.4g}" rgba="{skin}" material="matte"/>')
    return g


def _cyclist_geoms(rng, l, w, h) -> list[str]:
    bike = _rgba(_jitter(rng, [(.1, .1, .1), (.55, .1, .1), (.1, .2, .5), (.4, .4, .4)][rng.integers(4)]))
    jersey = _rgba(_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2))
    legs = _rgba(_jitter(rng, CLOTHES[rng.integers(len(CLOTHES))], 0.2))
    skin = _rgba(_jitter(rng, SKIN[rng.integers(len(SKIN))]))
    r = min(0.34, l / 5)
    seat = 0.5 * h
    head_r = 0.06 * h
    g = [f'<geom type="cylinder" pos="{_f(x, 0, r)}" size="{_f(r, 0.03)}" euler="90 0 0" rgba="0.07 0.07 0.07 1" material="matte"/>'
         for x in (l / 2 - r, -l / 2 + r)]
    g.append(f'<geom type="capsule" fromto="{_f(-l / 2 + r, 0, r, 0.05, 0, seat)}" size="0.025" rgba="{bike}" material="paint"/>')
    g.append(f'<geom type="capsule" fromto="{_f(0.05, 0, seat, l / 2 - r, 0, r)}" size="0.025" rgba="{bike}" material="paint"/>')
    g.append(f'<geom type="capsule" fromto="{_f(-0.05, 0.1, seat, 0.15, 0.1, 0.2)}" size="0.05" rgba="{legs}" material="matte"/>')
    g.append(f'<geom type="capsule" fromto="{_f(-0.05, -0.1, seat, 0.1, -0.1, 0.3)}" size="0.05" rgba="{legs}" material="matte"/>')
    g.append(f'<geom type="capsule" fromto="{_f(-0.08, 0, seat + 0.08, 0.12, 0, 0.84 * h)}" size="{w / 2 - 0.12:.3g}" '
             f'rgba="{jersey}" material="matte"/>')
    for s in (1, -1):
        g.append(f'<geom type="capsule" fromto="{_f(0.14, s * (w / 2 - 0.05), 0.8 * h, l / 2 - r - 0.05, s * (w / 2 - 0.05), 0.62 * h)}" '
                 f'size="0.04" rgba="{jersey}" material="matte"/>')
    g.append(f'<geom type="sphere" pos="{_f(0.14, 0, h - head_r)}" size="{head_r:.3g}" rgba="{skin}" material="matte"/>')
    return g


def _cone_geoms(rng, l, w, h, mesh: str) -> list[str]:
    orange = _rgba(_jitter(rng, CONE_ORANGE, 0.08))
    return [_box((0, 0, 0.025), (l / 2, w / 2, 0.025), "0.15 0.15 0.15 1"),
            f'<geom type="mesh" mesh="{mesh}" rgba="{orange}" material="matte"/>',
            f'<geom type="cylinder" pos="{_f(0, 0, 0.55 * h)}" size="{_f(0.2 * l + 0.01, 0.07 * h)}" rgba="0.95 0.95 0.95 1" material="lamp"/>']


def _cone_mesh(name: str, l, h, n: int = 16) -> str:
    """A cone frustum from the base plate to a small tip, as a convex mesh (MuJoCo takes the hull)."""
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    base = np.stack([0.36 * l * np.cos(a), 0.36 * l * np.sin(a), np.full(n, 0.05)], 1)
    tip = np.stack([0.05 * l * np.cos(a), 0.05 * l * np.sin(a), np.full(n, h)], 1)
    return f'<mesh name="{name}" vertex="{_f(*np.concatenate([base, tip]).ravel())}"/>'


# ------------------------------------------------------------------------------------------------
# layout

@dataclass
class _Layout:
    lane_w: float
    lanes: int                    # per direction
    park_w: float
    bike_w: float
    walk_w: float
    cross_x: float | None
    cross_hw: float               # half-width of the cross road's carriageway

    @property
    def road_hw(self) -> float:   # centre line to the outer edge of the lanes
        return self.lanes * self.lane_w

    @property
    def curb(self) -> float:      # centre line to the sidewalk
        return self.road_hw + self.bike_w + self.park_w


def _lane_fill(rng, cfg: StreetConfig, lo: float, hi: float, gap) -> list[tuple[float, int, np.ndarray]]:
    """Vehicles along [lo, hi]: (centre along the lane, class, size), gaps drawn from `gap`."""
    out: list[tuple[float, int, np.ndarray]] = []
    x = lo + rng.uniform(0, gap[1])
    while True:
        cls = TRUCK if rng.random() < cfg.truck_fraction else CAR
        size = _size(rng, cls, cfg)
        if x + size[0] > hi:
            return out
        out.append((x + size[0] / 2, cls, size))
        x += size[0] + rng.uniform(*gap)


def _size(rng, cls: int, cfg: StreetConfig) -> np.ndarray:
    s = np.array(CLASS_SIZES[cls]) * rng.uniform(1 - cfg.size_jitter, 1 + cfg.size_jitter, 3)
    if cls == CONE:
        s[1] = s[0]
    return s


class _Placer:
    """Keeps targets out of the ego's footprint and out of each other (footprint circles)."""

    def __init__(self, ego_xy, ego_yaw):
        self.ego_xy, self.ego_yaw = np.asarray(ego_xy, float), ego_yaw
        self.placed: list[tuple[np.ndarray, float]] = []

    def free(self, xy, size, margin=0.3) -> bool:
        xy = np.asarray(xy, float)
        r = 0.5 * math.hypot(size[0], size[1])
        c, s = math.cos(-self.ego_yaw), math.sin(-self.ego_yaw)
        d = xy - self.ego_xy
        ex, ey = c * d[0] - s * d[1], s * d[0] + c * d[1]
        x0, x1, y0, y1 = EGO_FOOTPRINT
        if x0 - r - margin < ex < x1 + r + margin and y0 - r - margin < ey < y1 + r + margin:
            return False
        return all(np.linalg.norm(xy - p) > r + q + margin for p, q in self.placed)

    def add(self, xy, size) -> None:
        self.placed.append((np.asarray(xy, float), 0.5 * math.hypot(size[0], size[1])))


def _layout_targets(rng, cfg: StreetConfig, lay: _Layout, ego_xy, ego_yaw) -> list[_Target]:
    E = cfg.extent_m
    place = _Placer(ego_xy, ego_yaw)
    targets: list[_Target] = []

    def put(cls, size, xy, yaw, speed=0.0) -> bool:
        if not place.free(xy, size):
            return False
        place.add(xy, size)
        targets.append(_Target(cls, size, np.asarray(xy, float), float(yaw), float(speed)))
        return True

    # A construction zone closes a stretch of one lane with a taper of cones.
    zone = None
    if rng.random() < cfg.construction_zone_prob:
        side = rng.choice([-1, 1])
        lane = int(rng.integers(lay.lanes))
        a = rng.uniform(-E + 5, E - 20)
        n = int(rng.integers(cfg.cones_per_zone[0], cfg.cones_per_zone[1] + 1))
        zone = (side, lane, a, a + 2.5 * n)
        for k in range(n):
            y_in = (lane + 0.15 + 0.7 * min(1.0, k / 3)) * lay.lane_w
            size = _size(rng, CONE, cfg)
            put(CONE, size, (a + 2.5 * k, side * y_in), rng.uniform(-np.pi, np.pi))
    # Moving traffic: right-hand, lanes with y < 0 drive towards +x.
    for side in (-1, 1):
        heading = 0.0 if side < 0 else np.pi
        for lane in range(lay.lanes):
            y = side * (lane + 0.5) * lay.lane_w
            stopped = rng.random() < 0.15
            speed = 0.0 if stopped else rng.uniform(*cfg.vehicle_speed_mps)
            for x, cls, size in _lane_fill(rng, cfg, -E, E, cfg.vehicle_gap_m):
                if zone and zone[0] == side and zone[1] == lane and zone[2] - 12 < x < zone[3] + 12:
                    continue
                if lay.cross_x is not None and abs(x - lay.cross_x) < lay.cross_hw + size[0] / 2 and not stopped:
                    continue                # keep the junction itself clear at t = 0
                put(cls, size, (x, y + rng.uniform(-0.2, 0.2)), heading + rng.normal(0, 0.01), speed)
    # Parked vehicles on the parking strips.
    n_park = int(rng.integers(cfg.parked_vehicles[0], cfg.parked_vehicles[1] + 1))
    for _ in range(n_park * 4):
        if n_park == 0:
            break
        side = rng.choice([-1, 1])
        cls = TRUCK if rng.random() < cfg.truck_fraction / 2 else CAR
        size = _size(rng, cls, cfg)
        x = rng.uniform(-E, E)
        if lay.cross_x is not None and abs(x - lay.cross_x) < lay.cross_hw + 3 + size[0] / 2:
            continue
        y = side * (lay.curb - lay.park_w / 2)
        yaw = (0.0 if side < 0 else np.pi) + rng.choice([0, np.pi], p=[0.8, 0.2])
        if put(cls, size, (x, y), yaw + rng.normal(0, 0.03)):
            n_park -= 1
    # Cyclists in the bike lanes, riding with the traffic.
    for _ in range(int(rng.integers(cfg.cyclists[0], cfg.cyclists[1] + 1))):
        side = rng.choice([-1, 1])
        size = _size(rng, CYCLIST, cfg)
        for _try in range(5):
            if put(CYCLIST, size, (rng.uniform(-E, E), side * (lay.road_hw + lay.bike_w / 2)),
                   (0.0 if side < 0 else np.pi) + rng.normal(0, 0.03), rng.uniform(*cfg.cyclist_speed_mps)):
                break
    # Pedestrians on the sidewalks (walking along them or standing), and some on a crossing.
    for _ in range(int(rng.integers(cfg.pedestrians[0], cfg.pedestrians[1] + 1))):
        size = _size(rng, PEDESTRIAN, cfg)
        for _try in range(5):
            side = rng.choice([-1, 1])
            xy = (rng.uniform(-E, E), side * (lay.curb + rng.uniform(0.4, lay.walk_w - 0.4)))
            if rng.random() < cfg.standing_pedestrian_prob:
                ok = put(PEDESTRIAN, size, xy, rng.uniform(-np.pi, np.pi))
            else:
                ok = put(PEDESTRIAN, size, xy, rng.choice([0.0, np.pi]) + rng.normal(0, 0.05),
                         rng.uniform(*cfg.pedestrian_speed_mps))
            if ok:
                break
    n_cross = int(rng.integers(cfg.crossing_pedestrians[0], cfg.crossing_pedestrians[1] + 1))
    for _ in range(n_cross):
        size = _size(rng, PEDESTRIAN, cfg)
        x = (lay.cross_x - lay.cross_hw - 1.5) if lay.cross_x is not None else rng.uniform(-E / 2, E / 2)
        y = rng.uniform(-lay.curb, lay.curb)
        put(PEDESTRIAN, size, (x + rng.uniform(-1, 1), y), rng.choice([np.pi / 2, -np.pi / 2]),
            rng.uniform(*cfg.pedestrian_speed_mps))
    return targets


# ------------------------------------------------------------------------------------------------
# the world

def _camera_quat(mujoco, R_ego_from_cv: np.ndarray) -> np.ndarray:
    """Quaternion (w, x, y, z) of a MuJoCo camera (x right, y up, looking along -z) in the ego body,
    from the OpenCV camera's rotation (x right, y down, z forward)."""
    R = R_ego_from_cv @ np.diag([1.0, -1.0, -1.0])
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).ravel())
    return q


def _check_camera(cam) -> float:
    """fovy in degrees of a rig camera MuJoCo can render exactly; ConfigError otherwise."""
    K = np.asarray(cam.K, float)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if abs(fx - fy) > 1e-6 * fx or abs(cx - (cam.width - 1) / 2) > 1e-3 or abs(cy - (cam.height - 1) / 2) > 1e-3 \
            or abs(K[0, 1]) > 1e-9 or any(cam.distortion):
        raise ConfigError(f"camera {cam.name!r}: MuJoCo renders symmetric pinholes with square pixels; K must have fx = fy, "
                          f"no skew and the principal point at ((w-1)/2, (h-1)/2), and no distortion (got fx={fx:.3f} "
                          f"fy={fy:.3f} cx={cx:.3f} cy={cy:.3f}, distortion {tuple(cam.distortion)})")
    return math.degrees(2 * math.atan((cam.height / 2) / fy))


def camera_element(mujoco, cam) -> str:
    """The MJCF <camera> of a rig camera, for a body whose frame is the ego frame."""
    T = np.asarray(cam.T_ego_from_camera, float)
    q = _camera_quat(mujoco, T[:3, :3])
    return f'<camera name="{cam.name}" pos="{_f(*T[:3, 3])}" quat="{_f(*q)}" fovy="{_check_camera(cam):.9f}"/>'


class MujocoStreet:
    """One street, built and simulated in MuJoCo, with the rig's cameras on the ego body.

        street = MujocoStreet(seed=3, rig=load_rig())
        images = street.render()              # {camera name: BGR uint8 H x W x 3}
        truth = street.ground_truth(stamp_ns) # perception.v1.GroundTruth, ego frame, visible pixels
        street.advance(0.1)                   # mj_step for 0.1 s of simulated time
    """

    def __init__(self, seed: int, rig: RigConfig, config: StreetConfig | None = None):
        self.mujoco = mujoco = import_mujoco()
        self.seed, self.rig, self.config = int(seed), rig, config or StreetConfig()
        for c in rig.cameras:
            _check_camera(c)            # refused before anything is built
        rng = np.random.default_rng([0x6D756A6F, self.seed])
        self.xml, self._targets = self._build_xml(rng)
        self.model = mujoco.MjModel.from_xml_string(self.xml)
        self.data = mujoco.MjData(self.model)
        m, d = self.model, self.data
        self._ego_id = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "ego")
        self._body_ids = np.array([mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, f"{CLASSES[t.cls]}_{k}")
                                   for k, t in enumerate(self._targets)], dtype=np.int64)
        for k, t in enumerate(self._targets):
            if t.speed:
                j = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, f"drive_{k}")
                d.qvel[m.jnt_dofadr[j]] = t.speed
        mujoco.mj_forward(m, d)
        self._classes, self._box_lo, self._box_hi = self._read_target_boxes()
        # geom id -> target index (-1: not a target), for the segmentation counts
        self._geom_target = np.full(m.ngeom + 1, -1, np.int64)
        body_target = {int(b): k for k, b in enumerate(self._body_ids)}
        for g in range(m.ngeom):
            self._geom_target[g] = body_target.get(int(m.geom_bodyid[g]), -1)
        self._renderers: dict[tuple[int, int, bool], Any] = {}
        self._option = mujoco.MjvOption()

    # --- the scene --------------------------------------------------------------------------------

    def _build_xml(self, rng) -> tuple[str, list[_Target]]:
        cfg = self.config
        lanes = int(rng.integers(cfg.lanes_per_direction[0], cfg.lanes_per_direction[1] + 1))
        lane_w = float(rng.uniform(*cfg.lane_width_m))
        cross_x = None
        if rng.random() < cfg.cross_road_prob:
            cross_x = float(rng.choice([-1, 1]) * rng.uniform(*cfg.cross_road_x_m))
        lay = _Layout(lane_w=lane_w, lanes=lanes, park_w=2.3, bike_w=1.6, walk_w=float(rng.uniform(*cfg.sidewalk_m)),
                      cross_x=cross_x, cross_hw=lane_w)
        aligned = rng.random() < cfg.aligned_prob
        ego_yaw = float(rng.normal(0, 0.03)) if aligned else float(rng.uniform(-np.pi, np.pi))
        ego_xy = np.array([rng.uniform(-3, 3), -0.5 * lane_w + rng.uniform(-0.2, 0.2)])
        targets = _layout_targets(rng, cfg, lay, ego_xy, ego_yaw)

        sun_el = math.radians(rng.uniform(20, 70))
        sun_az = rng.uniform(-np.pi, np.pi)
        sun_dir = -np.array([math.cos(sun_el) * math.cos(sun_az), math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el)])
        sun = rng.uniform(0.45, 0.85)
        amb = rng.uniform(0.25, 0.45)
        sky_top = _jitter(rng, (.45, .62, .86), 0.1)
        sky_low = _jitter(rng, (.85, .87, .9), 0.05)
        width = max(c.width for c in self.rig.cameras)
        height = max(c.height for c in self.rig.cameras)
        assets = [
            f'<texture type="skybox" builtin="gradient" rgb1="{_f(*sky_top)}" rgb2="{_f(*sky_low)}" width="256" height="256"/>',
            '<texture name="asphalt" type="2d" builtin="flat" rgb1="0.3 0.3 0.31" mark="random" random="0.25" '
            'markrgb="0.38 0.38 0.38" width="512" height="512"/>',
            '<texture name="paving" type="2d" builtin="checker" rgb1="0.62 0.6 0.57" rgb2="0.56 0.55 0.53" mark="edge" '
            'markrgb="0.45 0.45 0.45" width="256" height="256"/>',
            f'<texture name="ground" type="2d" builtin="flat" rgb1="{_f(*_jitter(rng, (.42, .46, .32), 0.15))}" mark="random" '
            'random="0.3" markrgb="0.35 0.33 0.25" width="512" height="512"/>',
            '<material name="asphalt" texture="asphalt" texrepeat="30 30" texuniform="true" specular="0.05" shininess="0.05"/>',
            '<material name="paving" texture="paving" texrepeat="1 1" texuniform="true" specular="0.05"/>',
            '<material name="ground" texture="ground" texrepeat="40 40" texuniform="true" specular="0.02"/>',
            '<material name="matte" specular="0.1" shininess="0.1"/>',
            '<material name="paint" specular="0.5" shininess="0.6" reflectance="0.05"/>',
            '<material name="glass" specular="0.8" shininess="0.9" reflectance="0.15"/>',
            '<material name="lamp" specular="0.3" emission="0.3"/>',
            '<material name="marking" specular="0.1" emission="0.1"/>',
        ]
        world = [f'<light name="sun" directional="true" castshadow="{str(cfg.shadows).lower()}" dir="{_f(*sun_dir)}" '
                 f'diffuse="{_f(sun, sun, sun * 0.95)}" specular="0.2 0.2 0.2" pos="0 0 50"/>',
                 '<geom name="ground" type="plane" size="300 300 1" material="ground"/>']
        world += self._road_geoms(rng, lay)
        world += self._distractor_geoms(rng, lay)
        for k, t in enumerate(targets):
            l, w, h = t.size
            if t.cls == CONE:
                mesh = f"cone_mesh_{k}"
                assets.append(_cone_mesh(mesh, l, h))
                geoms = _cone_geoms(rng, l, w, h, mesh)
            else:
                geoms = {CAR: _car_geoms, TRUCK: _truck_geoms, PEDESTRIAN: _pedestrian_geoms, CYCLIST: _cyclist_geoms}[t.cls](rng, l, w, h)
            joint = f'<joint name="drive_{k}" type="slide" axis="1 0 0" damping="0"/>' if t.speed else ""
            world.append(f'<body name="{CLASSES[t.cls]}_{k}" pos="{_f(t.xy[0], t.xy[1], 0)}" euler="0 0 {math.degrees(t.yaw):.6f}">'
                         f'{joint}{"".join(geoms)}</body>')
        cams = [camera_element(self.mujoco, c) for c in self.rig.cameras]
        world.append(f'<body name="ego" pos="{_f(ego_xy[0], ego_xy[1], 0)}" euler="0 0 {math.degrees(ego_yaw):.6f}">'
                     f'{"".join(cams)}</body>')
        fog = (f'<map znear="0.001" zfar="6" fogstart="{rng.uniform(1.5, 4):.3f}" fogend="{rng.uniform(6, 9):.3f}" '
               f'shadowclip="0.8"/>') if cfg.fog else '<map znear="0.001" zfar="6" shadowclip="0.8"/>'
        xml = f"""<mujoco model="street_{self.seed}">
  <compiler angle="degree"/>
  <option timestep="{cfg.timestep_s}" gravity="0 0 0" integrator="Euler"><flag contact="disable"/></option>
  <statistic extent="100" center="0 0 0"/>
  <visual>
    <global offwidth="{max(width, VISIBILITY_WIDTH)}" offheight="{max(height, 90)}"/>
    <quality shadowsize="2048" offsamples="0"/>
    <headlight ambient="{_f(amb, amb, amb)}" diffuse="0.05 0.05 0.05" specular="0 0 0"/>
    {fog}
    <rgba fog="{_f(*sky_low, 1)}" haze="{_f(*sky_low, 1)}"/>
  </visual>
  <default><geom contype="0" conaffinity="0" density="300"/></default>
  <asset>{"".join(assets)}</asset>
  <worldbody>{"".join(world)}</worldbody>
</mujoco>"""
        return xml, targets

    def _road_geoms(self, rng, lay: _Layout) -> list[str]:
        L = 300.0
        g = [f'<geom type="plane" pos="0 0 0.01" size="{_f(L, lay.curb, 1)}" material="asphalt"/>']
        for s in (1, -1):                                   # sidewalks
            g.append(f'<geom type="plane" pos="{_f(0, s * (lay.curb + lay.walk_w / 2), 0.03)}" '
                     f'size="{_f(L, lay.walk_w / 2, 1)}" material="paving"/>')
        if lay.cross_x is not None:
            g.append(f'<geom type="plane" pos="{_f(lay.cross_x, 0, 0.04)}" size="{_f(lay.cross_hw, L, 1)}" material="asphalt"/>')
            for k in range(int(lay.curb * 2 / 1.0)):         # zebra crossing beside the junction
                y = -lay.curb + 0.5 + k * 1.0
                x = lay.cross_x - lay.cross_hw - 1.5
                g.append(f'<geom type="plane" pos="{_f(x, y, 0.045)}" size="{_f(1.4, 0.25, 1)}" rgba="0.9 0.9 0.88 1" material="marking"/>')
        white = "0.88 0.88 0.85 1"

        def line(y, dashed, rgba=white, width=0.12):
            if dashed:
                for x in np.arange(-90, 90, 9.0):
                    if lay.cross_x is None or abs(x + 1.5 - lay.cross_x) > lay.cross_hw + 3:
                        g.append(f'<geom type="plane" pos="{_f(x + 1.5, y, 0.02)}" size="{_f(1.5, width / 2, 1)}" '
                                 f'rgba="{rgba}" material="marking"/>')
            else:
                g.append(f'<geom type="plane" pos="{_f(0, y, 0.02)}" size="{_f(L, width / 2, 1)}" rgba="{rgba}" material="marking"/>')

        line(0.0, False, "0.9 0.75 0.2 1", 0.15)
        for s in (1, -1):
            for k in range(1, lay.lanes):
                line(s * k * lay.lane_w, True)
            line(s * lay.road_hw, False)
            line(s * (lay.road_hw + lay.bike_w), True, width=0.1)
        return g

    def _distractor_geoms(self, rng, lay: _Layout) -> list[str]:
        g = []
        for s in (1, -1):
            # buildings behind the sidewalk, with gaps and a gap for the cross road
            x = -120.0
            while x < 120:
                length = rng.uniform(8, 28)
                if lay.cross_x is None or (x + length < lay.cross_x - lay.cross_hw - 4 or x > lay.cross_x + lay.cross_hw + 4):
                    depth, h = rng.uniform(8, 16), rng.uniform(4, 22)
                    y = s * (lay.curb + lay.walk_w + rng.uniform(0.5, 3) + depth / 2)
                    col = _rgba(_jitter(rng, BUILDING[rng.integers(len(BUILDING))], 0.12))
                    g.append(_box((x + length / 2, y, h / 2), (length / 2, depth / 2, h / 2), col))
                    if rng.random() < 0.5:      # a dark band of shop windows
                        g.append(_box((x + length / 2, y - s * (depth / 2 + 0.02), 1.6), (length / 2 - 0.5, 0.02, 1.0),
                                      "0.15 0.17 0.2 1", "glass"))
                x += length + rng.uniform(0, 5)
            # trees and street lights at the outer edge of the sidewalk
            if rng.random() < 0.6:
                for x in np.arange(-100 + rng.uniform(0, 10), 100, rng.uniform(9, 16)):
                    if lay.cross_x is not None and abs(x - lay.cross_x) < lay.cross_hw + 3:
                        continue
                    y = s * (lay.curb + lay.walk_w - 0.6)
                    trunk = rng.uniform(2.3, 3.2)
                    r = rng.uniform(1.2, 2.2)
                    leaves = _rgba(_jitter(rng, LEAVES[rng.integers(len(LEAVES))], 0.15))
                    g.append(f'<geom type="cylinder" pos="{_f(x, y, trunk / 2)}" size="{_f(0.15, trunk / 2)}" '
                             'rgba="0.3 0.22 0.15 1" material="matte"/>')
                    g.append(f'<geom type="ellipsoid" pos="{_f(x, y, trunk + r)}" size="{_f(r, r, r * 1.2)}" rgba="{leaves}" material="matte"/>')
            for x in np.arange(-100 + rng.uniform(0, 20), 100, rng.uniform(20, 35)):
                y = s * (lay.curb + 0.3)
                h = rng.uniform(6, 8)
                g.append(f'<geom type="cylinder" pos="{_f(x, y, h / 2)}" size="{_f(0.09, h / 2)}" rgba="0.45 0.46 0.48 1" material="paint"/>')
                g.append(_box((x, y - s * 0.8, h), (0.12, 0.8, 0.06), "0.45 0.46 0.48 1", "paint"))
        return g

    def _read_target_boxes(self):
        """Each target's class (from its body name) and its tight box in its body frame, from its
        geoms' bounding boxes (geom_aabb in the geom frame, placed by geom_pos/geom_quat)."""
        m, mujoco = self.model, self.mujoco
        classes, lo, hi = [], [], []
        for b in self._body_ids:
            name = mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_BODY, int(b))
            cls_name = name.rsplit("_", 1)[0]
            classes.append(CLASSES.index(cls_name))
            geoms = np.flatnonzero(m.geom_bodyid == b)
            l_all, h_all = [], []
            for g in geoms:
                R = np.zeros(9)
                mujoco.mju_quat2Mat(R, m.geom_quat[g])
                R = R.reshape(3, 3)
                c = m.geom_pos[g] + R @ m.geom_aabb[g, :3]
                e = np.abs(R) @ m.geom_aabb[g, 3:]
                l_all.append(c - e)
                h_all.append(c + e)
            lo.append(np.min(l_all, axis=0))
            hi.append(np.max(h_all, axis=0))
        return np.array(classes, np.int64), np.array(lo).reshape(-1, 3), np.array(hi).reshape(-1, 3)

    # --- simulation -------------------------------------------------------------------------------

    @property
    def time_s(self) -> float:
        return float(self.data.time)

    def advance(self, dt_s: float) -> None:
        """Simulate dt_s seconds (whole MuJoCo time steps). mj_step leaves poses (xpos, xmat) as they
        were before its last integration; mj_forward brings them, and so the truth and the
        renders, to the new state."""
        n = int(round(dt_s / self.model.opt.timestep))
        for _ in range(n):
            self.mujoco.mj_step(self.model, self.data)
        self.mujoco.mj_forward(self.model, self.data)

    def T_world_from_ego(self) -> np.ndarray:
        d = self.data
        return geometry.make_transform(d.xmat[self._ego_id].reshape(3, 3), d.xpos[self._ego_id])

    def boxes(self):
        """Every target as a perception.sim.scene.Box3D in the ego frame (centre, size, yaw, velocity
        over ground in the ego frame, track id = target index), read from MuJoCo's data."""
        from perception.sim.scene import Box3D

        m, d, mujoco = self.model, self.data, self.mujoco
        T_ego_world = geometry.invert_transform(self.T_world_from_ego())
        R_ew = T_ego_world[:3, :3]
        out = []
        vel = np.zeros(6)
        for k, b in enumerate(self._body_ids):
            R = d.xmat[b].reshape(3, 3)
            c_body = (self._box_lo[k] + self._box_hi[k]) / 2
            c_world = d.xpos[b] + R @ c_body
            c_ego = R_ew @ c_world + T_ego_world[:3, 3]
            R_eb = R_ew @ R
            mujoco.mj_objectVelocity(m, d, mujoco.mjtObj.mjOBJ_BODY, int(b), vel, 0)   # [angular, linear], world frame
            v_ego = R_ew @ vel[3:]
            out.append(Box3D(cls=int(self._classes[k]), center=c_ego, size=self._box_hi[k] - self._box_lo[k],
                             yaw=float(math.atan2(R_eb[1, 0], R_eb[0, 0])), velocity=v_ego[:2], track_id=k))
        return out

    # --- rendering --------------------------------------------------------------------------------

    def _renderer(self, width: int, height: int, segmentation: bool = False):
        key = (width, height, segmentation)
        r = self._renderers.get(key)
        if r is None:
            try:
                r = self.mujoco.Renderer(self.model, height, width)
            except Exception as e:  # noqa: BLE001
                raise MujocoUnavailable(f"cannot create a MuJoCo renderer (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {e}") from e
            if segmentation:
                r.enable_segmentation_rendering()
            else:
                r.scene.flags[self.mujoco.mjtRndFlag.mjRND_FOG] = bool(self.config.fog)
                r.scene.flags[self.mujoco.mjtRndFlag.mjRND_SHADOW] = bool(self.config.shadows)
            self._renderers[key] = r
        return r

    def render_camera(self, name: str) -> np.ndarray:
        """One camera's view, BGR uint8 at the rig's size for that camera."""
        cam = self.rig.camera(name)
        r = self._renderer(cam.width, cam.height)
        r.update_scene(self.data, camera=name, scene_option=self._option)
        return np.ascontiguousarray(r.render()[:, :, ::-1])

    def render(self) -> dict[str, np.ndarray]:
        """Every rig camera's view: {name: BGR uint8 H x W x 3}."""
        return {c.name: self.render_camera(c.name) for c in self.rig.cameras}

    def target_image(self, name: str, width: int | None = None) -> np.ndarray:
        """int64 (H, W): index of the target seen at each pixel of camera `name` (-1: none), from
        MuJoCo's segmentation render at `width` pixels across (default: the camera's own size)."""
        cam = self.rig.camera(name)
        width = width or cam.width
        h = cam.height if width == cam.width else max(1, round(cam.height * width / cam.width))
        r = self._renderer(width, h, segmentation=True)
        r.update_scene(self.data, camera=name, scene_option=self._option)
        seg = r.render()
        ids = seg[:, :, 0].astype(np.int64)
        is_geom = (seg[:, :, 1] == int(self.mujoco.mjtObj.mjOBJ_GEOM)) & (ids >= 0)
        return np.where(is_geom, self._geom_target[np.clip(ids, 0, len(self._geom_target) - 1)], -1)

    def visible_pixels(self) -> np.ndarray:
        """int64 per target: its pixels in the segmentation render (VISIBILITY_WIDTH wide) of the camera
        that sees most of it, occlusion by everything in the scene included (perception/sim/truth.py's rule)."""
        n = len(self._targets)
        best = np.zeros(n, np.int64)
        for cam in self.rig.cameras:
            tgt = self.target_image(cam.name, VISIBILITY_WIDTH).ravel()
            best = np.maximum(best, np.bincount(tgt[tgt >= 0], minlength=n)[:n])
        return best

    def ground_truth(self, stamp_ns: int):
        """perception.v1.GroundTruth at stamp_ns: every target in the ego frame with its visible
        pixels (consumers keep those with >= MIN_VISIBLE_PX, as for the built-in world's sim/truth)."""
        from perception.boxes import object_from_truth
        from perception.v1 import detections_pb2

        visible = self.visible_pixels()
        return detections_pb2.GroundTruth(stamp_ns=int(stamp_ns), world_seed=self.seed,
                                          objects=[object_from_truth(b, visible=int(v)) for b, v in zip(self.boxes(), visible)])

    def visible_boxes(self, min_visible: int = MIN_VISIBLE_PX):
        """Box3D of the targets with at least min_visible pixels (the evaluated ground truth)."""
        vis = self.visible_pixels()
        return [b for b, v in zip(self.boxes(), vis) if v >= min_visible]

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()

    def __enter__(self) -> "MujocoStreet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def drive(session, street: MujocoStreet, steps: int, dt_s: float = 0.1, timeout_s: float = 30.0) -> Iterator[tuple[Any, Any]]:
    """Lock-step through a client Session (perception.client): for each step render every camera,
    send the frame set with the simulator's ground truth, wait for its Detections, then advance the
    simulation by dt_s. Yields (StepResult, GroundTruth). Stamps are MuJoCo's simulated time (the
    session maps them to its wall clock and back)."""
    for _ in range(steps):
        stamp = int(round(street.time_s * 1e9))
        truth = street.ground_truth(stamp)
        result = session.step(images=street.render(), stamp_ns=stamp, truth=truth, timeout_s=timeout_s)
        yield result, truth
        street.advance(dt_s)
