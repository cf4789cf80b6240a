"""Foxglove channels of a recording (perception/foxglove.py, perception/record.py): the pure
conversions (geometry, calibration, boxes, checks of bad input), and a recording made from live
publishers read back with the mcap library's reader and mcap_protobuf's DecoderFactory, every
channel decoded from the schema stored in the file."""
from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf import descriptor_pool
from google.protobuf.descriptor_pb2 import FileDescriptorSet
from test_record_replay import drive, header, record_drive  # noqa: F401  (drive is a fixture)

from perception import config as pconfig
from perception import foxglove as fx
from perception import topics
from perception.v1 import detections_pb2, frame_pb2


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (x, y, z, w): the textbook formula, independent of the code under test."""
    x, y, z, w = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def random_rotations(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        Q, R = np.linalg.qr(rng.normal(size=(3, 3)))
        Q = Q @ np.diag(np.sign(np.diag(R)))
        if np.linalg.det(Q) < 0:
            Q[:, 0] = -Q[:, 0]
        out.append(Q)
    # the four branches of Shepperd's method: identity and 180-degree turns about x, y, z
    out += [np.eye(3), np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])]
    return out


def test_quaternion_from_matrix_round_trips():
    for R in random_rotations(200):
        q = fx.quaternion_from_matrix(R)
        assert abs(np.linalg.norm(q) - 1) < 1e-12 and q[3] >= 0
        np.testing.assert_allclose(quat_to_matrix(q), R, atol=1e-12)


def test_calibration_and_transform_of_every_rig_camera():
    rig = pconfig.load_rig(pconfig.DEFAULT_RIG)
    for cam in rig.cameras:
        cal = fx.camera_calibration(cam.to_proto(), 1_500_000_001)
        assert cal.frame_id == cam.name and (cal.width, cal.height) == (cam.width, cam.height)
        assert (cal.timestamp.seconds, cal.timestamp.nanos) == (1, 500_000_001)
        np.testing.assert_array_equal(np.reshape(cal.K, (3, 3)), cam.K)
        np.testing.assert_array_equal(np.reshape(cal.P, (3, 4)), np.hstack([cam.K, np.zeros((3, 1))]))
        np.testing.assert_array_equal(np.reshape(cal.R, (3, 3)), np.eye(3))
        assert cal.distortion_model == "plumb_bob" and len(cal.D) == 5
        tf = fx.frame_transform(cam.to_proto(), 7)
        assert (tf.parent_frame_id, tf.child_frame_id) == ("base_link", cam.name)
        T = cam.T_ego_from_camera
        np.testing.assert_allclose([tf.translation.x, tf.translation.y, tf.translation.z], T[:3, 3])
        R = quat_to_matrix([tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w])
        np.testing.assert_allclose(R, T[:3, :3], atol=1e-9)
        # Foxglove's camera frame is z forward, y down: the optical axis of the front camera points along
        # ego +x, its image "down" along ego -z
        if cam.name == "front":
            np.testing.assert_allclose(R @ [0, 0, 1], [1, 0, 0], atol=0.05)
            np.testing.assert_allclose(R @ [0, 1, 0], [0, 0, -1], atol=0.05)


def test_distortion_models():
    cam = pconfig.load_rig(pconfig.DEFAULT_RIG).cameras[0]
    four = fx.camera_calibration(_with_distortion(cam, (0.1, -0.02, 0.001, 0.002)).to_proto(), 0)
    assert four.distortion_model == "plumb_bob" and list(four.D) == pytest.approx([0.1, -0.02, 0.001, 0.002, 0.0])
    eight = fx.camera_calibration(_with_distortion(cam, tuple(0.01 * i for i in range(8))).to_proto(), 0)
    assert eight.distortion_model == "rational_polynomial" and len(eight.D) == 8


def _with_distortion(cam, d):
    from dataclasses import replace

    return replace(cam, distortion=d)


@pytest.mark.parametrize("field,value,reason", [("K", [float("nan")] * 9, "calibration_nonfinite"),
                                                ("T_ego_from_camera", [2.0] * 16, "calibration_not_rigid"),
                                                ("camera_name", "a/b", "bad_camera_name")])
def test_bad_calibration_is_skipped_with_a_reason(field, value, reason):
    cal = pconfig.load_rig(pconfig.DEFAULT_RIG).cameras[0].to_proto()
    if isinstance(value, list):
        del getattr(cal, field)[:]
        getattr(cal, field).extend(value)
    else:
        setattr(cal, field, value)
    with pytest.raises(fx.Skipped) as e:
        fx.camera_calibration(cal, 0)
    assert e.value.reason == reason


def _frame(width=16, height=8, encoding=frame_pb2.PIXEL_ENCODING_BGR8, pad=0, seed=0):
    channels = 1 if encoding == frame_pb2.PIXEL_ENCODING_MONO8 else 3
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, 256, size=(height, width * channels + pad), dtype=np.uint8)
    h = frame_pb2.FrameHeader(camera_name="front", sequence=3, capture_end_ns=2_000_000_000, width=width,
                              height=height, encoding=encoding, row_stride=width * channels + pad)
    return h, rows.tobytes(), rows[:, :width * channels].reshape(height, width, channels)


@pytest.mark.parametrize("encoding,name", [(frame_pb2.PIXEL_ENCODING_BGR8, "bgr8"), (frame_pb2.PIXEL_ENCODING_RGB8, "rgb8"),
                                           (frame_pb2.PIXEL_ENCODING_MONO8, "mono8")])
def test_raw_image_keeps_every_byte_and_the_stride(encoding, name):
    h, payload, _ = _frame(encoding=encoding, pad=5)
    img = fx.raw_image(h, payload)
    assert img.encoding == name and img.step == h.row_stride and img.data == payload
    assert (img.width, img.height, img.frame_id) == (16, 8, "front") and img.timestamp.seconds == 2


def test_jpeg_image_decodes_to_the_frame_in_bgr_order():
    import cv2

    # smooth content (JPEG's case); RGB input must come out with the same colours as its BGR twin
    y, x = np.mgrid[0:48, 0:64]
    bgr = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
    for encoding, pixels in [(frame_pb2.PIXEL_ENCODING_BGR8, bgr), (frame_pb2.PIXEL_ENCODING_RGB8, bgr[:, :, ::-1])]:
        h = frame_pb2.FrameHeader(camera_name="front", capture_end_ns=1, width=64, height=48, encoding=encoding,
                                  row_stride=64 * 3)
        img = fx.jpeg_image(h, np.ascontiguousarray(pixels).tobytes(), quality=95)
        assert img.format == "jpeg" and img.frame_id == "front"
        back = cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_COLOR)
        assert back.shape == bgr.shape
        assert np.abs(back.astype(int) - bgr).mean() < 2.0


@pytest.mark.parametrize("change,reason", [(dict(height=9), "payload_size"), (dict(encoding=0), "bad_encoding"),
                                           (dict(row_stride=10), "bad_stride"), (dict(capture_end_ns=-1), "bad_stamp"),
                                           (dict(camera_name=""), "bad_camera_name")])
def test_bad_frames_are_skipped_with_a_reason(change, reason):
    h, payload, _ = _frame()
    for k, v in change.items():
        setattr(h, k, v)
    for convert in (fx.raw_image, fx.jpeg_image):
        with pytest.raises(fx.Skipped) as e:
            convert(h, payload)
        assert e.value.reason == reason


def _obj(cls, x, y, yaw, size=(4.0, 2.0, 1.5), score=0.8):
    return detections_pb2.Object3D(object_class=cls, score=score, center=detections_pb2.Vector3(x=x, y=y, z=0.7),
                                   size=detections_pb2.Vector3(x=size[0], y=size[1], z=size[2]), yaw=yaw)


def test_boxes_poses_sizes_and_class_colours():
    objs = [_obj(c, 3.0 * c, -1.0, 0.3 * c) for c in range(6)]
    update, bad = fx.scene_update(objs, 5_000_000_000, 0.6)
    assert bad == 0 and len(update.entities) == 6
    assert [d.type for d in update.deletions] == [1] and update.deletions[0].timestamp.seconds == 5   # ALL, older ones
    for o, e in zip(objs, update.entities):
        assert e.frame_id == "base_link" and len(e.cubes) == 1 and len(e.texts) == 1
        cube = e.cubes[0]
        p, q = cube.pose.position, cube.pose.orientation
        assert (p.x, p.y, p.z) == (o.center.x, o.center.y, o.center.z)
        assert (cube.size.x, cube.size.y, cube.size.z) == (o.size.x, o.size.y, o.size.z)
        R = quat_to_matrix([q.x, q.y, q.z, q.w])
        np.testing.assert_allclose(R @ [1, 0, 0], [math.cos(o.yaw), math.sin(o.yaw), 0], atol=1e-6)
        r, g, b = fx.CLASS_COLORS.get(o.object_class, fx.UNKNOWN_COLOR)
        assert (cube.color.r, cube.color.g, cube.color.b) == pytest.approx((r, g, b)) and cube.color.a == pytest.approx(0.6)
        assert dict((kv.key, kv.value) for kv in e.metadata)["class"] == fx.class_name(o.object_class)
    # five distinct class colours, unspecified grey
    assert len({fx.CLASS_COLORS[c] for c in range(1, 6)}) == 5 and update.entities[0].cubes[0].color.r == pytest.approx(0.5)


def test_invalid_boxes_are_left_out_and_counted():
    objs = [_obj(1, 1, 0, 0), _obj(1, float("nan"), 0, 0), _obj(2, 1, 0, 0, size=(-1.0, 1, 1)),
            _obj(2, 1, 0, 0, size=(1e6, 1, 1)), _obj(3, 1, 2, float("inf"))]
    update, bad = fx.scene_update(objs, 1, 0.5)
    assert len(update.entities) == 1 and bad == 4
    ch = fx.FoxgloveChannels()
    out = ch.convert(topics.DETECTIONS, detections_pb2.Detections(stamp_ns=1, objects=objs))
    assert len(out) == 1 and ch.skipped == {"bad_object": 4}
    assert ch.convert(topics.TRUTH, detections_pb2.GroundTruth(stamp_ns=-5)) == [] and ch.skipped["bad_stamp"] == 1


def test_channels_remember_calibration_and_repeat_the_rig():
    rig = pconfig.load_rig(pconfig.DEFAULT_RIG)
    ch = fx.FoxgloveChannels(fx.FoxgloveConfig(images="raw", transforms_every_s=0.2))
    px = {c.name: np.zeros((c.height, c.width, 3), np.uint8) for c in rig.cameras[:2]}
    got = []
    for seq in range(6):
        for cam in rig.cameras[:2]:
            t = 1_000_000_000 + seq * 100_000_000
            h = header(cam, seq, t, px[cam.name])             # carries the calibration at seq 0 only
            got.append([(c.topic, c.msg) for c in ch.convert(topics.camera(cam.name), h, px[cam.name].tobytes())])
    assert ch.skipped == {}
    kinds = [[t for t, _ in out] for out in got]
    assert all(fx.image_topic(n) in k and fx.calibration_topic(n) in k
               for k, n in zip(kinds, [c.name for c in rig.cameras[:2]] * 6))
    tfs = [(i, m) for i, out in enumerate(got) for t, m in out if t == fx.TF_TOPIC]
    # the first camera's first frame, the second camera's (new calibration), then every 0.2 s of frame time
    assert [i for i, _ in tfs] == [0, 1, 4, 8]
    assert [len(m.transforms) for _, m in tfs] == [1, 2, 2, 2]
    # a frame whose calibration id the recorder has not seen: image, no calibration, counted
    cam = rig.cameras[0]
    h = header(cam, 9, 2_000_000_000, px[cam.name])
    h.ClearField("calibration")
    h.calibration_id = "other"
    out = ch.convert(topics.camera(cam.name), h, px[cam.name].tobytes())
    assert fx.image_topic(cam.name) in [c.topic for c in out] and fx.calibration_topic(cam.name) not in [c.topic for c in out]
    assert ch.skipped == {"no_calibration": 1}
    # the recorder is behind: no image, the rest as usual
    out = ch.convert(topics.camera(cam.name), header(cam, 10, 2_100_000_000, px[cam.name]), px[cam.name].tobytes(),
                     images=False)
    assert fx.image_topic(cam.name) not in [c.topic for c in out] and ch.skipped["backlog"] == 1
    # a frame on another camera's topic gives nothing
    assert ch.convert(topics.camera("back"), header(cam, 11, 2_200_000_000, px[cam.name]), px[cam.name].tobytes()) == []
    assert ch.skipped["camera_mismatch"] == 1


# ------------------------------------------------------------------------ a recording, read back

FOXGLOVE_TYPES = {"CompressedImage", "RawImage", "CameraCalibration", "FrameTransforms", "SceneUpdate"}


def foxglove_class(schema_name: str):
    import importlib

    short = schema_name.removeprefix("foxglove.")
    return getattr(importlib.import_module(f"foxglove_schemas_protobuf.{short}_pb2"), short)


def stored_descriptor(schema):
    """The message descriptor the file's own schema record defines (a fresh pool, not our classes)."""
    fds = FileDescriptorSet.FromString(schema.data)
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return pool.FindMessageTypeByName(schema.name)


def same_fields(a, b, seen=None) -> bool:
    """Two message descriptors with the same full name and fields (name, number, type, label), recursively."""
    seen = set() if seen is None else seen
    if a.full_name in seen:
        return True
    seen.add(a.full_name)
    if a.full_name != b.full_name:
        return False
    fa = [(f.name, f.number, f.type, f.is_repeated) for f in a.fields]
    fb = [(f.name, f.number, f.type, f.is_repeated) for f in b.fields]
    return fa == fb and all(same_fields(x.message_type, y.message_type, seen)
                            for x, y in zip(a.fields, b.fields) if x.message_type is not None)


@pytest.mark.parametrize("images", ["raw", "jpeg"])
def test_recording_has_foxglove_channels_decoded_from_stored_schemas(tmp_path, drive, images):  # noqa: F811
    import cv2
    from mcap.reader import make_reader
    from mcap_protobuf.decoder import DecoderFactory

    rig, frames = drive
    n_cameras = 2
    path, sent, dets, rec = record_drive(tmp_path, rig, frames, n_cameras,
                                         foxglove=fx.FoxgloveConfig(images=images, jpeg_quality=95))
    assert rec.dropped == {} and rec.foxglove.skipped == {}
    cams = {c.name: c for c in rig.cameras[:n_cameras]}
    truth_by_stamp = {t: truth for t, _, truth in frames}
    by_topic: dict[str, list] = {}
    with open(path, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        schemas = reader.get_summary().schemas
        # one schema record per message type, however many channels use it
        assert len({s.name for s in schemas.values()}) == len(schemas)
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            by_topic.setdefault(channel.topic, []).append((schema, message, decoded))
    fox_topics = {t for t in by_topic if t.startswith("/foxglove/")}
    expected = {fx.TF_TOPIC, fx.DETECTIONS_TOPIC, fx.TRUTH_TOPIC} | {fx.image_topic(n) for n in cams} \
        | {fx.calibration_topic(n) for n in cams}
    assert fox_topics == expected
    for topic in fox_topics:
        schema, _, _ = by_topic[topic][0]
        cls = foxglove_class(schema.name)
        assert schema.name.removeprefix("foxglove.") in FOXGLOVE_TYPES and schema.encoding == "protobuf"
        assert same_fields(stored_descriptor(schema), cls.DESCRIPTOR), schema.name
        for _, _, decoded in by_topic[topic]:
            assert not isinstance(decoded, cls)                       # built from the file's schema...
            assert type(decoded).DESCRIPTOR.full_name == cls.DESCRIPTOR.full_name
            cls.FromString(decoded.SerializeToString())               # ...and it parses as the Foxglove class

    # images: one per frame, stamped with its capture end, pixels equal (raw) or close (JPEG)
    for name in cams:
        imgs = by_topic[fx.image_topic(name)]
        assert len(imgs) == len(frames)
        for seq, (_, message, img) in enumerate(imgs):
            h_bytes, px = sent[(name, seq)]
            h = frame_pb2.FrameHeader.FromString(h_bytes)
            assert message.publish_time == h.capture_end_ns == img.timestamp.seconds * 10**9 + img.timestamp.nanos
            assert img.frame_id == name
            want = np.frombuffer(px, np.uint8).reshape(h.height, h.width, 3)
            if images == "raw":
                assert img.encoding == "bgr8" and img.step == h.row_stride and img.data == px
            else:
                got = cv2.imdecode(np.frombuffer(img.data, np.uint8), cv2.IMREAD_COLOR)
                diff = np.abs(got.astype(np.int16) - want)
                psnr = 10 * np.log10(255.0**2 / np.mean(diff.astype(np.float64) ** 2))
                assert img.format == "jpeg" and got.shape == want.shape and psnr > 30, psnr
        # calibration with every image, equal to the rig's
        cals = [c for _, _, c in by_topic[fx.calibration_topic(name)]]
        assert len(cals) == len(frames)
        for c in cals:
            assert c.frame_id == name and (c.width, c.height) == (cams[name].width, cams[name].height)
            np.testing.assert_array_equal(np.reshape(c.K, (3, 3)), cams[name].K)

    # the rig: the latest transforms name every recorded camera with its pose
    last_tf = by_topic[fx.TF_TOPIC][-1][2]
    assert {t.child_frame_id for t in last_tf.transforms} == set(cams)
    for t in last_tf.transforms:
        assert t.parent_frame_id == "base_link"
        np.testing.assert_allclose([t.translation.x, t.translation.y, t.translation.z],
                                   cams[t.child_frame_id].T_ego_from_camera[:3, 3])

    # boxes: detections and truth, right count, poses and class colours
    (_, message, det_scene), = by_topic[fx.DETECTIONS_TOPIC]
    assert message.publish_time == dets.stamp_ns and len(det_scene.entities) == len(dets.objects)
    cube = det_scene.entities[0].cubes[0]
    assert (cube.color.r, cube.color.g, cube.color.b, cube.color.a) == pytest.approx(
        (*fx.CLASS_COLORS[detections_pb2.OBJECT_CLASS_CAR], fx.DETECTION_ALPHA))
    truth_scenes = by_topic[fx.TRUTH_TOPIC]
    assert len(truth_scenes) == len(frames)
    for _, message, scene in truth_scenes:
        truth = truth_by_stamp[message.publish_time]
        assert len(scene.entities) == len(truth.objects) > 0
        for o, e in zip(truth.objects, scene.entities):
            c = e.cubes[0]
            assert (c.pose.position.x, c.pose.position.y, c.pose.position.z) == (o.center.x, o.center.y, o.center.z)
            assert (c.color.r, c.color.g, c.color.b) == pytest.approx(fx.CLASS_COLORS.get(o.object_class, fx.UNKNOWN_COLOR))
            assert c.color.a == pytest.approx(fx.TRUTH_ALPHA) and math.isclose(2 * math.atan2(c.pose.orientation.z,
                                                                                                c.pose.orientation.w),
                                                                                     o.yaw, abs_tol=1e-6)
    # ... and our own channels are untouched: replay reads the same frames as without Foxglove
    from perception.record import read_messages

    everything = list(read_messages(path))
    assert everything and not any(m.topic.startswith("/foxglove/") for m in everything)    # perception.v1 only
    own = [m for m in everything if m.topic.startswith(topics.CAMERA_PREFIX)]
    assert {(m.msg.header.camera_name, m.msg.header.sequence): (m.msg.header.SerializeToString(), m.msg.pixels)
            for m in own} == sent
    lines = rec.summary_lines(path)
    assert any(line.startswith("foxglove channels: ") for line in lines) and lines[-1].startswith("wrote ")


@pytest.mark.parametrize("images", ["raw", "jpeg"])
def test_foxglove_channels_read_back_by_the_foreign_drive_reader(tmp_path, drive, images):  # noqa: F811
    """perception/drives.py reads Foxglove MCAP files by Foxglove's conventions (optical frame_id,
    transforms from base_link), independently of this writer: through the Foxglove channels alone it
    finds the rig (K, T_ego_from_camera) and the frames (pixels equal for raw, close for JPEG)."""
    from perception.drives import CameraTopics, DriveMapping, open_drive

    rig, frames = drive
    n_cameras = 2
    path, sent, _, _ = record_drive(tmp_path, rig, frames, n_cameras, foxglove=fx.FoxgloveConfig(images=images))
    cams = rig.cameras[:n_cameras]
    mapping = DriveMapping(tuple(CameraTopics(c.name, fx.image_topic(c.name), fx.calibration_topic(c.name)) for c in cams))
    with open_drive(path, mapping) as d:
        assert d.kind == "foxglove-mcap" and d.rig.camera_names == [c.name for c in cams]
        for got, want in zip(d.rig.cameras, cams):
            np.testing.assert_allclose(got.K, want.K, atol=1e-12)
            np.testing.assert_allclose(got.T_ego_from_camera, want.T_ego_from_camera, atol=1e-9)
        got_frames = [m for m in d.messages() if m.topic.startswith(topics.CAMERA_PREFIX)]
    by_stamp = {}
    for (name, _), (h_bytes, px) in sent.items():
        by_stamp[(name, frame_pb2.FrameHeader.FromString(h_bytes).capture_end_ns)] = px
    assert sorted((m.msg.header.camera_name, m.msg.header.capture_end_ns) for m in got_frames) == sorted(by_stamp)
    for m in got_frames:
        want = np.frombuffer(by_stamp[(m.msg.header.camera_name, m.msg.header.capture_end_ns)], np.uint8)
        got = np.frombuffer(m.msg.pixels, np.uint8)
        if images == "raw":
            assert got.tobytes() == want.tobytes()
        else:
            assert got.shape == want.shape and np.abs(got.astype(int) - want).mean() < 3
