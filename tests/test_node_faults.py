"""Hostile and faulty input to the fusion node's per-message path (issue 14, items 1 and 2).

The node is built in-process (its sockets bound on ipc:// paths nobody else uses) and driven
through `FusionNode.step` with hand-made `Received` messages, exactly what `run` does with what
the subscriber drains. The engine is a stub (fixed boxes, or NaN, or raising) so each test runs
in milliseconds; what is asserted is what the node exposes: rejection counters per reason,
camera restarts, status levels and messages, and the Detections it publishes. Every test also
checks that good cameras keep producing frame sets and that nothing raised (a raise would fail
the test)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from frame_headers import header
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perception import config as cfg
from perception import topics
from perception.fusion.node import FusionNode
from perception.transport import Received
from perception.v1 import calibration_pb2, detections_pb2, frame_pb2, status_pb2

RIG = cfg.load_rig()
FRONT, LEFT = RIG.cameras[0], RIG.cameras[1]
MS = 1_000_000
T0 = 1_800_000_000 * 10**9           # a fixed "node clock" so tests are deterministic
TEN_YEARS_NS = 10 * 365 * 24 * 3600 * 10**9


class StubEngine:
    """Stands in for the model: a fixed set of boxes (or `boxes` given), optionally raising."""

    name = "stub"

    def __init__(self, boxes: np.ndarray | None = None, fail: bool = False):
        self.boxes = boxes if boxes is not None else np.array([[10.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.1, 0.0, 0.0]] * 3,
                                                               np.float32)
        self.fail = fail
        self.calls = 0
        self.last_images: np.ndarray | None = None

    def infer(self, inputs):
        self.calls += 1
        if self.fail:
            raise RuntimeError("engine failed")
        self.last_images = inputs["images"].copy()
        n = len(self.boxes)
        return {"det_boxes": self.boxes[None], "det_scores": np.full((1, n), 0.9, np.float32),
                "det_labels": np.zeros((1, n), np.int64)}

    def close(self):
        pass


class CapturePublisher:
    def __init__(self):
        self.sent: list[tuple[str, object]] = []

    def publish(self, topic, msg, payload=None):
        self.sent.append((topic, msg))

    def close(self):
        pass

    def detections(self) -> list:
        return [m for t, m in self.sent if t == topics.DETECTIONS]


def make_node(tmp_path, monkeypatch, engine: StubEngine | None = None, **kw) -> FusionNode:
    eps = tuple(f"ipc://{tmp_path}/cam{i}" for i in range(len(RIG.cameras)))
    config = cfg.FusionNodeConfig(camera_endpoints=eps, publish=f"ipc://{tmp_path}/fusion", allow_random_init=True,
                                  threads=1, online_score=True, **kw)
    n = FusionNode(config, engine=engine or StubEngine())
    n.pub.close()
    n.pub = CapturePublisher()   # type: ignore[assignment]
    return n


@pytest.fixture
def node(tmp_path, monkeypatch):
    n = make_node(tmp_path, monkeypatch)
    yield n
    n.close()


def rx(topic, msg, pixels=None, recv_ns=T0) -> Received:
    payload = None if pixels is None else memoryview(np.ascontiguousarray(pixels)).cast("B")
    return Received(topic=topic, msg=msg, payload=payload, recv_ns=recv_ns)


def frame(cam, seq, stamp, pixels=None, **kw) -> Received:
    if pixels is None:
        pixels = np.full((cam.height, cam.width, 3), 50, np.uint8)
    return rx(topics.camera(cam.name), header(cam, seq, stamp, **kw), pixels)


def good_set(node, seq, stamp, skip=()) -> list:
    """One frame of every camera (but `skip`) stamped around `stamp`; the node clock is `stamp`."""
    msgs = [frame(cam, seq, stamp + i * MS) for i, cam in enumerate(RIG.cameras) if cam.name not in skip]
    return node.step(msgs, stamp + 10 * MS)


def assert_still_produces(node, seq, stamp):
    before = node.pipeline.outputs_count
    ready = good_set(node, seq, stamp)
    assert ready and not ready[-1].missing, "good cameras no longer give a complete frame set"
    assert node.pipeline.outputs_count == before + 1
    assert node.pub.detections()[-1].stamp_ns == ready[-1].stamp_ns


def bad_calibration(cam, **changes) -> calibration_pb2.CameraCalibration:
    p = cam.to_proto()
    for k, v in changes.items():
        if k in ("K", "T_ego_from_camera"):
            p.ClearField(k)
            getattr(p, k).extend(np.asarray(v, np.float64).ravel().tolist())
        else:
            setattr(p, k, v)
    return p


def with_calibration(cam, seq, stamp, cal) -> Received:
    return frame(cam, seq, stamp, calibration=cal)


# ------------------------------------------------------------------------------------------------
# item 1: type and content


def test_a_message_of_the_wrong_type_for_its_topic_is_counted_not_fatal(node):
    assert_still_produces(node, 1, T0)
    wrong = [rx(topics.camera("front"), detections_pb2.Detections(stamp_ns=T0)),
             rx(topics.camera("front"), FRONT.to_proto()),
             rx(topics.TRUTH, header(FRONT, 2, T0 + 50 * MS), np.zeros((FRONT.height, FRONT.width, 3), np.uint8)),
             rx(topics.DETECTIONS, detections_pb2.Detections())]
    node.step(wrong, T0 + 60 * MS)
    assert node.rejected == {"wrong_type": 3, "unexpected_topic": 1}   # detections: right type, not an input
    assert node.cameras["front"].rejected == 2            # the two on front's topic count for front
    assert node.truth_received == 0
    assert_still_produces(node, 3, T0 + 100 * MS)
    assert node.status_message(T0 + 120 * MS).rejected["wrong_type"] == 3


@pytest.mark.parametrize("changes, reason", [
    ({"K": [[0, 0, 160], [0, 100, 90], [0, 0, 1]]}, "calibration_focal"),
    ({"K": [[-200, 0, 160], [0, 200, 90], [0, 0, 1]]}, "calibration_focal"),
    ({"K": [[1e-300, 0, 160], [0, 200, 90], [0, 0, 1]]}, "calibration_focal"),       # K^-1 overflows float32
    ({"K": [[1e300, 0, 160], [0, 200, 90], [0, 0, 1]]}, "calibration_focal"),
    ({"width": 0}, "calibration_size"),
    ({"height": 100_000}, "calibration_size"),
    ({"K": [[200, 0, 5000], [0, 200, 90], [0, 0, 1]]}, "calibration_principal_point"),
    ({"K": [[math.nan, 0, 160], [0, 200, 90], [0, 0, 1]]}, "calibration_nonfinite"),
    ({"K": [[math.inf, 0, 160], [0, 200, 90], [0, 0, 1]]}, "calibration_nonfinite"),
    ({"T_ego_from_camera": np.zeros((4, 4))}, "calibration_not_rigid"),                  # singular
    ({"T_ego_from_camera": np.diag([1.0, 1.0, -1.0, 1.0])}, "calibration_not_rigid"),    # a reflection
    ({"T_ego_from_camera": np.diag([2.0, 2.0, 2.0, 1.0])}, "calibration_not_rigid"),     # a scale
    ({"K": [1.0, 2.0]}, "calibration_shape"),
])
def test_an_invalid_calibration_is_rejected_and_the_held_one_kept(node, changes, reason):
    held = node.pipeline.preprocess.calibrations["front"]
    k_inv = node.pipeline.preprocess.intrinsics_inv.copy()
    node.step([with_calibration(FRONT, 1, T0, bad_calibration(FRONT, **changes))], T0 + MS)
    assert node.rejected == {reason: 1}
    assert node.cameras["front"].rejected == 1
    assert node.pipeline.preprocess.calibrations["front"] is held
    np.testing.assert_array_equal(node.pipeline.preprocess.intrinsics_inv, k_inv)
    assert np.isfinite(node.pipeline.preprocess.intrinsics_inv).all()
    assert_still_produces(node, 2, T0 + 100 * MS)


def test_a_frame_of_width_zero_is_rejected(node):
    h = header(FRONT, 1, T0, width=0, row_stride=0)
    node.step([rx(topics.camera("front"), h, np.zeros(10, np.uint8))], T0 + MS)
    assert node.rejected == {"size_mismatch": 1}
    assert_still_produces(node, 2, T0 + 100 * MS)


def test_a_frame_from_an_unknown_camera_is_rejected(node):
    ghost = cfg.CameraConfig("ghost", FRONT.width, FRONT.height, FRONT.K, FRONT.T_ego_from_camera)
    node.step([frame(ghost, 1, T0), with_calibration(ghost, 2, T0, ghost.to_proto())], T0 + MS)
    assert node.rejected == {"unknown_camera": 2}
    assert_still_produces(node, 3, T0 + 100 * MS)
    assert "ghost" not in {c.camera_name for c in node.status_message(T0 + 120 * MS).cameras}


def test_a_frame_carrying_another_cameras_calibration_does_not_replace_it(node):
    held_front = node.pipeline.preprocess.calibrations["front"]
    held_left = node.pipeline.preprocess.calibrations["front_left"]
    # front's frame with front_left's calibration, topic and name of front
    node.step([with_calibration(FRONT, 1, T0, LEFT.to_proto())], T0 + MS)
    assert node.rejected == {"calibration_camera_mismatch": 1}
    assert node.pipeline.preprocess.calibrations["front"] is held_front
    assert node.pipeline.preprocess.calibrations["front_left"] is held_left
    assert_still_produces(node, 2, T0 + 100 * MS)


def test_a_calibration_is_only_applied_with_a_valid_frame(node):
    """A valid new calibration on a frame whose payload is broken is not applied either."""
    T = FRONT.T_ego_from_camera.copy()
    T[2, 3] += 0.2
    new = FRONT.with_extrinsics(T)
    h = header(new, 1, T0, calibration=new.to_proto(), encoding=frame_pb2.PIXEL_ENCODING_UNSPECIFIED)
    node.step([rx(topics.camera("front"), h, np.zeros((new.height, new.width, 3), np.uint8))], T0 + MS)
    assert node.rejected == {"frame_bad_encoding": 1}
    assert node.pipeline.preprocess.calibrations["front"].calibration_id == FRONT.calibration_id
    node.step([frame(new, 2, T0 + 50 * MS, calibration=new.to_proto())], T0 + 51 * MS)
    assert node.pipeline.preprocess.calibrations["front"].calibration_id == new.calibration_id


@pytest.mark.parametrize("encoding", ["RGB8", "MONO8"])
def test_rgb8_and_mono8_frames_reach_the_model_as_bgr(tmp_path, monkeypatch, encoding):
    engine = StubEngine()
    node = make_node(tmp_path, monkeypatch, engine=engine)
    try:
        good_set(node, 1, T0)        # every slot holds a BGR image of 50s first
        h, w = FRONT.height, FRONT.width
        if encoding == "RGB8":
            pixels = np.empty((h, w, 3), np.uint8)
            pixels[..., 0], pixels[..., 1], pixels[..., 2] = 200, 100, 10      # R, G, B
            want = (10, 100, 200)                                                # B, G, R
            hdr = header(FRONT, 2, T0 + 100 * MS, encoding=frame_pb2.PIXEL_ENCODING_RGB8)
        else:
            pixels = np.full((h, w, 1), 77, np.uint8)
            want = (77, 77, 77)
            hdr = header(FRONT, 2, T0 + 100 * MS, encoding=frame_pb2.PIXEL_ENCODING_MONO8, row_stride=w)
        msgs = [rx(topics.camera("front"), hdr, pixels)]
        msgs += [frame(cam, 2, T0 + 100 * MS + i * MS) for i, cam in enumerate(RIG.cameras) if i > 0]
        ready = node.step(msgs, T0 + 110 * MS)
        assert ready and not ready[-1].missing and node.rejected == {}
        assert engine.last_images is not None
        img = engine.last_images[0, RIG.index("front")]
        np.testing.assert_array_equal(img.reshape(-1, 3).min(0), want)
        np.testing.assert_array_equal(img.reshape(-1, 3).max(0), want)
    finally:
        node.close()


def test_nan_boxes_from_the_engine_are_never_published(tmp_path, monkeypatch):
    boxes = np.array([[10, 2, 0.5, 4, 2, 1.5, 0.1, 0, 0], [np.nan, 2, 0.5, 4, 2, 1.5, 0, 0, 0],
                      [5, np.inf, 0.5, 4, 2, 1.5, 0, 0, 0]], np.float32)
    node = make_node(tmp_path, monkeypatch, engine=StubEngine(boxes))
    try:
        good_set(node, 1, T0)
        (msg,) = node.pub.detections()
        assert len(msg.objects) == 1
        for o in msg.objects:
            vals = [o.center.x, o.center.y, o.center.z, o.size.x, o.size.y, o.size.z, o.yaw, o.score]
            assert all(math.isfinite(v) for v in vals)
        assert node.status_message(T0 + 20 * MS).rejected["box_nonfinite"] == 2
    finally:
        node.close()


def test_an_unexpected_exception_is_counted_as_internal_error_and_the_node_goes_on(node, monkeypatch):
    original = node.pipeline.preprocess.check
    monkeypatch.setattr(node.pipeline.preprocess, "check", lambda *a, **k: 1 / 0)
    node.step([frame(FRONT, 1, T0)], T0 + MS)
    assert node.rejected == {"internal_error": 1}
    monkeypatch.setattr(node.pipeline.preprocess, "check", original)
    assert_still_produces(node, 2, T0 + 100 * MS)


def test_an_engine_failure_is_counted_and_the_node_goes_on(node):
    node.engine.fail = True
    assert good_set(node, 1, T0)
    assert node.rejected == {"process_error": 1} and node.pipeline.outputs_count == 0
    node.engine.fail = False
    assert_still_produces(node, 2, T0 + 100 * MS)


# ------------------------------------------------------------------------------------------------
# item 2: time and sequence


def test_a_restarted_camera_is_accepted_at_once_and_counted(node):
    for k in range(5):
        assert_still_produces(node, 1000 + k, T0 + k * 100 * MS)
    # front restarts: its sequence starts again at 0
    msgs = [frame(FRONT, 0, T0 + 500 * MS)]
    msgs += [frame(cam, 1005, T0 + 500 * MS + i * MS) for i, cam in enumerate(RIG.cameras) if i > 0]
    ready = node.step(msgs, T0 + 510 * MS)
    assert ready and not ready[-1].missing and ready[-1].frames["front"].sequence == 0
    assert node.sync.stats.rejected == {}
    status = node.status_message(T0 + 520 * MS)
    front = next(c for c in status.cameras if c.camera_name == "front")
    assert front.restarts == 1 and front.level == status_pb2.LEVEL_OK
    assert node.pub.detections()[-1].frames[0].sequence == 0


def test_sequence_2_pow_64_minus_1_does_not_exclude_a_camera(node):
    top = 2**64 - 1
    msgs = [frame(FRONT, top, T0)] + [frame(cam, 1, T0 + i * MS) for i, cam in enumerate(RIG.cameras) if i > 0]
    assert node.step(msgs, T0 + 10 * MS)
    for k in range(1, 4):
        ready = good_set(node, 1 + k, T0 + k * 100 * MS)
        assert ready and ready[-1].frames["front"].sequence == 1 + k
    status = node.status_message(T0 + 400 * MS)      # no uint64 overflow in its counters
    front = next(c for c in status.cameras if c.camera_name == "front")
    assert front.restarts == 1 and node.sync.stats.rejected == {}
    assert status.sets_dropped_overload == 0


def test_a_duplicate_frame_is_still_rejected(node):
    good_set(node, 1, T0)
    node.step([frame(FRONT, 1, T0)], T0 + 20 * MS)
    assert node.sync.stats.rejected == {"duplicate_or_reordered": 1} and not node.sync.stats.restarts


def test_a_frame_stamped_ten_years_ahead_is_rejected_and_others_keep_going(node):
    assert_still_produces(node, 1, T0)
    node.step([frame(FRONT, 2, T0 + TEN_YEARS_NS)], T0 + 50 * MS)
    assert node.rejected == {"stamp_future": 1}
    for k in range(2, 6):
        assert_still_produces(node, k + 1, T0 + k * 100 * MS)
    node.step([frame(FRONT, 10, T0 - TEN_YEARS_NS)], T0 + 650 * MS)
    assert node.rejected == {"stamp_future": 1, "stamp_past": 1}
    assert_still_produces(node, 11, T0 + 700 * MS)
    assert node.sync.stats.rejected == {}


def test_stamp_limits_are_configurable(tmp_path, monkeypatch):
    node = make_node(tmp_path, monkeypatch, max_future_ms=10.0, max_past_ms=100.0)
    try:
        node.step([frame(FRONT, 1, T0 + 20 * MS)], T0)
        node.step([frame(FRONT, 2, T0 - 200 * MS)], T0)
        assert node.rejected == {"stamp_future": 1, "stamp_past": 1}
    finally:
        node.close()


# ------------------------------------------------------------------------------------------------
# status health


def test_a_camera_whose_frames_are_all_rejected_is_warn_and_named(node):
    for k in range(5):
        t = T0 + k * 100 * MS
        msgs = [frame(FRONT, k + 1, t, calibration_id="deadbeef")]
        msgs += [frame(cam, k + 1, t + i * MS) for i, cam in enumerate(RIG.cameras) if i > 0]
        node.step(msgs, t + 10 * MS)
        node.step([], t + 200 * MS)        # the sync's timeout publishes the set without front
    status = node.status_message(T0 + 450 * MS)
    front = next(c for c in status.cameras if c.camera_name == "front")
    assert front.level == status_pb2.LEVEL_WARN and "stale_calibration" in front.message
    assert status.level == status_pb2.LEVEL_WARN and "front" in status.message
    assert all(c.level == status_pb2.LEVEL_OK for c in status.cameras if c.camera_name != "front")
    assert status.rejected["stale_calibration"] == 5
    assert node.pipeline.outputs_count >= 4              # the others were still published


def test_no_output_while_cameras_are_fresh_is_an_error(node):
    node.engine.fail = True
    for k in range(30):
        good_set(node, k + 1, T0 + k * 100 * MS)
    status = node.status_message(T0 + 2950 * MS)
    assert status.level == status_pb2.LEVEL_ERROR and "no output" in status.message
    node.engine.fail = False
    good_set(node, 31, T0 + 3000 * MS)
    status = node.status_message(T0 + 3050 * MS)
    assert status.level == status_pb2.LEVEL_OK and status.message == "ok"


# ------------------------------------------------------------------------------------------------
# property-based fuzz of the whole per-message path (scripts/fuzz_node.py runs the same generator
# for 100,000+ inputs outside pytest)


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rng=st.randoms(use_true_random=False), n=st.integers(1, 150))
def test_fuzzed_input_never_escapes_and_every_input_is_accounted_for(tmp_path, monkeypatch, rng, n):
    from perception.fusion.fuzz import FuzzEngine, FuzzState, next_input

    node = make_node(tmp_path, monkeypatch, engine=FuzzEngine(rng))   # type: ignore[arg-type]
    try:
        state = FuzzState(rig=RIG, now_ns=T0)
        for _ in range(n):
            node.step([next_input(rng, state)], state.now_ns)     # raises -> the test fails
        assert node.inputs == n
        assert node.unaccounted_inputs() == 0
        assert node.frames_pushed == sum(c.received for c in node.cameras.values())
        pre = node.pipeline.preprocess                               # geometry inputs stay usable
        assert np.isfinite(pre.intrinsics_inv).all() and np.isfinite(pre.ego_from_camera).all()
        assert not {"internal_error", "process_error", "sync_poll_error"} & set(node.rejected), node.rejected
        status = node.status_message(state.now_ns)
        status.SerializeToString()                                    # every counter fits its field
        for det in node.pub.detections():
            for o in det.objects:
                assert all(math.isfinite(v) for v in (o.center.x, o.center.y, o.center.z, o.size.x, o.size.y,
                                                       o.size.z, o.yaw, o.score, o.velocity.x, o.velocity.y))
    finally:
        node.close()


def test_security_refusals_reach_the_node_status(node, monkeypatch):
    """CurveZMQ refusals counted by the installed security hook appear in NodeStatus.counters."""
    from perception import transport

    class Hook:
        def __call__(self, sock, is_server):
            pass

        def stats(self):
            return {"refused": 3, "accepted": 1}

    monkeypatch.setattr(transport, "_security_hook", Hook())
    counters = node.status_message().counters
    assert counters["security_refused"] == 3 and counters["security_accepted"] == 1
