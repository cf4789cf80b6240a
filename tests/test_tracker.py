"""The tracker (perception/fusion/tracker.py): ids, velocity from moving centres, resets."""
from __future__ import annotations

import numpy as np

from perception.fusion.tracker import Tracker, TrackerConfig
from perception.v1 import detections_pb2 as d

CAR, PED, CONE = 1, 3, 5
DT_NS = 100_000_000          # 10 Hz


def obj(cls, x, y, vx=0.0, vy=0.0):
    return d.Object3D(object_class=cls, score=0.8, center=d.Vector3(x=x, y=y, z=0.8),
                      size=d.Vector3(x=4.5, y=1.8, z=1.5), velocity=d.Vector3(x=vx, y=vy))


def test_velocity_converges_on_a_moving_car_with_noisy_centres_and_model_velocity():
    rng = np.random.default_rng(0)
    tracker = Tracker()
    truth_v = np.array([8.0, -1.0])
    model_err, tracked_err, ids = [], [], set()
    for k in range(30):
        pos = np.array([-20.0, 6.0]) + truth_v * k * 0.1 + rng.normal(0, 0.3, 2)
        model_v = truth_v + rng.normal(0, 3.0, 2)
        o = obj(CAR, *pos, *model_v)
        tracker.update([o], 10**12 + k * DT_NS)
        ids.add(o.track_id)
        if k >= 10:
            model_err.append(np.linalg.norm(model_v - truth_v))
            tracked_err.append(np.linalg.norm([o.velocity.x - truth_v[0], o.velocity.y - truth_v[1]]))
    assert ids == {1}                                   # one track all along
    assert np.mean(tracked_err) < 1.0 < np.mean(model_err) / 3


def test_first_frame_keeps_the_model_velocity_and_a_static_cone_settles_near_zero():
    rng = np.random.default_rng(1)
    tracker = Tracker()
    o = obj(CONE, 5.0, 2.0, 1.5, -0.5)
    tracker.update([o], 10**12)
    assert (o.velocity.x, o.velocity.y) == (1.5, -0.5) and o.track_id == 1
    for k in range(1, 20):
        # the model keeps guessing motion (1.5 m/s per axis, random), the centre stays put
        o = obj(CONE, 5.0 + 0.05 * (-1) ** k, 2.0, *rng.normal(0, 1.5, 2))
        tracker.update([o], 10**12 + k * DT_NS)
    assert np.hypot(o.velocity.x, o.velocity.y) < 0.3


def test_classes_never_share_a_track_and_each_object_keeps_its_id():
    tracker = Tracker()
    for k in range(5):
        a, b = obj(CAR, 10.0 + 0.5 * k, 0.0), obj(PED, 10.2 + 0.5 * k, 0.3)
        c = obj(CAR, -10.0, 4.0)
        tracker.update([a, b, c], 10**12 + k * DT_NS)
        if k == 0:
            first = (a.track_id, b.track_id, c.track_id)
    assert len(set(first)) == 3
    assert (a.track_id, b.track_id, c.track_id) == first


def test_lost_tracks_expire_and_jumps_in_time_start_afresh():
    tracker = Tracker(TrackerConfig(max_age_s=0.3, max_gap_s=1.0))
    tracker.update([obj(CAR, 0.0, 10.0)], 10**12)
    tracker.update([], 10**12 + 4 * DT_NS)              # 0.4 s unseen: dropped
    o = obj(CAR, 0.0, 10.0)
    tracker.update([o], 10**12 + 5 * DT_NS)
    assert o.track_id == 2
    back = obj(CAR, 0.0, 10.0, 3.0, 0.0)
    tracker.update([back], 10**12)                      # time went backwards (a new scenario)
    assert back.track_id == 1 and back.velocity.x == 3.0 and len(tracker.tracks) == 1   # ids start again
    far = obj(CAR, 0.0, 10.0)
    tracker.update([far], 10**12 + 30 * DT_NS)         # a 3 s gap
    assert far.track_id == 1 and len(tracker.tracks) == 1


def test_the_pipeline_tracks_by_default_and_not_when_told(tmp_path):
    from perception.replay import OfflineReplay, ReplayConfig
    from perception.sim.drive import write_sim_drive

    path = tmp_path / "drive.mcap"
    write_sim_drive(path, seconds=0.5, seed=11)
    out: dict[bool, list] = {True: [], False: []}
    for tracking in (True, False):
        replay = OfflineReplay(ReplayConfig(backend="torch", threads=1, tracking=tracking))
        replay.run(path, on_detections=out[tracking].append)
    assert [len(m.objects) for m in out[True]] == [len(m.objects) for m in out[False]]
    assert all(o.track_id > 0 for m in out[True] for o in m.objects)
    assert all(o.track_id == 0 for m in out[False] for o in m.objects)
    # Same boxes; only the velocity (and id) differ after the first set.
    for a, b in zip(out[True][-1].objects, out[False][-1].objects):
        assert (a.center.x, a.center.y, a.score) == (b.center.x, b.center.y, b.score)
    first_t, first_f = out[True][0].objects, out[False][0].objects
    assert [(o.velocity.x, o.velocity.y) for o in first_t] == [(o.velocity.x, o.velocity.y) for o in first_f]


def test_sets_restamped_onto_the_wall_clock_are_tracked_in_their_source_time():
    from perception.fusion.pipeline import CameraFrame, source_stamp
    from perception.fusion.sync import FrameSet, TimedFrame

    def frameset(*frames):
        return FrameSet({f"c{i}": TimedFrame(f"c{i}", 0, wall, wall, CameraFrame(f"c{i}", 0, wall, None, src))
                         for i, (wall, src) in enumerate(frames)}, [], 0, 0)

    assert source_stamp(frameset((5_000, 100), (5_100, 0))) == 100          # simulator time may start at 0
    assert source_stamp(frameset((5_000, None), (5_100, None))) == 5_100    # not restamped: the set's stamp
    assert source_stamp(frameset((5_000, 100), (5_100, None))) == 5_100    # mixed: the set's stamp
