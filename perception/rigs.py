"""A distribution of camera rigs, so one model learns to read any calibration instead of one rig.

A rig has 3-6 cameras spread around the vehicle with gaps between their views, horizontal FOV
45-120 deg, mounting heights 1.2-2.8 m, pitch 0-12 deg down, mounted on a car or truck body:
body corners, anywhere on the body's outline (bumpers, pillars), the roof, or side mirrors.
Images are 320x180 (the model's 16:9 at 2.5x, like the nominal rig), K comes from the FOV.

Bodies lie inside the simulated world's ego keep-out (sim.world.EGO_FOOTPRINT): nothing in the
world ever stands inside it, so no camera is ever inside another object. The "truck" is a cab
of that footprint (5.5 x 2.4 m) with cameras up to 2.8 m.

Training rigs and held-out rigs are disjoint by construction: a rig's content hash
(`rig_fingerprint`) puts it in the held-out partition or not; the training stream
(`training_rig`) redraws any rig that falls in it and `heldout_rig` keeps only those, from
its own seed stream.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from perception.config import ConfigError, RigConfig, parse_rig

IMAGE_WIDTH, IMAGE_HEIGHT = 320, 180
TRAIN_RIG_STREAM = 7_301          # np.random seed stream of the training rigs: [stream, sample id]
HELDOUT_RIG_STREAM = 7_302        # held-out rigs: [stream, seed, index]
HELDOUT_MODULUS = 8               # 1 rig in 8 (by content hash) is reserved for evaluation
MOUNTS = ("corner", "edge", "roof", "mirror")
MAX_TRIES = 10_000


@dataclass(frozen=True)
class Body:
    """A vehicle body in the ego frame (x forward, y left, origin on the ground below the rear
    axle) and the height range of each mount kind on it."""
    name: str
    x_rear: float
    x_front: float
    half_width: float
    mirror_x: float
    heights: dict          # mount kind -> (min, max) metres


BODIES = {
    "car": Body("car", -0.95, 3.75, 0.92, 2.1,
                {"corner": (1.2, 1.55), "edge": (1.2, 1.6), "roof": (1.6, 2.0), "mirror": (1.2, 1.3)}),
    "truck": Body("truck", -1.0, 4.5, 1.2, 3.6,
                  {"corner": (1.2, 2.8), "edge": (1.2, 2.8), "roof": (2.5, 2.8), "mirror": (2.0, 2.4)}),
}


@dataclass(frozen=True)
class RigDistribution:
    """Ranges rigs are drawn from. The defaults are the training distribution; `perception rigs
    generate` narrows them to make a rig of a given kind."""
    cameras: tuple[int, int] = (3, 6)
    hfov_deg: tuple[float, float] = (45.0, 120.0)
    height_m: tuple[float, float] = (1.2, 2.8)
    pitch_deg: tuple[float, float] = (0.0, 12.0)     # down positive
    roll_deg: float = 1.0                            # mounting tolerance, +-
    bodies: tuple[str, ...] = ("car", "truck")
    mounts: tuple[str, ...] = MOUNTS                 # kinds a camera may use (one rig may mix them)
    yaw_jitter: float = 0.2                          # of the even spacing 360/n, +-
    own_lens_prob: float = 0.3                       # a camera gets its own FOV instead of the rig's lens

    def __post_init__(self):
        lo, hi = self.cameras
        if not 1 <= lo <= hi:
            raise ConfigError(f"rig distribution: cameras {self.cameras} is not a range of at least 1")
        for name in ("hfov_deg", "height_m", "pitch_deg"):
            a, b = getattr(self, name)
            if a > b:
                raise ConfigError(f"rig distribution: {name} {(a, b)} is empty")
        if not (1.0 <= self.hfov_deg[0] and self.hfov_deg[1] < 179.0):
            raise ConfigError(f"rig distribution: hfov_deg {self.hfov_deg} is not in [1, 179)")
        bad = [b for b in self.bodies if b not in BODIES] + [m for m in self.mounts if m not in MOUNTS]
        if bad or not self.bodies or not self.mounts:
            raise ConfigError(f"rig distribution: bodies {self.bodies} / mounts {self.mounts}; known "
                              f"{sorted(BODIES)} / {list(MOUNTS)}")


def _mount_point(body: Body, kind: str, yaw: float, rng: np.random.Generator) -> tuple[float, float] | None:
    """(x, y) of a camera of `kind` looking along `yaw` (rad), or None when the kind cannot face
    that way (a mirror faces sideways)."""
    cx, hl, hw = (body.x_front + body.x_rear) / 2, (body.x_front - body.x_rear) / 2, body.half_width
    c, s = np.cos(yaw), np.sin(yaw)
    if kind == "mirror":
        if abs(s) < 0.5:
            return None
        return body.mirror_x + rng.uniform(-0.2, 0.2), np.sign(s) * hw
    if kind == "corner":
        return cx + np.sign(c) * hl, np.sign(s) * hw
    # where the ray from the body centre along yaw leaves the outline
    t = min(hl / max(abs(c), 1e-9), hw / max(abs(s), 1e-9))
    x, y = cx + t * c, t * s
    if kind == "roof":
        f = rng.uniform(0.3, 0.9)
        x, y = cx + f * (x - cx), f * y
    return x, y


def _draw(rng: np.random.Generator, dist: RigDistribution, name: str) -> dict | None:
    """One rig as a rig-file mapping, or None when the draw breaks a constraint (redrawn)."""
    n = int(rng.integers(dist.cameras[0], dist.cameras[1] + 1))
    body = BODIES[dist.bodies[int(rng.integers(len(dist.bodies)))]]
    spacing = 360.0 / n
    base = rng.uniform(-spacing / 2, spacing / 2)
    lens = rng.uniform(*dist.hfov_deg)
    pitch = rng.uniform(*dist.pitch_deg)
    # a rig uses one mount kind for all cameras half of the time, else a mix
    one_kind = dist.mounts[int(rng.integers(len(dist.mounts)))] if rng.random() < 0.5 else None
    cams = []
    for k in range(n):
        yaw = base + k * spacing + rng.uniform(-dist.yaw_jitter, dist.yaw_jitter) * spacing
        yaw = (yaw + 180.0) % 360.0 - 180.0
        kind = one_kind or dist.mounts[int(rng.integers(len(dist.mounts)))]
        xy = _mount_point(body, kind, np.radians(yaw), rng)
        if xy is None and "edge" in dist.mounts:       # a mirror cannot look ahead or back: on the outline instead
            kind = "edge"
            xy = _mount_point(body, kind, np.radians(yaw), rng)
        lo = max(body.heights[kind][0], dist.height_m[0])
        hi = min(body.heights[kind][1], dist.height_m[1])
        if xy is None or lo > hi:
            return None
        hfov = rng.uniform(*dist.hfov_deg) if rng.random() < dist.own_lens_prob else lens
        cam_pitch = float(np.clip(pitch + rng.uniform(-2.0, 2.0), *dist.pitch_deg))
        cams.append({"name": f"cam{k}_{kind}", "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT,
                     "hfov_deg": round(float(hfov), 1),
                     "position": [round(float(xy[0]), 3), round(float(xy[1]), 3), round(float(rng.uniform(lo, hi)), 3)],
                     "yaw_deg": round(float(yaw), 1), "pitch_deg": round(cam_pitch, 1),
                     "roll_deg": round(float(rng.uniform(-dist.roll_deg, dist.roll_deg)), 1)})
    return {"name": f"{name}_{body.name}_{n}cam", "cameras": cams}


def rig_fingerprint(rig: RigConfig) -> int:
    """Content hash of a rig's geometry, independent of camera names and order."""
    per_cam = sorted(hashlib.sha1(np.asarray([c.width, c.height], np.int64).tobytes()
                                  + np.round(np.asarray(c.K, np.float64), 6).tobytes()
                                  + np.round(np.asarray(c.T_ego_from_camera, np.float64), 6).tobytes()).digest()
                     for c in rig.cameras)
    return int.from_bytes(hashlib.sha1(b"".join(per_cam)).digest()[:8], "little")


def is_heldout(rig: RigConfig) -> bool:
    """True for rigs in the held-out partition: training never samples them."""
    return rig_fingerprint(rig) % HELDOUT_MODULUS == 0


def _sample(rng: np.random.Generator, dist: RigDistribution, name: str, heldout: bool) -> tuple[RigConfig, dict]:
    for _ in range(MAX_TRIES):
        d = _draw(rng, dist, name)
        if d is None:
            continue
        rig = parse_rig(d, d["name"])
        if is_heldout(rig) == heldout:
            return rig, d
    raise ConfigError(f"rig distribution {dist} produced no valid rig in {MAX_TRIES} draws (constraints contradict?)")


def training_rig(sample_id: int, dist: RigDistribution = RigDistribution()) -> RigConfig:
    """The rig of training sample `sample_id`: deterministic, never a held-out rig."""
    return _sample(np.random.default_rng([TRAIN_RIG_STREAM, sample_id]), dist, f"train{sample_id}", heldout=False)[0]


def heldout_rig(seed: int, index: int, dist: RigDistribution = RigDistribution(), name: str = "heldout") -> tuple[RigConfig, dict]:
    """A held-out rig and its rig-file mapping: from its own seed stream and only from the
    partition training never draws from."""
    return _sample(np.random.default_rng([HELDOUT_RIG_STREAM, seed, index]), dist, name, heldout=True)


def check_rig(rig: RigConfig, num_cameras: int = 6, image_size: tuple[int, int] = (128, 72)) -> None:
    """Raise ConfigError unless the renderer and a model with `num_cameras` slots and
    `image_size` (width, height) input can use the rig: 1..num_cameras valid cameras with the
    model's aspect ratio (square pixels after resizing), above the ground and within the ego
    keep-out where the world never puts an object."""
    from perception.sim.world import EGO_FOOTPRINT

    if not 1 <= len(rig.cameras) <= num_cameras:
        raise ConfigError(f"rig {rig.name!r}: {len(rig.cameras)} cameras, the model has {num_cameras} slots")
    x0, x1, y0, y1 = EGO_FOOTPRINT
    for cam in rig.cameras:
        cam.validate(f"rig {rig.name!r} camera {cam.name!r}")
        if cam.width * image_size[1] != cam.height * image_size[0]:
            raise ConfigError(f"rig {rig.name!r} camera {cam.name!r}: {cam.width}x{cam.height} is not the model's "
                              f"aspect {image_size[0]}:{image_size[1]}")
        x, y, z = cam.position
        if not (x0 <= x <= x1 and y0 <= y <= y1 and 0.0 < z):
            raise ConfigError(f"rig {rig.name!r} camera {cam.name!r}: position {cam.position} is outside the ego "
                              f"footprint {EGO_FOOTPRINT} or below ground")


def rig_summary(rig: RigConfig) -> dict:
    """Cameras, FOV, heights, pitch (deg down) and yaws of a rig, for printing and docs."""
    hfov = [float(np.degrees(2 * np.arctan(c.width / 2 / c.K[0, 0]))) for c in rig.cameras]
    fwd = [np.asarray(c.T_ego_from_camera)[:3, 2] for c in rig.cameras]          # optical axis, ego frame
    pitch = [float(np.degrees(np.arcsin(-f[2]))) for f in fwd]
    yaw = [float(np.degrees(np.arctan2(f[1], f[0]))) for f in fwd]
    z = [float(c.position[2]) for c in rig.cameras]
    return {"name": rig.name, "cameras": len(rig.cameras), "hfov_deg": (min(hfov), max(hfov)),
            "height_m": (min(z), max(z)), "pitch_deg": (min(pitch), max(pitch)), "yaw_deg": sorted(yaw),
            "heldout": is_heldout(rig)}


def write_rig(d: dict, path: Path, comment: str = "") -> None:
    """Write a rig-file mapping as YAML (values round-trip exactly), with a comment header."""
    import yaml

    head = "".join(f"# {line}\n" for line in comment.splitlines())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=200))


def narrowed(dist: RigDistribution, **ranges) -> RigDistribution:
    """`dist` with the given fields replaced (None values ignored)."""
    return replace(dist, **{k: v for k, v in ranges.items() if v is not None})
