"""Approximate-time sync: complete sets, timeouts with a missing camera, out-of-order and
duplicate frames. Time is passed in explicitly, so these run without sleeping."""
from perception.fusion.sync import ApproximateTimeSync, TimedFrame

MS = 1_000_000
CAMS = ["front", "left", "right"]


def make_sync(**kw):
    kw.setdefault("max_span_ns", 30 * MS)
    kw.setdefault("timeout_ns", 60 * MS)
    return ApproximateTimeSync(CAMS, **kw)


def frame(cam, seq, stamp_ms, recv_ms=None):
    return TimedFrame(cam, seq, stamp_ms * MS, (recv_ms if recv_ms is not None else stamp_ms + 5) * MS)


def feed(sync, frames):
    out = []
    for f in frames:
        out += sync.push(f, f.recv_ns)
    return out


def test_complete_set_emitted_as_soon_as_all_cameras_arrive():
    s = make_sync()
    out = feed(s, [frame("front", 1, 100), frame("left", 1, 103)])
    assert out == []
    out = feed(s, [frame("right", 1, 98)])
    assert len(out) == 1 and out[0].complete
    assert list(out[0].frames) == CAMS                    # rig order, whatever the arrival order
    assert out[0].stamp_ns == 103 * MS and out[0].span_ns == 5 * MS
    assert s.stats.complete == 1 and s.stats.partial == 0


def test_frames_too_far_apart_do_not_form_a_set():
    s = make_sync()
    out = feed(s, [frame("front", 1, 100), frame("left", 1, 140), frame("right", 1, 141)])
    assert out == []                                    # span 41 ms > 30 ms: front stays alone
    out = feed(s, [frame("front", 2, 150)])
    assert len(out) == 1 and out[0].frames["front"].sequence == 2
    assert s.stats.dropped == 1                         # the lone front@100 set was superseded


def test_timeout_emits_partial_set_with_missing_camera_masked():
    s = make_sync()
    out = feed(s, [frame("front", 1, 100, 101), frame("left", 1, 102, 103)])
    assert out == [] and s.poll(150 * MS) == []
    out = s.poll(161 * MS)                               # 60 ms after the first arrival
    assert len(out) == 1
    assert out[0].missing == ["right"] and set(out[0].frames) == {"front", "left"}
    assert s.stats.partial == 1


def test_next_deadline_reports_oldest_open_set():
    s = make_sync()
    assert s.next_deadline_ns() is None
    feed(s, [frame("front", 1, 100, 101)])
    assert s.next_deadline_ns() == 161 * MS


def test_straggler_of_an_emitted_partial_set_is_rejected_not_emitted_alone():
    s = make_sync()
    feed(s, [frame("front", 1, 100, 101), frame("left", 1, 102, 103)])
    assert len(s.poll(161 * MS)) == 1
    out = feed(s, [frame("right", 1, 101, 170)])        # arrives after its set went out
    assert out == [] and s.stats.rejected == {"late": 1}
    assert s.poll(400 * MS) == []                       # and never comes out as a set of its own


def test_duplicate_and_reordered_frames_are_rejected_and_counted():
    s = make_sync()
    feed(s, [frame("front", 5, 500)])
    feed(s, [frame("front", 5, 500)])                   # exact duplicate
    feed(s, [frame("front", 4, 400)])                   # reordered: older sequence and stamp
    assert s.stats.rejected == {"duplicate_or_reordered": 2}
    out = feed(s, [frame("left", 5, 502), frame("right", 5, 501)])
    assert len(out) == 1 and out[0].frames["front"].sequence == 5


def test_out_of_order_arrival_within_a_cycle_still_completes():
    s = make_sync()
    out = feed(s, [frame("right", 1, 100), frame("front", 1, 95), frame("left", 1, 110)])
    assert len(out) == 1 and out[0].complete and out[0].span_ns == 15 * MS


def test_frame_older_than_emitted_set_is_rejected():
    s = make_sync()
    feed(s, [frame("front", 2, 200, 200), frame("left", 2, 201, 201)])
    assert len(s.poll(260 * MS)) == 1                   # partial: right missing
    feed(s, [frame("right", 2, 150, 270)])              # a stamp before the emitted set
    assert s.stats.rejected == {"late": 1}


def test_unknown_camera_is_rejected():
    s = make_sync()
    feed(s, [frame("roof", 1, 100)])
    assert s.stats.rejected == {"unknown_camera": 1}


def test_steady_stream_gives_one_complete_set_per_cycle():
    s = make_sync()
    out = []
    for k in range(50):
        t = 1000 + 100 * k
        out += feed(s, [frame("front", k, t), frame("left", k, t + 7), frame("right", k, t + 3)])
    assert len(out) == 50 and all(fs.complete for fs in out)
    assert [fs.frames["front"].sequence for fs in out] == list(range(50))
    assert s.stats.dropped == 0 and s.stats.rejected == {}


def test_min_cameras_drops_sets_that_are_too_empty():
    s = make_sync(min_cameras=2)
    feed(s, [frame("front", 1, 100, 100)])
    assert s.poll(200 * MS) == [] and s.stats.dropped == 1
