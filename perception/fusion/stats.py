"""Rolling statistics for node status: per-camera rates and drops, per-stage timings."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


class Rolling:
    """The last `size` samples of a value, with percentiles."""

    def __init__(self, size: int = 200):
        self.values: deque[float] = deque(maxlen=size)

    def add(self, v: float) -> None:
        self.values.append(v)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.values, q)) if self.values else 0.0

    def max(self) -> float:
        return max(self.values) if self.values else 0.0


class RateMeter:
    """Events per second over a sliding time window (timestamps in ns)."""

    def __init__(self, window_s: float = 2.0):
        self.window_ns = int(window_s * 1e9)
        self.stamps: deque[int] = deque()

    def tick(self, now_ns: int) -> None:
        self.stamps.append(now_ns)
        self._trim(now_ns)

    def rate(self, now_ns: int) -> float:
        self._trim(now_ns)
        if len(self.stamps) < 2:
            return 0.0
        span = max(now_ns - self.stamps[0], 1)
        return (len(self.stamps) - 1) * 1e9 / span if span < self.window_ns else len(self.stamps) * 1e9 / self.window_ns

    def _trim(self, now_ns: int) -> None:
        while self.stamps and now_ns - self.stamps[0] > self.window_ns:
            self.stamps.popleft()


# A forward sequence jump larger than this is a discontinuity (a restarted or misbehaving
# camera), not that many lost frames.
MAX_SEQUENCE_GAP = 100_000


@dataclass
class CameraCounters:
    received: int = 0
    lost: int = 0                 # sequence gaps: dropped in transit or at a full queue
    superseded: int = 0           # read but replaced by a newer frame before use
    rejected: int = 0
    last_sequence: int | None = None
    last_stamp_ns: int | None = None
    last_accept_ns: int | None = None      # node clock of the last frame that reached the sync
    last_reject_ns: int | None = None      # node clock of the last rejected frame
    last_reject_reason: str = ""
    rate: RateMeter = field(default_factory=RateMeter)

    def on_frame(self, sequence: int, stamp_ns: int, now_ns: int, superseded: int = 0) -> None:
        """superseded: older frames of this camera the subscriber discarded just before this
        one (they arrived, so they are not lost in transit)."""
        self.received += 1
        self.superseded += superseded
        if self.last_sequence is not None and self.last_sequence + 1 < sequence <= self.last_sequence + MAX_SEQUENCE_GAP:
            self.lost += max(0, sequence - self.last_sequence - 1 - superseded)
        self.last_sequence = sequence       # also when it went back: a restarted reader starts again at 0
        self.last_stamp_ns = stamp_ns
        self.rate.tick(now_ns)

    def on_reject(self, reason: str, now_ns: int) -> None:
        self.rejected += 1
        self.last_reject_ns = now_ns
        self.last_reject_reason = reason

    @property
    def dropped(self) -> int:
        return self.lost + self.superseded
