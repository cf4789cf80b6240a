"""A generator of hostile input for the fusion node's per-message path (accept -> sync ->
preprocess -> engine -> publish), shared by the property-based test (tests/test_node_faults.py,
driven by hypothesis's `randoms()`) and scripts/fuzz_node.py (driven by `random.Random(seed)`
for as many inputs as asked).

Each input starts as a valid frame of a rig camera (stamped near the node clock, sequence one
above that camera's last) and gets zero to three mutations: another or an invented topic, a
message of another type, header fields (sequence 0 or 2^64-1, stamps years off, sizes 0 or
huge, unknown encodings, short strides, foreign calibration ids and camera names), a carried
calibration (own, another camera's, with 0/NaN/inf/negative/huge intrinsics, a non-rigid
transform, wrong lengths) and the payload (none, empty, truncated, padded, mono-sized).
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import numpy as np

from perception import topics
from perception.config import CameraConfig, RigConfig
from perception.transport import Received
from perception.v1 import calibration_pb2, detections_pb2, frame_pb2, status_pb2

MS = 1_000_000
YEAR_NS = 365 * 24 * 3600 * 10**9
_WEIRD_NUMBERS = (0.0, -0.0, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf, 2.0, 1e6)
_WEIRD_INTS = (0, 1, 2, 3, 7, 255, 65535, 2**31 - 1, 2**32 - 1)


class FuzzEngine:
    """Stands in for the model: a few boxes, sometimes with NaN or inf in them or a label out of
    range, so the output checks are fuzzed too."""

    name = "fuzz"

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.calls = 0

    def infer(self, inputs):
        self.calls += 1
        n = self.rng.randrange(0, 5)
        boxes = np.tile(np.array([10, 2, 0.5, 4, 2, 1.5, 0.1, 0, 0], np.float32), (n, 1))
        scores = np.full(n, 0.9, np.float32)
        labels = np.zeros(n, np.int64)
        if n and self.rng.random() < 0.3:
            boxes[self.rng.randrange(n), self.rng.randrange(9)] = self.rng.choice((math.nan, math.inf, -math.inf))
        if n and self.rng.random() < 0.1:
            scores[self.rng.randrange(n)] = math.nan
        if n and self.rng.random() < 0.1:
            labels[self.rng.randrange(n)] = self.rng.choice((-1, 99))
        return {"det_boxes": boxes[None], "det_scores": scores[None], "det_labels": labels[None]}

    def close(self) -> None:
        pass


@dataclass
class FuzzState:
    """The generator's memory: the node clock and each camera's last sequence."""
    rig: RigConfig
    now_ns: int
    sequences: dict[str, int] = field(default_factory=dict)


def _valid(rng: random.Random, st: FuzzState, cam: CameraConfig) -> tuple[str, frame_pb2.FrameHeader, np.ndarray]:
    seq = st.sequences.get(cam.name, 0) + 1
    st.sequences[cam.name] = seq
    h = frame_pb2.FrameHeader(camera_name=cam.name, sequence=seq,
                              capture_end_ns=st.now_ns - rng.randrange(0, 80) * MS, width=cam.width,
                              height=cam.height, encoding=frame_pb2.PIXEL_ENCODING_BGR8,
                              row_stride=cam.width * 3, calibration_id=cam.calibration_id, source="fuzz")
    return topics.camera(cam.name), h, np.full((cam.height, cam.width, 3), rng.randrange(256), np.uint8)


def _mutate_calibration(rng: random.Random, c: calibration_pb2.CameraCalibration) -> None:
    what = rng.randrange(6)
    if what == 0 and c.K:
        c.K[rng.randrange(len(c.K))] = rng.choice(_WEIRD_NUMBERS)
    elif what == 1 and c.T_ego_from_camera:
        c.T_ego_from_camera[rng.randrange(len(c.T_ego_from_camera))] = rng.choice(_WEIRD_NUMBERS)
    elif what == 2:
        setattr(c, rng.choice(("width", "height")), rng.choice(_WEIRD_INTS))
    elif what == 3:
        field_name = rng.choice(("K", "T_ego_from_camera", "distortion"))
        values = list(getattr(c, field_name))
        c.ClearField(field_name)
        getattr(c, field_name).extend(values[: rng.randrange(len(values) + 1)] + [rng.choice(_WEIRD_NUMBERS)]
                                      * rng.randrange(3))
    elif what == 4:
        c.camera_name = rng.choice(("", "ghost", "front", "back", "é\x00"))
    else:
        c.calibration_id = rng.choice(("", "deadbeef", c.calibration_id))


def _other_message(rng: random.Random, st: FuzzState, cam: CameraConfig):
    kind = rng.randrange(5)
    if kind == 0:
        return detections_pb2.Detections(stamp_ns=st.now_ns, sequence=rng.randrange(2**64))
    if kind == 1:
        return cam.to_proto()
    if kind == 2:
        return detections_pb2.GroundTruth(stamp_ns=st.now_ns + rng.choice((0, YEAR_NS, -YEAR_NS)))
    if kind == 3:
        return status_pb2.NodeStatus(node="fuzz", level=status_pb2.LEVEL_ERROR)
    return calibration_pb2.RigCalibration(rig_name="fuzz", cameras=[cam.to_proto()])


def _mutate(rng: random.Random, st: FuzzState, cam: CameraConfig, topic: str, h, pixels):
    """One mutation of (topic, message, payload)."""
    payload: bytes | np.ndarray | None = pixels
    what = rng.randrange(12)
    if what == 0:
        topic = rng.choice((topics.camera(rng.choice(st.rig.camera_names)), topics.camera("ghost"), topics.TRUTH,
                            topics.DETECTIONS, topics.FUSION_STATUS, "camera/", "", "status/x", "camera/front/x"))
    elif what == 1:
        h = _other_message(rng, st, cam)
    elif what == 2 and isinstance(h, frame_pb2.FrameHeader):
        h.sequence = rng.choice((0, 1, 2**64 - 1, 2**63, max(0, h.sequence - 1), h.sequence, rng.randrange(2**64)))
    elif what == 3 and isinstance(h, frame_pb2.FrameHeader):
        h.capture_end_ns = rng.choice((0, -1, 2**63 - 1, -(2**63), st.now_ns + 10 * YEAR_NS, st.now_ns - 10 * YEAR_NS,
                                       st.now_ns + rng.randrange(-20_000, 20_000) * MS))
    elif what == 4 and isinstance(h, frame_pb2.FrameHeader):
        setattr(h, rng.choice(("width", "height", "row_stride")), rng.choice(_WEIRD_INTS + (h.width, h.height)))
    elif what == 5 and isinstance(h, frame_pb2.FrameHeader):
        h.encoding = rng.choice((0, 1, 2, 3, 4, 99))  # type: ignore[assignment]  # open proto3 enum
        if h.encoding == frame_pb2.PIXEL_ENCODING_MONO8 and h.width * h.height <= 4096 * 4096 and rng.random() < 0.7:
            h.row_stride = h.width
            payload = np.full((h.height, h.width, 1), 9, np.uint8)
    elif what == 6 and isinstance(h, frame_pb2.FrameHeader):
        h.calibration_id = rng.choice(("", "deadbeef", "0" * 16, h.calibration_id))
    elif what == 7 and isinstance(h, frame_pb2.FrameHeader):
        h.camera_name = rng.choice(("", "ghost", "é\x00", *st.rig.camera_names))
    elif what in (8, 9) and isinstance(h, frame_pb2.FrameHeader):
        other = st.rig.cameras[rng.randrange(len(st.rig.cameras))]
        h.calibration.CopyFrom((cam if rng.random() < 0.5 else other).to_proto())
        if what == 9:
            _mutate_calibration(rng, h.calibration)
    elif what == 10:
        size = cam.width * cam.height * 3
        payload = rng.choice((None, b"", bytes(rng.randrange(1, 64)), bytes(size - 1), bytes(size + 3), bytes(size)))
    else:
        pass        # a valid frame, so the sync and the engine run too
    return topic, h, payload


def next_input(rng: random.Random, st: FuzzState) -> Received:
    """One input (a Received as the subscriber delivers it); advances the node clock."""
    st.now_ns += rng.randrange(0, 40) * MS
    cam = st.rig.cameras[rng.randrange(len(st.rig.cameras))]
    topic, h, payload = _valid(rng, st, cam)
    for _ in range(rng.choice((0, 0, 1, 1, 1, 2, 3))):
        topic, h, payload = _mutate(rng, st, cam, topic, h, payload)
    buf = None
    if isinstance(payload, np.ndarray):
        # flat bytes as the wire carries them (cast("B") refuses a view with a zero in its shape)
        buf = memoryview(np.ascontiguousarray(payload).tobytes() if payload.size == 0
                         else np.ascontiguousarray(payload)).cast("B")
    elif payload is not None:
        buf = memoryview(payload)
    # Encode and decode like the wire does, so messages are what a subscriber could deliver.
    msg = type(h).FromString(h.SerializeToString())
    return Received(topic=topic, msg=msg, payload=buf, recv_ns=st.now_ns, superseded=rng.choice((0, 0, 0, 1, 5)))
