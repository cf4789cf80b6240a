"""The fusion node in-process, fed by test publishers: bad input is counted and dropped, the
node keeps publishing, a missing camera is masked after the timeout, and a new calibration
carried by a frame replaces the held one."""
import threading
import time

import numpy as np
import pytest
from frame_headers import header

from perception import config as cfg
from perception import topics
from perception.fusion.node import FusionNode
from perception.transport import Publisher, Subscriber

RIG = cfg.load_rig()


@pytest.fixture
def node(tmp_path):
    eps = [f"ipc://{tmp_path}/cam{i}" for i in range(len(RIG.cameras))]
    out = f"ipc://{tmp_path}/fusion"
    config = cfg.FusionNodeConfig(camera_endpoints=tuple(eps), publish=out, allow_random_init=True, timeout_ms=1000,
                                  threads=1, online_score=False, backend="torch")
    pubs = [Publisher(ep) for ep in eps]
    n = FusionNode(config)
    t = threading.Thread(target=n.run, daemon=True)
    t.start()
    sub = Subscriber(out, ["detections", "status/fusion"])
    for p in pubs:
        assert p.wait_for_subscriber(10.0)
    yield n, pubs, sub
    n.running = False
    t.join(10)
    n.close()
    sub.close()
    for p in pubs:
        p.close()


def send_set(pubs, seq, stamp, skip=(), **kw):
    for i, (cam, p) in enumerate(zip(RIG.cameras, pubs)):
        if cam.name not in skip:
            p.publish(topics.camera(cam.name), header(cam, seq, stamp + i * 1_000_000, **kw),
                      np.full((cam.height, cam.width, 3), 40 + 10 * i, np.uint8))


def wait_for(sub, pred, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rx = sub.recv(timeout_ms=200)
        if rx is not None and pred(rx):
            return rx.msg
    raise AssertionError("expected message did not arrive")


def test_bad_frames_are_counted_and_dropped_while_good_sets_still_publish(node):
    n, pubs, sub = node
    t0 = time.time_ns()
    send_set(pubs, 1, t0)
    first = wait_for(sub, lambda rx: rx.topic == "detections")
    assert not first.missing_cameras and len(first.frames) == 6

    front, p0 = RIG.cameras[0], pubs[0]
    topic = topics.camera(front.name)
    bad = [(header(front, 2, t0 + 10**8, calibration_id="deadbeef"), np.zeros((180, 320, 3), np.uint8)),
           (header(front, 3, t0 + 2 * 10**8, width=100, height=50, row_stride=300),      # not the calibrated size
            np.zeros((50, 100, 3), np.uint8)),
           (header(front, 4, t0 + 3 * 10**8), np.zeros(10, np.uint8))]                    # payload too short
    for h, pixels in bad:
        p0.publish(topic, h, pixels)
        time.sleep(0.3)         # one at a time: back to back, only the newest would be read

    send_set(pubs, 5, t0 + 5 * 10**8)
    wait_for(sub, lambda rx: rx.topic == "detections" and rx.msg.stamp_ns > first.stamp_ns)
    status = wait_for(sub, lambda rx: rx.topic == "status/fusion" and rx.msg.outputs >= 2)
    counters = dict(status.counters)
    assert counters.get("stale_calibration") == 1 and counters.get("size_mismatch") == 1
    assert sum(v for k, v in counters.items() if k.startswith("malformed")) >= 1
    assert status.backend == first.backend and len(status.cameras) == 6


def test_missing_camera_is_masked_after_the_timeout(node):
    n, pubs, sub = node
    send_set(pubs, 1, time.time_ns(), skip=("back",))
    msg = wait_for(sub, lambda rx: rx.topic == "detections")
    assert list(msg.missing_cameras) == ["back"] and len(msg.frames) == 5
    assert msg.timings.sync_wait_ms >= 990


def test_a_frame_carrying_a_new_calibration_replaces_the_held_one(node):
    n, pubs, sub = node
    front = RIG.cameras[0]
    T = front.T_ego_from_camera.copy()
    T[2, 3] += 0.2                                                     # remounted 20 cm higher
    new = front.with_extrinsics(T)
    t0 = time.time_ns()
    send_set(pubs, 1, t0, skip=("front",))
    pubs[0].publish(topics.camera("front"), header(new, 1, t0, calibration=new.to_proto()),
                    np.zeros((180, 320, 3), np.uint8))
    wait_for(sub, lambda rx: rx.topic == "detections" and not rx.msg.missing_cameras)
    held = n.pipeline.preprocess.calibrations["front"]
    assert held.calibration_id == new.calibration_id
    np.testing.assert_allclose(n.pipeline.preprocess.ego_from_camera[0, 0], T, atol=1e-6)


def test_sets_the_engine_never_computed_are_counted_from_sequence_gaps():
    """Outputs plus the overload count cover every capture: a jump from sequence 4 to 7 means
    two sets were dropped; a camera whose sequence went back (restart) adds nothing."""
    from types import SimpleNamespace

    from perception.fusion.sync import FrameSet, TimedFrame

    def fs(seqs):
        return FrameSet({n: TimedFrame(n, s, 0, 0) for n, s in seqs.items()}, [], 0, 0)

    node = SimpleNamespace(sets_dropped_overload=0, _last_sequence={})
    for seqs in ({"a": 3, "b": 3}, {"a": 4, "b": 4}, {"a": 7, "b": 6}, {"a": 8, "b": 1}, {"a": 9, "b": 2}):
        FusionNode._count_skipped(node, fs(seqs))
    assert node.sets_dropped_overload == 2
