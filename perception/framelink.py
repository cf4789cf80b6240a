"""The sending side of a fusion node's inputs, shared by the live replay player (perception/player.py)
and the simulator client (perception/client.py): one publisher per camera endpoint, a subscriber to
the node's `detections` and `status/fusion`, the calibration carried in a camera's first frame and
whenever a subscriber (re)joins, and the map from what was sent to what the caller calls it, so a
received Detections can be told apart (is it of my frame set?) and translated back (the caller's
sequences and stamps instead of the wire's).

Why a module of its own: both senders restamp frames onto the wall clock (the node refuses frames
stamped far from its clock) and must match Detections to the frames they sent by (camera, sequence);
doing that in one place keeps the two in step with the node's contract.
"""
from __future__ import annotations

import collections
import time
from collections.abc import Iterable

from perception import topics

MAX_SENT_MAP = 4096                  # (camera, sequence) -> the caller's (sequence, stamp), remembered for translation


class SentFrames:
    """(camera, sequence on the wire) -> (the caller's sequence, the caller's capture stamp) of the
    most recent MAX_SENT_MAP frames sent."""

    def __init__(self, capacity: int = MAX_SENT_MAP):
        self.capacity = capacity
        self._map: collections.OrderedDict = collections.OrderedDict()

    def remember(self, camera: str, wire_sequence: int, sequence: int, stamp_ns: int) -> None:
        self._map[(camera, wire_sequence)] = (sequence, stamp_ns)
        while len(self._map) > self.capacity:
            self._map.popitem(last=False)

    def __contains__(self, key) -> bool:
        return key in self._map

    def translate(self, msg):
        """A copy of a received Detections in the caller's terms: every frame's sequence and
        capture stamp as the caller gave them, stamp_ns the newest of them; age_ms and timings stay
        (wall clock). None when a frame it lists is not one sent here (recently)."""
        out = type(msg)()
        out.CopyFrom(msg)
        for f in out.frames:
            rec = self._map.get((f.camera_name, f.sequence))
            if rec is None:
                return None
            f.sequence, f.capture_end_ns = rec
        if out.frames:
            out.stamp_ns = max(f.capture_end_ns for f in out.frames)
        return out


def lists_any(msg, keys: Iterable[tuple[str, int]]) -> bool:
    """Whether a Detections lists one of `keys` ((camera, wire sequence) of frames sent)."""
    keys = set(keys)
    return any((f.camera_name, f.sequence) in keys for f in msg.frames)


class FrameLink:
    """Publishers on the cameras' endpoints (one per distinct endpoint, `camera_endpoints` in
    `camera_names` order) and a subscriber to the node's endpoint. Truth goes out on the first
    camera's publisher (where the simulated front camera publishes it). `endpoints` are the bound
    ones ("tcp://127.0.0.1:*" resolves to the port the OS picked)."""

    def __init__(self, camera_names: list[str], camera_endpoints: list[str], node_endpoint: str, *,
                 sndhwm: int = 64, rcvhwm: int = 256):
        from perception.transport import Publisher, Subscriber

        if len(camera_endpoints) != len(camera_names):
            raise ValueError(f"{len(camera_endpoints)} camera endpoints for {len(camera_names)} cameras "
                             f"({', '.join(camera_names)}): give one per camera, in rig order")
        self.camera_names = list(camera_names)
        self.node_endpoint = node_endpoint
        self.pubs: dict[str, Publisher] = {}
        by_endpoint: dict[str, Publisher] = {}
        try:
            for name, ep in zip(camera_names, camera_endpoints):
                key = f"{ep}#{name}" if ep.endswith(":*") else ep     # a wildcard port binds a new port per camera
                if key not in by_endpoint:
                    by_endpoint[key] = Publisher(ep, sndhwm=sndhwm)
                self.pubs[name] = by_endpoint[key]
            self.sub = Subscriber(node_endpoint, [topics.DETECTIONS, topics.FUSION_STATUS], rcvhwm=rcvhwm)
        except BaseException:
            for p in by_endpoint.values():
                p.close()
            raise
        self._publishers = list(by_endpoint.values())
        self.endpoints = [self.pubs[n].endpoint for n in camera_names]
        self.truth_pub = self.pubs[camera_names[0]]
        self.sent = SentFrames()
        self._calibration_sent: dict[str, tuple[str, int]] = {}   # camera -> (calibration_id, joins) last carried
        self._joins: dict[int, int] = {}               # id(publisher) -> subscription events seen (batches)
        self.status_seen = False
        self.last_status = None                        # the newest NodeStatus received

    # ------------------------------------------------------------------------- node readiness
    def unsubscribed(self, timeout_s: float) -> list[str]:
        """Wait up to timeout_s until the node subscribed to every camera's topic; the cameras
        still without a subscriber."""
        deadline = time.monotonic() + timeout_s
        return [name for name in self.camera_names
                if not self.pubs[name].wait_for_subscriber(max(0.0, deadline - time.monotonic()), topics.camera(name))]

    # ------------------------------------------------------------------------- sending
    def send_frame(self, header, pixels, calibration=None, *, sequence: int, stamp_ns: int) -> tuple[str, int]:
        """Publish one frame (FrameHeader + pixel part) on its camera's topic, remembering that it
        stands for the caller's (sequence, stamp_ns). `calibration` (a CameraCalibration, or None)
        is carried when the header has none and the camera has not carried this one yet, or a
        subscriber (re)joined its publisher. Returns the (camera, wire sequence) key."""
        name = header.camera_name
        pub = self.pubs[name]
        if pub.new_subscriptions() > 0:         # per publisher: every camera on it carries its calibration again
            self._joins[id(pub)] = self._joins.get(id(pub), 0) + 1
        joins = self._joins.get(id(pub), 0)
        if (calibration is not None and not header.HasField("calibration")
                and self._calibration_sent.get(name) != (calibration.calibration_id, joins)):
            header.calibration.CopyFrom(calibration)
        if header.HasField("calibration"):
            self._calibration_sent[name] = (header.calibration.calibration_id, joins)
        header.publish_ns = time.time_ns()
        header.source_time_ns = stamp_ns        # the node tracks in the caller's time, not the wall clock's
        self.sent.remember(name, header.sequence, sequence, stamp_ns)
        pub.publish(topics.camera(name), header, pixels)
        return name, header.sequence

    def send_truth(self, msg) -> None:
        self.truth_pub.publish(topics.TRUTH, msg)

    # ------------------------------------------------------------------------- receiving
    def receive(self, timeout_s: float) -> list:
        """What the node published since the last call (waiting up to timeout_s for the first
        message): the Detections as received; status is kept in last_status."""
        got = []
        rx = self.sub.recv(max(0, int(timeout_s * 1000)))
        while rx is not None:
            if rx.topic == topics.FUSION_STATUS:
                self.status_seen = True
                self.last_status = rx.msg
            elif rx.topic == topics.DETECTIONS:
                self.status_seen = True
                got.append(rx.msg)
            rx = self.sub.recv(0)
        return got

    def close(self) -> None:
        self.sub.close()
        for p in self._publishers:
            p.close()
