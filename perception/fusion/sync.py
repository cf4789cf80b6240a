"""Approximate-time grouping of camera frames into frame sets.

Pure logic, no sockets and no clock of its own: callers pass `now_ns`. The live node passes
the receive clock; a lock-step replay passes message stamps, so replays are deterministic.

Policy (openpilot pairs cameras within a window; DeepStream pushes partial batches after a
timeout):
- A frame joins the oldest open set that lacks its camera and whose span (newest minus
  oldest capture stamp) stays under `max_span_ns` with it; otherwise it opens a new set.
- A set with every camera is emitted at once. Older open sets are then dropped (counted as
  `dropped`): publishing them would only queue stale work behind a newer result.
- A set still incomplete `timeout_ns` after its first frame arrived is emitted with the
  missing cameras listed (`partial`), if at least `min_cameras` are present.
- Frames never go backwards: a frame not newer than the last frame of its camera
  (duplicate or reordered sequence/stamp), older than the last emitted set, or a straggler
  that belonged in a set already emitted without it, is rejected and counted.
- A frame whose sequence is not above its camera's last one but whose stamp is newer is a
  restarted camera (sequence back to 0, or a wrapped counter): accepted at once and counted
  in `stats.restarts`. Stamps are trusted here: the node rejects frames stamped far from
  its clock before they reach the sync.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TimedFrame:
    camera: str
    sequence: int
    stamp_ns: int          # capture time (end of exposure)
    recv_ns: int           # when it arrived (the clock `now_ns` is in)
    data: Any = None       # whatever the caller needs later (header, pixels)


@dataclass
class FrameSet:
    frames: dict[str, TimedFrame]
    missing: list[str]
    opened_ns: int          # arrival of its first frame
    ready_ns: int           # when it was emitted

    @property
    def stamp_ns(self) -> int:
        """The set's stamp: the newest capture time in it."""
        return max(f.stamp_ns for f in self.frames.values())

    @property
    def span_ns(self) -> int:
        stamps = [f.stamp_ns for f in self.frames.values()]
        return max(stamps) - min(stamps)

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class SyncStats:
    complete: int = 0
    partial: int = 0
    dropped: int = 0                 # incomplete sets superseded by a newer emitted set
    rejected: dict[str, int] = field(default_factory=dict)   # reason -> frames
    restarts: dict[str, int] = field(default_factory=dict)   # camera -> sequence went back (accepted)

    total_rejected: int = 0
    last_reason: str | None = None   # of the latest rejection

    def reject(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.total_rejected += 1
        self.last_reason = reason


@dataclass
class _OpenSet:
    frames: dict[str, TimedFrame]
    opened_ns: int

    def span_with(self, stamp_ns: int) -> int:
        stamps = [f.stamp_ns for f in self.frames.values()] + [stamp_ns]
        return max(stamps) - min(stamps)


class ApproximateTimeSync:
    def __init__(self, cameras: list[str], max_span_ns: int, timeout_ns: int, min_cameras: int = 1,
                 max_open_sets: int = 8):
        if not cameras:
            raise ValueError("ApproximateTimeSync needs at least one camera")
        if max_span_ns <= 0 or timeout_ns <= 0:
            raise ValueError("max_span_ns and timeout_ns must be positive")
        self.cameras = list(cameras)
        self.max_span_ns = max_span_ns
        self.timeout_ns = timeout_ns
        self.min_cameras = max(1, min_cameras)
        self.max_open_sets = max_open_sets
        self.stats = SyncStats()
        self._open: list[_OpenSet] = []                 # ordered by opening time
        self._last: dict[str, tuple[int, int]] = {}     # camera -> (sequence, stamp) of the last accepted frame
        self._emitted_stamp_ns: int | None = None       # oldest stamp of the last emitted set
        self._emitted_missing: set[str] = set()          # cameras that set went out without

    def push(self, frame: TimedFrame, now_ns: int) -> list[FrameSet]:
        """Add a frame; returns the sets that became ready (possibly none)."""
        if frame.camera not in self.cameras:
            self.stats.reject("unknown_camera")
            return self.poll(now_ns)
        last = self._last.get(frame.camera)
        if last is not None and (frame.sequence <= last[0] or frame.stamp_ns <= last[1]):
            if frame.sequence <= last[0] and frame.stamp_ns > last[1]:
                # The sequence went back with a newer stamp: the camera restarted (or its counter
                # wrapped). Accept it at once; waiting for the sequence to pass the old one would
                # exclude the camera for as long as it had run (forever after a 2^64-1).
                self.stats.restarts[frame.camera] = self.stats.restarts.get(frame.camera, 0) + 1
            else:
                self.stats.reject("duplicate_or_reordered")
                return self.poll(now_ns)
        if self._is_late(frame):
            self.stats.reject("late")
            return self.poll(now_ns)
        self._last[frame.camera] = (frame.sequence, frame.stamp_ns)

        target = next((s for s in self._open if frame.camera not in s.frames
                       and s.span_with(frame.stamp_ns) < self.max_span_ns), None)
        if target is None:
            target = _OpenSet(frames={}, opened_ns=now_ns)
            self._open.append(target)
            if len(self._open) > self.max_open_sets:      # bounded memory under garbage input
                self._open.pop(0)
                self.stats.dropped += 1
        target.frames[frame.camera] = frame

        ready: list[FrameSet] = []
        if len(target.frames) == len(self.cameras):
            # Every older open set is superseded by this complete one.
            idx = self._open.index(target)
            self.stats.dropped += idx
            del self._open[: idx + 1]
            ready.append(self._emit(target, now_ns))
        return ready + self.poll(now_ns)

    def poll(self, now_ns: int) -> list[FrameSet]:
        """Emit sets whose timeout has passed; call this also when no frame arrives."""
        ready: list[FrameSet] = []
        while self._open and now_ns - self._open[0].opened_ns >= self.timeout_ns:
            s = self._open.pop(0)
            oldest_ns = min((f.stamp_ns for f in s.frames.values()), default=0)
            if len(s.frames) >= self.min_cameras and (self._emitted_stamp_ns is None
                                                      or oldest_ns >= self._emitted_stamp_ns):
                ready.append(self._emit(s, now_ns))
            else:
                self.stats.dropped += 1
        return ready

    def _emit(self, s: _OpenSet, now_ns: int) -> FrameSet:
        missing = [c for c in self.cameras if c not in s.frames]
        if missing:
            self.stats.partial += 1
        else:
            self.stats.complete += 1
        self._emitted_stamp_ns = min(f.stamp_ns for f in s.frames.values())
        self._emitted_missing = set(missing)
        ordered = {c: s.frames[c] for c in self.cameras if c in s.frames}
        return FrameSet(frames=ordered, missing=missing, opened_ns=s.opened_ns, ready_ns=now_ns)

    def _is_late(self, frame: TimedFrame) -> bool:
        """Older than the last emitted set, or a straggler that belonged in it (its camera was
        reported missing there): either way the result it could join is already out."""
        if self._emitted_stamp_ns is None:
            return False
        if frame.stamp_ns < self._emitted_stamp_ns:
            return True
        return frame.camera in self._emitted_missing and frame.stamp_ns < self._emitted_stamp_ns + self.max_span_ns

    def next_deadline_ns(self) -> int | None:
        """When the oldest open set times out (for the caller's poll timeout)."""
        return self._open[0].opened_ns + self.timeout_ns if self._open else None
