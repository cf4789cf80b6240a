"""The live score pairs detections with the simulator's truth of the same instant."""
import pytest

from perception.fusion.online_score import OnlineScore
from perception.sim.truth import MIN_VISIBLE_PX
from perception.v1 import detections_pb2 as d

CLASSES = ("car", "truck", "pedestrian", "cyclist", "traffic_cone")


def obj(x, y, cls=1, score=1.0, visible=100):
    return d.Object3D(object_class=cls, score=score, center=d.Vector3(x=x, y=y, z=0.8),
                      size=d.Vector3(x=4.5, y=1.9, z=1.6), visible_pixels=visible)


def detections(stamp, objects):
    m = d.Detections(stamp_ns=stamp, objects=objects)
    m.frames.add(camera_name="front", capture_end_ns=stamp)
    return m


def test_perfect_detections_score_one_and_shifted_ones_lower():
    s = OnlineScore(CLASSES)
    assert s.score() is None
    for k in range(5):
        t = 1_000_000_000 * k
        s.add_truth(d.GroundTruth(stamp_ns=t, objects=[obj(10, 0), obj(-5, 8), obj(100, 0)]))  # 100 m: beyond the car range
        assert s.add_detections(detections(t, [obj(10, 0, score=0.9), obj(-5, 8, score=0.8)]))
    assert s.score() == pytest.approx(1.0)
    s2 = OnlineScore(CLASSES)
    s2.add_truth(d.GroundTruth(stamp_ns=0, objects=[obj(10, 0)]))
    s2.add_detections(detections(0, [obj(11.5, 0, score=0.9)]))                    # 1.5 m off
    assert 0.0 < s2.score() < 1.0


def test_truth_a_camera_cannot_see_is_not_scored():
    s = OnlineScore(CLASSES)
    s.add_truth(d.GroundTruth(stamp_ns=0, objects=[obj(10, 0), obj(-5, 8, visible=MIN_VISIBLE_PX - 1)]))
    s.add_detections(detections(0, [obj(10, 0, score=0.9)]))     # the hidden car is not a miss
    assert s.score() == pytest.approx(1.0)


def test_detections_without_truth_near_in_time_are_not_scored():
    s = OnlineScore(CLASSES, max_offset_ns=50_000_000)
    s.add_truth(d.GroundTruth(stamp_ns=0, objects=[obj(10, 0)]))
    assert not s.add_detections(detections(200_000_000, [obj(10, 0)]))
    assert s.score() is None
