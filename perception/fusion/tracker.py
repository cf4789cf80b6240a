"""Velocity from tracking: detections of consecutive frame sets are associated per class, and
a constant-velocity Kalman filter per track turns the moving centre into a velocity.

The model's own velocity, read from one frame, is noisy (it can only guess motion from pose and
context). The filter takes it as a weak measurement next to the centre, so a track's first
velocity is the model's and every later frame pulls it towards what the centres actually did.
Track ids go into Object3D.track_id (0 = not tracked).

Frame: the ego frame of each set. The node has no ego-motion input, so velocities are relative
to the ego; with a parked ego (the simulated worlds) that is the ground velocity.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ClassMotion:
    """Noise model of one class: centre noise (m), model-velocity noise (m/s), acceleration
    noise (m/s^2) and the association gate (m, after prediction)."""
    position_sigma: float
    velocity_sigma: float
    accel_sigma: float
    gate_m: float


# Keyed by ObjectClass value (detections.proto); any other value uses DEFAULT_MOTION.
CLASS_MOTION: dict[int, ClassMotion] = {   # tuned on simulated drives of world seeds 2000-2005 (docs/velocity.md)
    1: ClassMotion(0.5, 6.0, 1.5, 3.0),      # car
    2: ClassMotion(0.7, 6.0, 1.0, 3.5),      # truck
    3: ClassMotion(0.3, 3.0, 1.0, 1.5),      # pedestrian
    4: ClassMotion(0.4, 5.0, 1.5, 2.5),      # cyclist
    5: ClassMotion(0.3, 2.0, 0.15, 1.0),     # traffic cone
}
DEFAULT_MOTION = ClassMotion(0.5, 6.0, 1.5, 2.0)


@dataclass
class TrackerConfig:
    max_age_s: float = 0.5        # a track unseen this long is dropped
    max_gap_s: float = 1.0        # a jump in stamps larger than this (or backwards) starts afresh
    motion: dict[int, ClassMotion] = field(default_factory=lambda: dict(CLASS_MOTION))

    def of(self, cls: int) -> ClassMotion:
        return self.motion.get(cls, DEFAULT_MOTION)


@dataclass
class Track:
    track_id: int
    cls: int
    x: np.ndarray                 # (4,) px, py, vx, vy in the ego frame
    P: np.ndarray                 # (4, 4) covariance
    last_ns: int
    hits: int = 1


def _transition(dt: float, accel_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Constant-velocity F and its white-acceleration process noise Q over dt seconds."""
    F = np.eye(4)
    F[0, 2] = F[1, 3] = dt
    q = accel_sigma ** 2
    Q = np.zeros((4, 4))
    for i in (0, 1):
        Q[i, i] = q * dt ** 4 / 4
        Q[i, i + 2] = Q[i + 2, i] = q * dt ** 3 / 2
        Q[i + 2, i + 2] = q * dt ** 2
    return F, Q


class Tracker:
    """Assigns track ids and tracked velocities to each frame set's objects, in place (update)."""

    def __init__(self, config: TrackerConfig | None = None):
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self.last_ns: int | None = None
        self.next_id = 1

    def reset(self) -> None:
        """Forget every track; ids start again at 1, so a scenario replayed after a reset gets the
        same ids as the first time (lock-step determinism)."""
        self.tracks, self.last_ns, self.next_id = [], None, 1

    def update(self, objects, stamp_ns: int) -> None:
        """Associate `objects` (Object3D messages of one frame set, stamped stamp_ns) with the
        tracks, then write each one's track_id and filtered velocity into it."""
        cfg = self.config
        if self.last_ns is not None and not (0 < stamp_ns - self.last_ns <= cfg.max_gap_s * 1e9):
            self.reset()
        self.last_ns = stamp_ns
        self.tracks = [t for t in self.tracks if stamp_ns - t.last_ns <= cfg.max_age_s * 1e9]

        # Predict every track to this stamp.
        predicted: list[tuple[np.ndarray, np.ndarray]] = []
        for t in self.tracks:
            F, Q = _transition((stamp_ns - t.last_ns) / 1e9, cfg.of(t.cls).accel_sigma)
            predicted.append((F @ t.x, F @ t.P @ F.T + Q))

        # Greedy association per class, closest pairs first (within the class's gate).
        pairs = []
        for i, o in enumerate(objects):
            for j, t in enumerate(self.tracks):
                if t.cls != o.object_class:
                    continue
                dist = float(np.hypot(o.center.x - predicted[j][0][0], o.center.y - predicted[j][0][1]))
                if dist <= cfg.of(t.cls).gate_m:
                    pairs.append((dist, i, j))
        pairs.sort()
        track_of: dict[int, int] = {}
        taken: set[int] = set()
        for _, i, j in pairs:
            if i not in track_of and j not in taken:
                track_of[i] = j
                taken.add(j)

        kept = [t for j, t in enumerate(self.tracks) if j not in taken]     # unmatched: kept until too old
        for i, o in enumerate(objects):
            m = cfg.of(o.object_class)
            z = np.array([o.center.x, o.center.y, o.velocity.x, o.velocity.y])
            R = np.diag([m.position_sigma ** 2] * 2 + [m.velocity_sigma ** 2] * 2)
            if i in track_of:
                t = self.tracks[track_of[i]]
                x, P = predicted[track_of[i]]
                # The measurement (px, py, vx_model, vy_model) is the state itself (H = I).
                K = P @ np.linalg.inv(P + R)
                t.x = x + K @ (z - x)
                t.P = (np.eye(4) - K) @ P
                t.last_ns, t.hits = stamp_ns, t.hits + 1
            else:
                t = Track(self.next_id, int(o.object_class), z.copy(), R.copy(), stamp_ns)
                self.next_id += 1
            kept.append(t)
            o.track_id = t.track_id
            o.velocity.x, o.velocity.y = float(t.x[2]), float(t.x[3])
        self.tracks = kept
