"""perception.client against a fake node (no engine: fast, and every error path reachable): frame
sets go out as a camera would send them (header, pixels, calibration when changed, rising stamps
near the wall clock), Detections come back in simulator time, bad input is a ClientError naming the
camera and the expected shape, silence is a StepTimeout quoting the node's status, a node that dies
at start is a ClientError quoting its log. Also the assertion helpers' messages and the plugin."""
from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from perception import config as pconfig
from perception import topics

pytest_plugins = ["pytester"]


class FakeNode:
    """Subscribes to the cameras, publishes status, and answers each complete frame set (or each
    frame, when answer_each) with a Detections listing its frames."""

    def __init__(self, tmp_path: Path, rig, answer: bool = True):
        from perception.transport import Publisher, Subscriber

        self.rig = rig
        self.cams = [f"ipc://{tmp_path}/cam{i}" for i in range(len(rig.cameras))]
        self.node = f"ipc://{tmp_path}/node"
        self.pub = Publisher(self.node)
        self.answer = answer
        self.frames: list = []            # (header, pixels) received
        self.truth: list = []
        self._sub = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(Subscriber,), daemon=True)
        self._thread.start()

    def _run(self, Subscriber) -> None:
        from perception.transport import frame_pixels
        from perception.v1 import detections_pb2, status_pb2

        sub = Subscriber(self.cams, [topics.camera(n) for n in self.rig.camera_names] + [topics.TRUTH], rcvhwm=100)
        pending: dict = {}
        next_status = 0.0
        try:
            while not self._stop.is_set():
                if time.monotonic() > next_status:
                    st = status_pb2.NodeStatus(node="fusion", message="fake")
                    st.rejected["stamp_past"] = 2
                    self.pub.publish(topics.FUSION_STATUS, st)
                    next_status = time.monotonic() + 0.2
                rx = sub.recv(50)
                if rx is None:
                    continue
                if rx.topic == topics.TRUTH:
                    self.truth.append(rx.msg)
                    continue
                h = rx.msg
                self.frames.append((h, np.array(frame_pixels(rx))))
                pending.setdefault(h.capture_end_ns, []).append(h)
                if self.answer and len(pending[h.capture_end_ns]) == len(self.rig.cameras):
                    hs = pending.pop(h.capture_end_ns)
                    d = detections_pb2.Detections(stamp_ns=h.capture_end_ns)
                    for x in hs:
                        d.frames.add(camera_name=x.camera_name, sequence=x.sequence, capture_end_ns=x.capture_end_ns)
                    d.objects.add(object_class=1, score=0.9, center=detections_pb2.Vector3(x=10.0, y=-2.0))
                    self.pub.publish(topics.DETECTIONS, d)
        finally:
            sub.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.pub.close()


@pytest.fixture
def rig():
    return pconfig.load_rig()


def images(rig, value: int = 7) -> dict:
    return {c.name: np.full((c.height, c.width, 3), value, np.uint8) for c in rig.cameras}


def test_step_sends_a_frame_set_and_returns_its_detections_in_simulator_time(tmp_path, rig):
    from perception.client import Session
    from perception.v1 import detections_pb2

    node = FakeNode(tmp_path, rig)
    try:
        with Session.connect(node.cams, node.node, rig=rig, wait_s=20) as s:
            truth = detections_pb2.GroundTruth(stamp_ns=5, world_seed=1)
            truth.objects.add(object_class=1, score=1.0, center=detections_pb2.Vector3(x=10.0, y=-2.0))
            before = time.time_ns()
            r0 = s.step(images(rig, 1), stamp_ns=5, truth=truth, timeout_s=20)
            r1 = s.step(images(rig, 2), stamp_ns=5 + 100_000_000, timeout_s=20)
            after = time.time_ns()
    finally:
        node.close()
    assert r0.step == 0 and r1.step == 1 and r0.missing_cameras == []
    d = r0.detections
    assert d.stamp_ns == 5 and sorted(f.camera_name for f in d.frames) == sorted(rig.camera_names)
    assert all(f.capture_end_ns == 5 and f.sequence == 0 for f in d.frames)
    assert all(f.capture_end_ns == 5 + 100_000_000 and f.sequence == 1 for f in r1.detections.frames)
    assert r0.truth is truth and r0.wait_s >= 0 and len(d.objects) == 1
    # On the wire: wall-clock stamps (rising, one per set), rising sequences, calibration once per camera.
    heads = [h for h, _ in node.frames]
    assert len(heads) == 2 * len(rig.cameras)
    stamps = sorted({h.capture_end_ns for h in heads})
    assert len(stamps) == 2 and before <= stamps[0] < stamps[1] <= after + 1_000_000
    assert r0.received.stamp_ns == stamps[0]
    for name in rig.camera_names:
        mine = [h for h in heads if h.camera_name == name]
        assert mine[1].sequence == mine[0].sequence + 1
        assert mine[0].HasField("calibration") and not mine[1].HasField("calibration")
        assert mine[0].calibration.calibration_id == mine[0].calibration_id == rig.camera(name).calibration_id
    assert [p.max() for h, p in node.frames[:1]] == [1]
    assert [t.stamp_ns for t in node.truth] == [stamps[0]] and node.truth[0].objects[0].center.x == 10.0


def test_a_new_calibration_is_sent_once_and_images_are_checked_against_it(tmp_path, rig):
    from perception.client import ClientError, Session

    node = FakeNode(tmp_path, rig)
    front = rig.camera("front")
    small = front.resized(160, 90)
    try:
        with Session.connect(node.cams, node.node, rig=rig, wait_s=20) as s:
            s.step(images(rig), 1, timeout_s=20)
            imgs = images(rig)
            with pytest.raises(ClientError, match=r"camera 'front': expected a uint8 image of shape \(90, 160, 3\)"):
                s.step(imgs, 2, calibrations={"front": small}, timeout_s=20)
            imgs["front"] = np.zeros((90, 160, 3), np.uint8)
            s.step(imgs, 3, calibrations={"front": small}, timeout_s=20)
            s.step(imgs, 4, calibrations={"front": small}, timeout_s=20)
    finally:
        node.close()
    fronts = [h for h, _ in node.frames if h.camera_name == "front"]
    assert [h.HasField("calibration") for h in fronts] == [True, True, False]
    assert fronts[1].calibration_id == small.calibration_id and (fronts[1].width, fronts[1].height) == (160, 90)


def test_bad_input_is_refused_before_anything_is_sent(tmp_path, rig):
    from perception.client import ClientError, Session
    from perception.v1 import detections_pb2

    node = FakeNode(tmp_path, rig)
    try:
        with Session.connect(node.cams, node.node, rig=rig, wait_s=20) as s:
            good = images(rig)
            cases = [
                ({"nowhere": good["front"]}, 1, None, None, "camera 'nowhere' is not in rig"),
                ({"front": good["front"].astype(np.float32)}, 1, None, None, r"camera 'front': expected a uint8 image of shape \(180, 320, 3\)"),
                ({"back": good["back"][:, :100]}, 1, None, None, r"camera 'back': .* got uint8 \(180, 100, 3\)"),
                ({}, 1, None, None, "non-empty mapping"),
                (good, -1, None, None, "stamp_ns must be a non-negative integer"),
                (good, 1.5, None, None, "stamp_ns must be a non-negative integer"),
                (good, 1, {"front": rig.camera("back")}, None, "named 'front'"),
                (good, 1, None, "truth", "must be a perception.v1.GroundTruth"),
            ]
            bad_truth = detections_pb2.GroundTruth()
            bad_truth.objects.add(center=detections_pb2.Vector3(x=float("nan")))
            cases.append((good, 1, None, bad_truth, "non-finite"))
            for imgs, stamp, cals, truth, message in cases:
                with pytest.raises(ClientError, match=message):
                    s.step(imgs, stamp, calibrations=cals, truth=truth, timeout_s=5)
            assert s.steps == 0
    finally:
        node.close()
    assert node.frames == []


def test_silence_is_a_step_timeout_with_the_node_status(tmp_path, rig):
    from perception.client import Session, StepTimeout

    node = FakeNode(tmp_path, rig, answer=False)
    try:
        with Session.connect(node.cams, node.node, rig=rig, wait_s=20) as s:
            with pytest.raises(StepTimeout, match=r"no Detections for step 0 .* within 0.3 s .*stamp_past 2"):
                s.step(images(rig), 1, timeout_s=0.3)
    finally:
        node.close()


def test_streaming_publish_and_detections(tmp_path, rig):
    from perception.client import Session

    node = FakeNode(tmp_path, rig)
    try:
        with Session.connect(node.cams, node.node, rig=rig, wait_s=20) as s:
            for k in range(3):
                assert s.publish(images(rig), stamp_ns=1000 + k) == k
            got = list(itertools.islice(s.detections(timeout_s=20.0), 3))     # generous: a loaded CI box
    finally:
        node.close()
    assert [d.stamp_ns for d in got] == [1000, 1001, 1002]


def test_connect_without_a_node_says_what_is_missing(tmp_path, rig):
    from perception.client import ClientError, Session

    cams = [f"ipc://{tmp_path}/cam{i}" for i in range(len(rig.cameras))]
    with pytest.raises(ClientError, match=r"not ready within 0.3 s \(no subscription to camera\(s\) front"):
        Session.connect(cams, f"ipc://{tmp_path}/node", rig=rig, wait_s=0.3)
    with pytest.raises(ClientError, match="one per camera"):
        Session.connect(cams[:2], f"ipc://{tmp_path}/node", rig=rig, wait_s=0.3)


def test_a_node_that_dies_at_start_is_an_error_with_its_log(tmp_path):
    from perception.client import ClientError, Session

    with pytest.raises(ClientError, match=r"(?s)exited with code 2 while starting; its last log lines:.*cannot start"):
        Session.start(model=tmp_path / "no_model", start_timeout_s=60)
    with pytest.raises(ClientError, match="transport must be"):
        Session.start(transport="udp")


# ---------------------------------------------------------------------------------------- helpers

def dets(*objs):
    from perception.boxes import proto_class
    from perception.v1 import detections_pb2

    d = detections_pb2.Detections()
    for cls, score, x, y in objs:
        d.objects.add(object_class=proto_class(cls), score=score, center=detections_pb2.Vector3(x=x, y=y))
    return d


def test_assert_detected_returns_the_match_or_says_what_was_seen():
    from perception.testing import assert_detected

    d = dets(("car", 0.8, 10.0, 0.0), ("car", 0.9, 30.0, 5.0), ("pedestrian", 0.7, 11.0, 0.5))
    assert assert_detected(d, "car", (10.5, 0.5), within_m=2.0).score == pytest.approx(0.8)
    with pytest.raises(AssertionError) as e:
        assert_detected(d, "car", (20.0, 0.0), within_m=2.0)
    msg = str(e.value)
    assert "expected a car with score >= 0.3 within 2 m of (20.0, 0.0) m" in msg
    assert "the nearest car is car 0.80 at (10.0, 0.0) m, 10.0 m away" in msg
    assert "3 object(s) were detected (nearest first)" in msg and "pedestrian 0.70 at (11.0, 0.5) m" in msg
    with pytest.raises(AssertionError, match="no truck was detected at all"):
        assert_detected(d, "truck", (10.0, 0.0))
    with pytest.raises(AssertionError, match="nearest car is car 0.80"):
        assert_detected(d, "car", (10.0, 0.0), min_score=0.85)
    with pytest.raises(AssertionError, match="nothing was detected"):
        assert_detected(dets(), "car", (10.0, 0.0))
    with pytest.raises(ValueError, match="unknown class 'bus'"):
        assert_detected(d, "bus", (10.0, 0.0))


def test_assert_no_phantoms_lists_the_offenders():
    from perception.testing import Region, assert_no_phantoms

    d = dets(("car", 0.8, 10.0, 0.0), ("traffic_cone", 0.4, 5.0, 1.0), ("truck", 0.6, -8.0, 3.0))
    assert_no_phantoms(d, Region(0, 20, -5, 5), score=0.9)
    assert_no_phantoms(d, (0, 20, -5, 5), score=0.5, classes=["truck"])
    with pytest.raises(AssertionError) as e:
        assert_no_phantoms(d, (0, 20, -5, 5), score=0.3)
    msg = str(e.value)
    assert "expected no objects with score >= 0.3 in x [0, 20) y [-5, 5) m; found 2" in msg
    assert msg.index("car 0.80 at (10.0, 0.0) m") < msg.index("traffic_cone 0.40 at (5.0, 1.0) m")
    assert "truck 0.60 at (-8.0, 3.0) m" in msg     # everything seen
    with pytest.raises(ValueError, match="empty region"):
        Region(1, 1, 0, 1)


# ---------------------------------------------------------------------------------------- plugin

def test_the_plugin_gives_fixtures_options_and_clear_start_failures(pytester):
    """Loaded through the pytest11 entry point when the package is installed (else with -p): the
    fixtures and options exist, and a node that cannot start fails the test with the node's own reason."""
    pytester.makepyfile(test_user="""
        import pytest

        @pytest.fixture(scope="module")
        def perception_node_options(perception_node_options):
            return dict(perception_node_options, model="/nonexistent/model")

        def test_uses_the_node(perception_session):
            pass
    """)
    from importlib.metadata import entry_points

    installed = any(ep.value == "perception.testing.pytest_plugin" for ep in entry_points(group="pytest11"))
    load = [] if installed else ["-p", "perception.testing.pytest_plugin"]    # -p on top of the entry point would register it twice
    fixtures = pytester.runpytest_subprocess(*load, "--fixtures")
    fixtures.stdout.fnmatch_lines(["*perception_node*", "*perception_session*", "*perception_node_options*"])
    helped = pytester.runpytest_subprocess(*load, "--help")
    helped.stdout.fnmatch_lines(["*--perception-backend*", "*--perception-threads*"])
    run = pytester.runpytest_subprocess(*load, "-p", "no:cacheprovider")
    run.assert_outcomes(errors=1)
    run.stdout.fnmatch_lines(["*could not start the fusion node*exited with code 2 while starting*"])


def test_pyproject_registers_the_plugin():
    text = (pconfig.REPO_ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\nperception = "perception.testing.pytest_plugin"' in text
