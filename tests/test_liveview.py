"""perception view (perception/liveview.py): detections and frames -> what is logged to Rerun.
Projected boxes land on the pixels a hand computation gives for a known calibration, colours are
the class's, what the view logs is read back from a Rerun recording (.rrd), bad input of every
kind is counted and never raises, and `perception launch --view` adds the view process."""
from __future__ import annotations

import numpy as np
import pytest

from perception import config as pconfig
from perception import geometry, topics
from perception.v1 import detections_pb2, frame_pb2, status_pb2

rr = pytest.importorskip("rerun")

from perception import liveview  # noqa: E402
from perception.transport import Received  # noqa: E402

T0 = 1_700_000_000_000_000_000


def camera(width=160, height=90, fx=100.0, yaw=0.0, position=(0.0, 0.0, 0.0), name="front") -> pconfig.CameraConfig:
    """A pinhole camera of the ego frame looking along +x rotated by yaw, principal point at the
    image centre (OpenCV: pixel centres at integers)."""
    K = np.array([[fx, 0, (width - 1) / 2], [0, fx, (height - 1) / 2], [0, 0, 1]])
    return pconfig.CameraConfig(name, width, height, K, geometry.make_transform(geometry.camera_rotation(yaw), position))


def obj(cls=detections_pb2.OBJECT_CLASS_CAR, center=(10.0, 0.0, 0.0), size=(2.0, 2.0, 2.0), yaw=0.0, score=0.8,
        velocity=(0.0, 0.0), visible=0):
    return detections_pb2.Object3D(object_class=cls, score=score, center=detections_pb2.Vector3(x=center[0], y=center[1], z=center[2]),
                                   size=detections_pb2.Vector3(x=size[0], y=size[1], z=size[2]), yaw=yaw,
                                   velocity=detections_pb2.Vector3(x=velocity[0], y=velocity[1]), visible_pixels=visible)


# ------------------------------------------------------------------------------ projection

def test_projected_corners_land_on_hand_computed_pixels():
    """A 2 m cube 10 m ahead: its corners (9..11, +-1, +-1) project to u = cx - fx*y/x, v = cy - fx*z/x
    (OpenCV), drawn at +0.5 in Rerun's image coordinates (pixel i spans [i, i+1])."""
    cam = camera()
    boxes, refused = liveview.boxes_from_objects([obj()], 10)
    assert refused == {} and len(boxes) == 1
    seg, owner = liveview.project_boxes(boxes, cam)
    assert seg.shape == (12, 2, 2) and set(owner.tolist()) == {0}
    expected = {(round(79.5 - 100 * y / x + 0.5, 6), round(44.5 - 100 * z / x + 0.5, 6))
                for x in (9.0, 11.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)}
    got = {(round(float(u), 6), round(float(v), 6)) for u, v in seg.reshape(-1, 2)}
    assert got == expected
    # the near face's top-left corner (x 9, y +1 left, z +1 up) is at column 68, row 33 of the image
    assert (68.0 < 79.5 - 100 / 9 + 0.5 < 69.0) and (round(79.5 - 100 / 9 + 0.5, 6), round(44.5 - 100 / 9 + 0.5, 6)) in got


def test_projection_into_downscaled_image_scales_rerun_coordinates():
    """The view draws into a downscaled image with CameraConfig.resized: in Rerun's coordinates
    (pixel corners) the projection scales exactly with the image."""
    full = camera(320, 180, fx=200.0, yaw=0.3, position=(1.5, 0.2, 1.5))
    boxes, _ = liveview.boxes_from_objects([obj(center=(12.0, 3.0, 0.8), size=(4.5, 1.9, 1.6), yaw=0.4)], 10)
    seg_full, _ = liveview.project_boxes(boxes, full)
    seg_half, _ = liveview.project_boxes(boxes, full.resized(160, 90))
    assert len(seg_full) == 12
    np.testing.assert_allclose(seg_half, seg_full * 0.5, atol=1e-9)


def test_boxes_behind_or_across_the_camera_are_clipped():
    cam = camera()
    behind, _ = liveview.boxes_from_objects([obj(center=(-10.0, 0.0, 0.0))], 10)
    assert len(liveview.project_boxes(behind, cam)[0]) == 0
    across, _ = liveview.boxes_from_objects([obj(center=(0.0, 0.0, 0.0), size=(6.0, 2.0, 2.0))], 10)  # the camera sits inside it
    seg, _ = liveview.project_boxes(across, cam)
    assert len(seg) > 0 and np.all(np.isfinite(seg))
    assert seg[..., 0].min() >= 0 and seg[..., 0].max() <= 160 and seg[..., 1].min() >= 0 and seg[..., 1].max() <= 90


def test_clip_segments_to_the_image():
    seg = np.array([[[-10.0, 45.0], [170.0, 45.0]],      # crosses the whole image
                    [[200.0, 10.0], [300.0, 80.0]],      # outside
                    [[10.0, 10.0], [20.0, 20.0]]])       # inside
    out, idx = liveview.clip_segments(seg, 160, 90)
    assert idx.tolist() == [0, 2]
    np.testing.assert_allclose(out[0], [[0, 45], [160, 45]])
    np.testing.assert_allclose(out[1], seg[2])


# ------------------------------------------------------------------------------ colours and validation

def test_colours_are_the_class_colours_of_perception_render():
    from perception.sim.mosaic import CLASS_COLORS

    boxes, _ = liveview.boxes_from_objects([obj(detections_pb2.OBJECT_CLASS_CAR), obj(detections_pb2.OBJECT_CLASS_TRUCK),
                                            obj(detections_pb2.OBJECT_CLASS_TRAFFIC_CONE)], 10)
    assert boxes.classes == ["car", "truck", "traffic_cone"]
    bgr = [CLASS_COLORS[0], CLASS_COLORS[1], CLASS_COLORS[4]]
    assert boxes.colors().tolist() == [list(reversed(c)) for c in bgr]
    assert boxes.colors(np.array([90, 30, 255])).tolist()[1] == [*reversed(CLASS_COLORS[1]), 30]
    assert liveview.CLASS_RGB["car"] == (40, 160, 255) and liveview.CLASS_RGB["truck"] == (255, 60, 60)


def test_bad_objects_are_refused_by_reason():
    objects = [obj(), obj(center=(float("nan"), 0, 0)), obj(size=(0.0, 1, 1)), obj(cls=0), obj(cls=99),  # type: ignore[arg-type]
               obj(center=(5e3, 0, 0)), obj(velocity=(500.0, 0.0)), obj(size=(100.0, 1, 1)), obj(), obj()]
    boxes, refused = liveview.boxes_from_objects(objects, max_objects=2)
    assert len(boxes) == 2
    assert refused == {"object_nonfinite": 1, "object_size": 2, "object_class": 2, "object_range": 1, "object_speed": 1,
                       "object_over_limit": 1}


# ------------------------------------------------------------------------------ what is logged

RIG = pconfig.RigConfig("test", (camera(320, 180, fx=200.0, name="front"),
                                 camera(320, 180, fx=200.0, yaw=np.pi, position=(0.0, 0.0, 1.5), name="back")))


def frame(cam: pconfig.CameraConfig, seq=0, t=T0, pixels=None, with_calibration=True, topic=None, **overrides) -> Received:
    px = np.full((cam.height, cam.width, 3), 100, np.uint8) if pixels is None else pixels
    h = frame_pb2.FrameHeader(camera_name=cam.name, sequence=seq, capture_start_ns=t - 5_000_000, capture_end_ns=t,
                              width=cam.width, height=cam.height, encoding=frame_pb2.PIXEL_ENCODING_BGR8,
                              row_stride=cam.width * 3, calibration_id=cam.calibration_id, source="test")
    if with_calibration:
        h.calibration.CopyFrom(cam.to_proto())
    for k, v in overrides.items():
        setattr(h, k, v)
    payload = memoryview(px.tobytes()) if isinstance(px, np.ndarray) else px
    return Received(topic or topics.camera(cam.name), h, payload, t + 20_000_000)


def detections(objects, t=T0, seq=1) -> Received:
    msg = detections_pb2.Detections(stamp_ns=t, sequence=seq, objects=objects, model_name="m", backend="b")
    msg.frames.add(camera_name="front", sequence=0, capture_end_ns=t, age_ms=42.0)
    return Received(topics.DETECTIONS, msg, None, t + 50_000_000)


def read_rrd(path) -> dict[str, dict[str, list]]:
    """entity path -> component column -> every logged value (in order), from a Rerun recording."""
    from rerun.chunk import RrdReader

    out: dict[str, dict[str, list]] = {}
    for chunk in RrdReader(path).stream():
        rb = chunk.to_record_batch()
        for name in rb.schema.names:
            if ":" in name:
                out.setdefault(chunk.entity_path, {}).setdefault(name, []).extend(rb.column(name).to_pylist())
    return out


def rgba_u32(rgb, alpha=255) -> int:
    r, g, b = rgb
    return (r << 24) | (g << 16) | (b << 8) | alpha


@pytest.fixture
def view(tmp_path):
    rec = rr.RecordingStream("perception_view_test")
    path = tmp_path / "view.rrd"
    rec.save(str(path))
    v = liveview.LiveView(RIG, rec, liveview.ViewConfig(image_width=160, image_hz=5.0))
    v.setup()
    yield v, path
    rec.disconnect()


def finish(v, path):
    v.rec.flush()
    v.rec.disconnect()
    return read_rrd(path)


def test_logged_images_boxes_and_scalars(view):
    v, path = view
    front = RIG.camera("front")
    assert v.handle(frame(front)) and v.handle(frame(RIG.camera("back")))
    car = obj(center=(10.0, 0.0, 0.0), yaw=0.2, velocity=(2.0, 0.0))
    truck = obj(detections_pb2.OBJECT_CLASS_TRUCK, center=(-12.0, 2.0, 1.0), size=(8.0, 2.5, 3.0))
    assert v.handle(detections([car, truck]))
    truth = detections_pb2.GroundTruth(stamp_ns=T0, objects=[obj(center=(10.5, 0.2, 0.0), visible=50),
                                                             obj(detections_pb2.OBJECT_CLASS_PEDESTRIAN, visible=0)])
    assert v.handle(Received(topics.TRUTH, truth, None, T0 + 1))
    assert v.handle(Received(topics.FUSION_STATUS, status_pb2.NodeStatus(stamp_ns=T0, latency_ms_p50=55.0, online_score=0.3,
                                                                         online_score_name="mAP"), None, T0 + 2))
    v.log_metrics()
    assert v.counters.rejected == {} and v.counters.images == 2 and v.counters.detections == 1 and v.counters.truth == 1
    logged = finish(v, path)

    image = logged["/cameras/front/image"]
    fmt = image["Image:format"][0][0]
    assert fmt["width"] == 160 and fmt["height"] == 90
    # the car's edges in the front camera: exactly what project_boxes gives for the 160x90 image (the truck is behind it)
    boxes, _ = liveview.boxes_from_objects([car, truck], 10)
    seg, owner = liveview.project_boxes(boxes, front.resized(160, 90))
    assert set(owner.tolist()) == {0}
    strips = logged["/cameras/front/detections"]["LineStrips2D:strips"][0]
    np.testing.assert_allclose(np.array(strips), seg, rtol=1e-6)
    assert set(logged["/cameras/front/detections"]["LineStrips2D:colors"][0]) == {rgba_u32(liveview.CLASS_RGB["car"])}
    # the truck is seen by the back camera, in its class colour
    assert set(logged["/cameras/back/detections"]["LineStrips2D:colors"][0]) == {rgba_u32(liveview.CLASS_RGB["truck"])}
    # BEV: detections with class colours and labels, truth translucent (the hidden pedestrian fainter)
    det = logged["/world/detections"]
    assert det["Boxes3D:colors"][0] == [rgba_u32(liveview.CLASS_RGB["car"]), rgba_u32(liveview.CLASS_RGB["truck"])]
    assert det["Boxes3D:labels"][0] == ["car 0.80", "truck 0.80"]
    np.testing.assert_allclose(det["Boxes3D:centers"][0], [[10, 0, 0], [-12, 2, 1]])
    np.testing.assert_allclose(det["Boxes3D:half_sizes"][0], [[1, 1, 1], [4, 1.25, 1.5]])
    assert logged["/world/truth"]["Boxes3D:colors"][0] == [rgba_u32(liveview.CLASS_RGB["car"], liveview.TRUTH_ALPHA),
                                                            rgba_u32(liveview.CLASS_RGB["pedestrian"], liveview.HIDDEN_TRUTH_ALPHA)]
    assert len(logged["/world/detections/velocity"]["Arrows3D:vectors"][0]) == 1
    # scalars
    assert logged["/metrics/latency_ms/capture_to_view"]["Scalars:scalars"][0] == [50.0]
    assert logged["/metrics/latency_ms/capture_to_publish"]["Scalars:scalars"][0] == [42.0]
    assert logged["/metrics/latency_ms/node_p50"]["Scalars:scalars"][0] == [55.0]
    assert logged["/metrics/objects/detections"]["Scalars:scalars"][0] == [2.0]
    assert "/metrics/drops/view_dropped" in logged and "/metrics/rate_hz/view_images" in logged
    assert "/world/cameras/front" in logged        # the frusta


def test_images_over_the_draw_rate_are_skipped_and_counted(view):
    v, path = view
    front = RIG.camera("front")
    for k in range(10):                                    # 10 frames 20 ms apart: 5 Hz allows the first only
        assert v.handle(frame(front, seq=k, t=T0 + k * 20_000_000, with_calibration=k == 0))
    assert v.counters.images == 1 and v.counters.skipped == 9
    assert v.handle(frame(front, seq=10, t=T0 + 300_000_000, with_calibration=False))   # 200 ms after the first: drawn
    assert v.counters.images == 2


def test_bad_input_is_counted_and_never_raises(view):
    v, path = view
    front = RIG.camera("front")
    nan_calibration = front.to_proto()
    nan_calibration.K[0] = float("nan")
    bad = [
        ("wrong_type", Received(topics.camera("front"), detections_pb2.Detections(stamp_ns=T0), None, T0)),
        ("payload_size", frame(front, pixels=memoryview(b"\x00" * 100))),
        ("missing_payload", Received(topics.camera("front"), frame(front).msg, None, T0)),
        ("camera_name", frame(front, topic=topics.camera("back"))),
        ("camera_name", frame(pconfig.CameraConfig("bad/name", 320, 180, front.K, front.T_ego_from_camera), topic="camera/bad/name")),
        ("calibration_nonfinite", Received(topics.camera("front"), frame_pb2.FrameHeader(
            camera_name="front", width=320, height=180, encoding=frame_pb2.PIXEL_ENCODING_BGR8, capture_end_ns=T0,
            calibration=nan_calibration), memoryview(bytes(320 * 180 * 3)), T0)),
        ("calibration_mismatch", frame(front, width=160, height=90, row_stride=480, pixels=memoryview(bytes(160 * 90 * 3)))),
        ("bad_stamp", detections([obj()], t=0)),
        ("bad_stamp", Received(topics.FUSION_STATUS, status_pb2.NodeStatus(stamp_ns=-5), None, T0)),
        ("error_TypeError", Received(topics.DETECTIONS, detections_pb2.Detections(stamp_ns=T0), None, "not a time")),   # a bug: counted
    ]
    for reason, rx in bad:
        assert v.handle(rx) is False, reason
        assert v.counters.rejected.get(reason, 0) >= 1, (reason, v.counters.rejected)
    # objects refused inside a message that is otherwise drawn
    assert v.handle(detections([obj(), obj(center=(float("inf"), 0, 0)), obj(cls=0)]))  # type: ignore[arg-type]
    assert v.counters.rejected["object_nonfinite"] == 1 and v.counters.rejected["object_class"] == 1
    # and the view goes on drawing
    assert v.handle(frame(front)) and v.counters.images == 1
    logged = finish(v, path)
    assert logged["/world/detections"]["Boxes3D:labels"][-1] == ["car 0.80"]


class FakeSubscriber:
    """drain_latest() hands out prepared batches; stats/malformed as the transport's."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.stats: dict = {}
        self.malformed = {"bad_protobuf": 3}

    def drain_latest(self, timeout_ms=0):
        return self.batches.pop(0) if self.batches else []


def test_run_loop_survives_a_stream_of_bad_messages(view):
    v, path = view
    front = RIG.camera("front")
    junk = [Received(topics.DETECTIONS, frame(front).msg, None, T0), detections([obj()], t=-1),
            Received("camera/front", frame(front).msg, memoryview(b"short"), T0)]
    sub = FakeSubscriber([junk, [frame(front)], junk, [detections([obj()], t=T0 + 1)]])
    v.run(sub, should_stop=lambda: not sub.batches)
    assert v.counters.images == 1 and v.counters.detections == 1
    assert sum(v.counters.rejected.values()) == 6
    assert "malformed on the wire: {'bad_protobuf': 3}" in v.summary(sub)


def test_view_over_ipc_survives_garbage_on_the_wire(tmp_path):
    """Real sockets: raw multipart garbage and a valid frame on one ipc endpoint; the view's
    subscriber counts the garbage as malformed and the frame is drawn."""
    import time

    import zmq

    from perception.transport import Publisher, Subscriber

    front = RIG.camera("front")
    pub = Publisher(f"ipc://{tmp_path}/cam")
    endpoints, wanted = liveview.view_topics(None, [pub.endpoint])
    assert wanted == ["camera/*", topics.TRUTH, topics.DETECTIONS, "status/*"]
    sub = Subscriber(endpoints, wanted, rcvhwm=1)
    rec = rr.RecordingStream("perception_view_ipc")
    rec.save(str(tmp_path / "ipc.rrd"))
    v = liveview.LiveView(RIG, rec)
    try:
        assert pub.wait_for_subscriber(5.0, "camera/")
        raw = pub._sock
        deadline = time.monotonic() + 20     # a bound on a hung test, not a timing assertion
        while v.counters.images == 0 and time.monotonic() < deadline:
            raw.send_multipart([b"camera/front", b"perception.v1.FrameHeader", b"\xff\xff\xff"], zmq.NOBLOCK)
            raw.send_multipart([b"detections", b"no.such.Type", b"x"], zmq.NOBLOCK)
            raw.send_multipart([b"camera/front"], zmq.NOBLOCK)
            rx = frame(front)
            pub.publish(rx.topic, rx.msg, np.full((180, 320, 3), 7, np.uint8))
            v.run(sub, should_stop=lambda: v.counters.images > 0 or time.monotonic() > deadline, duration_s=0.5)
        assert v.counters.images == 1
        assert sum(sub.malformed.values()) >= 1
    finally:
        sub.close()
        pub.close()
        rec.disconnect()


# ------------------------------------------------------------------------------ launch --view

def test_launch_view_adds_an_optional_niced_view_process():
    from perception.launch import load_launch

    launch = load_launch(pconfig.DEFAULT_LAUNCH)
    viewed = liveview.with_view(launch, ["--web-port=9091"])
    assert [p.name for p in viewed.processes] == [p.name for p in launch.processes] + ["view"]
    spec = viewed.processes[-1]
    assert spec.command[1:4] == ["-m", "perception.cli", "view"]
    assert spec.nice == liveview.VIEW_NICE and spec.required is False and spec.heartbeat is None
    eps = [spec.command[i + 1] for i, a in enumerate(spec.command) if a == "-e"]
    assert eps == [f"tcp://127.0.0.1:{5550 + i}" for i in range(6)] + ["tcp://127.0.0.1:5560"]
    assert spec.command[-1] == "--web-port=9091" and "--keys" not in spec.command
    with pytest.raises(pconfig.ConfigError):
        liveview.with_view(viewed)


def test_launch_view_with_keys_passes_them(tmp_path):
    from perception.launch import load_launch

    launch = load_launch(pconfig.REPO_ROOT / "launch" / "sim_secure.yaml", {"keys": str(tmp_path / "keys")})
    spec = liveview.with_view(launch).processes[-1]
    assert spec.command[spec.command.index("--keys") + 1] == str(tmp_path / "keys")


def test_launch_command_accepts_view_and_names_the_address():
    from perception.commands.launch import build_parser
    from perception.commands.view import view_address

    args = build_parser().parse_args(["--view", "--view-arg=--web-port=9091", "--view-arg=--grpc-port=9877"])
    assert args.view and args.view_arg == ["--web-port=9091", "--grpc-port=9877"]
    assert view_address(args.view_arg) == liveview.web_url(9091, 9877)
    assert "9091" in view_address(args.view_arg) and "rerun%2Bhttp%3A%2F%2F127.0.0.1%3A9877%2Fproxy" in view_address(args.view_arg)
