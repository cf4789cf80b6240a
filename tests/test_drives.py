"""Drives recorded by other tools (perception/drives.py): a ROS 2 bag written with rosbags and an
MCAP file with Foxglove channels, both made of simulated frames, replay offline into the same
Detections as the same frames recorded by perception.record; bad messages in a drive are counted
by reason and never end the replay; a camera without any calibration is refused at open."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from sim_instants import sim_instants

from perception import config as pconfig
from perception import topics
from perception.geometry import camera_rotation, invert_transform, make_transform
from perception.v1 import frame_pb2

T0_NS = 1_700_000_000_000_000_000
PERIOD_NS = 100_000_000          # 10 Hz
EGO = "base_link"
MOUNT = "roof_mount"             # an intermediate frame: the cameras' transforms chain through it
T_EGO_FROM_MOUNT = make_transform(camera_rotation(np.radians(10.0)), [0.5, 0.1, 1.2])
ROS_ENCODINGS = {"front": "rgb8", "front_left": "bgr8", "front_right": "bgra8", "back": "png",
                 "back_left": "rgb8+pad", "back_right": "bgr8"}
FOX_ENCODINGS = {"front": "rgb8", "front_left": "bgr8", "front_right": "rgba8", "back": "png",
                 "back_left": "bgr8", "back_right": "bgra8"}


@pytest.fixture(scope="module")
def drive():
    """Three instants of the simulated world in every camera of the default rig:
    (rig, [(t_ns, {camera: BGR pixels})]); camera i is stamped i µs after the instant."""
    rig = pconfig.load_rig(pconfig.DEFAULT_RIG)
    return rig, sim_instants(rig, 11, T0_NS, PERIOD_NS)


@pytest.fixture(scope="module")
def engine():
    from perception.runtime import create_engine

    model = pconfig.DEFAULT_MODEL_DIR
    return create_engine("torch", str(model), threads=1, allow_random_init=not (model / "model.safetensors").exists())


def stamp_of(rig, t: int, name: str) -> int:
    return t + 1000 * rig.camera_names.index(name)


def optical(name: str) -> str:
    return f"cam_{name}_optical"


def mapping_for(rig, info: bool = True, **extra) -> dict:
    return {"ego_frame": EGO, "cameras": [{"name": c.name, "image": f"/{c.name}/image",
                                           **({"info": f"/{c.name}/camera_info"} if info else {})}
                                          for c in rig.cameras], **extra}


def own_recording(tmp_path, rig, frames):
    """The frames as `perception record` stores them (RecordedFrame per camera message)."""
    from perception.record import McapFileWriter, recorded_message

    path = tmp_path / "own.mcap"
    out = McapFileWriter(path)
    for seq, (t, images) in enumerate(frames):
        for cam in rig.cameras:
            px = images[cam.name]
            s = stamp_of(rig, t, cam.name)
            h = frame_pb2.FrameHeader(camera_name=cam.name, sequence=seq, capture_start_ns=s, capture_end_ns=s,
                                      width=px.shape[1], height=px.shape[0], encoding=frame_pb2.PIXEL_ENCODING_BGR8,
                                      row_stride=px.strides[0], calibration_id=cam.calibration_id, source="sim")
            if seq == 0:
                h.calibration.CopyFrom(cam.to_proto())
            out.write(topics.camera(cam.name), recorded_message(h, px), s, s)
    out.close()
    return path


# ------------------------------------------------------------------------------------------ ROS 2 bag

class RosBag:
    """Writes a ROS 2 bag (sqlite3 storage) with rosbags' Writer and the Humble type store."""

    def __init__(self, path, storage: str = "sqlite3"):
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.ts = get_typestore(Stores.ROS2_HUMBLE)
        self.T = self.ts.types
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(path, version=9, storage_plugin=plugin)
        self.writer.open()
        self.conns: dict = {}

    def write(self, topic: str, msg, log_ns: int) -> None:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, msg.__msgtype__, typestore=self.ts)
        self.writer.write(self.conns[topic], log_ns, self.ts.serialize_cdr(msg, msg.__msgtype__))

    def header(self, stamp_ns: int, frame_id: str):
        return self.T["std_msgs/msg/Header"](stamp=self.T["builtin_interfaces/msg/Time"](
            sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000), frame_id=frame_id)

    def image(self, stamp_ns: int, frame_id: str, px: np.ndarray, encoding: str, step: int | None = None, data=None):
        h, w = px.shape[:2]
        step = step if step is not None else px.strides[0]
        return self.T["sensor_msgs/msg/Image"](header=self.header(stamp_ns, frame_id), height=h, width=w, encoding=encoding,
                                               is_bigendian=0, step=step,
                                               data=np.frombuffer(px.tobytes() if data is None else data, dtype=np.uint8))

    def compressed(self, stamp_ns: int, frame_id: str, data: bytes, fmt: str):
        return self.T["sensor_msgs/msg/CompressedImage"](header=self.header(stamp_ns, frame_id), format=fmt,
                                                         data=np.frombuffer(data, dtype=np.uint8))

    def info(self, stamp_ns: int, frame_id: str, cam, K=None):
        K = np.asarray(cam.K if K is None else K, dtype=np.float64)
        P = np.zeros((3, 4))
        P[:, :3] = K
        return self.T["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame_id), height=cam.height, width=cam.width, distortion_model="plumb_bob",
            d=np.zeros(5), k=K.ravel(), r=np.eye(3).ravel(), p=P.ravel(), binning_x=0, binning_y=0,
            roi=self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def tf(self, stamp_ns: int, edges: list[tuple[str, str, np.ndarray]]):
        from perception.drives import quaternion_from_matrix

        T = self.T
        out = []
        for parent, child, M in edges:
            x, y, z, w = quaternion_from_matrix(M[:3, :3])
            out.append(T["geometry_msgs/msg/TransformStamped"](
                header=self.header(stamp_ns, parent), child_frame_id=child,
                transform=T["geometry_msgs/msg/Transform"](
                    translation=T["geometry_msgs/msg/Vector3"](x=M[0, 3], y=M[1, 3], z=M[2, 3]),
                    rotation=T["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w))))
        return T["tf2_msgs/msg/TFMessage"](transforms=out)

    def close(self) -> None:
        self.writer.close()


def rig_edges(rig) -> list[tuple[str, str, np.ndarray]]:
    """base_link -> roof_mount -> each camera's optical frame, equal to the rig's T_ego_from_camera."""
    return [(EGO, MOUNT, T_EGO_FROM_MOUNT)] + [(MOUNT, optical(c.name), invert_transform(T_EGO_FROM_MOUNT) @ c.T_ego_from_camera)
                                               for c in rig.cameras]


def write_ros_image(bag: RosBag, cam, stamp: int, px: np.ndarray, how: str) -> None:
    fid = optical(cam.name)
    if how == "png":
        ok, enc = cv2.imencode(".png", px)
        assert ok
        msg = bag.compressed(stamp, fid, enc.tobytes(), "png")
    elif how == "rgb8":
        msg = bag.image(stamp, fid, np.ascontiguousarray(px[:, :, ::-1]), "rgb8")
    elif how == "bgra8":
        msg = bag.image(stamp, fid, cv2.cvtColor(px, cv2.COLOR_BGR2BGRA), "bgra8")
    elif how == "rgb8+pad":            # rows padded to a longer step
        rgb = px[:, :, ::-1]
        padded = np.zeros((px.shape[0], px.shape[1] * 3 + 16), np.uint8)
        padded[:, : px.shape[1] * 3] = rgb.reshape(px.shape[0], -1)
        msg = bag.image(stamp, fid, px, "rgb8", step=padded.shape[1], data=padded.tobytes())
    else:
        msg = bag.image(stamp, fid, px, "bgr8")
    bag.write(f"/{cam.name}/image", msg, stamp + 3_000_000)


def ros_bag(tmp_path, rig, frames, name="bag", storage="sqlite3"):
    path = tmp_path / name
    bag = RosBag(path, storage)
    t0 = frames[0][0]
    bag.write("/tf_static", bag.tf(t0, rig_edges(rig)), t0 - 1)
    for t, images in frames:
        for cam in rig.cameras:
            s = stamp_of(rig, t, cam.name)
            bag.write(f"/{cam.name}/camera_info", bag.info(s, optical(cam.name), cam), s + 1_000_000)
            write_ros_image(bag, cam, s, images[cam.name], ROS_ENCODINGS[cam.name])
    bag.close()
    return path


# ------------------------------------------------------------------------------------------ Foxglove MCAP

def foxglove_mcap(tmp_path, rig, frames):
    """The frames as Foxglove RawImage / CompressedImage + CameraCalibration + FrameTransform,
    written with foxglove_schemas_protobuf and mcap_protobuf's writer."""
    from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration
    from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
    from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
    from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
    from google.protobuf.timestamp_pb2 import Timestamp
    from mcap_protobuf.writer import Writer

    from perception.drives import quaternion_from_matrix

    def ts(ns: int) -> Timestamp:
        return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)

    path = tmp_path / "foxglove.mcap"
    with open(path, "wb") as f, Writer(f) as w:
        t0 = frames[0][0]
        for parent, child, M in rig_edges(rig):
            x, y, z, qw = quaternion_from_matrix(M[:3, :3])
            msg = FrameTransform(timestamp=ts(t0), parent_frame_id=parent, child_frame_id=child)
            msg.translation.x, msg.translation.y, msg.translation.z = M[:3, 3]
            msg.rotation.x, msg.rotation.y, msg.rotation.z, msg.rotation.w = x, y, z, qw
            w.write_message("/tf", msg, t0 - 1, t0 - 1)
        for t, images in frames:
            for cam in rig.cameras:
                s = stamp_of(rig, t, cam.name)
                P = np.zeros((3, 4))
                P[:, :3] = cam.K
                w.write_message(f"/{cam.name}/camera_info", CameraCalibration(
                    timestamp=ts(s), frame_id=optical(cam.name), width=cam.width, height=cam.height,
                    distortion_model="plumb_bob", D=[0.0] * 5, K=cam.K.ravel().tolist(),
                    R=np.eye(3).ravel().tolist(), P=P.ravel().tolist()), s + 1_000_000, s)
                px, how = images[cam.name], FOX_ENCODINGS[cam.name]
                if how == "png":
                    msg = CompressedImage(timestamp=ts(s), frame_id=optical(cam.name), format="png",
                                          data=cv2.imencode(".png", px)[1].tobytes())
                else:
                    conv = {"rgb8": px[:, :, ::-1], "bgr8": px, "rgba8": cv2.cvtColor(px, cv2.COLOR_BGR2RGBA),
                            "bgra8": cv2.cvtColor(px, cv2.COLOR_BGR2BGRA)}[how]
                    conv = np.ascontiguousarray(conv)
                    msg = RawImage(timestamp=ts(s), frame_id=optical(cam.name), width=px.shape[1], height=px.shape[0],
                                   encoding=how, step=conv.strides[0], data=conv.tobytes())
                w.write_message(f"/{cam.name}/image", msg, s + 3_000_000, s)
    return path


# ------------------------------------------------------------------------------------------ tests

def replay(drive_, engine, rig=None):
    from perception.replay import OfflineReplay, ReplayConfig

    out: list = []
    summary = OfflineReplay(ReplayConfig(backend="torch", threads=1), engine=engine, rig=rig).run(drive_, on_detections=out.append)
    return summary, out


def assert_same_detections(a, b) -> None:
    assert len(a) == len(b) > 0
    assert sum(len(m.objects) for m in a) > 0          # a comparison of something
    for x, y in zip(a, b):
        assert x.stamp_ns == y.stamp_ns and list(x.missing_cameras) == list(y.missing_cameras)
        assert [(f.camera_name, f.sequence, f.capture_end_ns) for f in x.frames] == \
               [(f.camera_name, f.sequence, f.capture_end_ns) for f in y.frames]
        assert len(x.objects) == len(y.objects)
        for o, p in zip(x.objects, y.objects):
            assert o.object_class == p.object_class
            assert o.score == pytest.approx(p.score, abs=1e-4)
            assert [o.center.x, o.center.y, o.center.z] == pytest.approx([p.center.x, p.center.y, p.center.z], abs=1e-3)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, drive, engine):
    """Detections of the frames recorded by perception.record."""
    rig, frames = drive
    summary, dets = replay(own_recording(tmp_path_factory.mktemp("own"), rig, frames), engine)
    assert summary.frames == 18 and summary.sets == 3 and summary.rejected == {}
    return dets


def test_ros2_bag_replays_like_our_recording(tmp_path, drive, engine, reference):
    from perception.drives import open_drive, parse_mapping

    rig, frames = drive
    path = ros_bag(tmp_path, rig, frames)
    with open_drive(path, parse_mapping(mapping_for(rig))) as d:
        assert d.kind == "rosbag" and d.rig.camera_names == rig.camera_names
        for got, want in zip(d.rig.cameras, rig.cameras):        # calibration from the bag, through the tf chain
            assert got.width == want.width and got.height == want.height
            np.testing.assert_allclose(got.K, want.K, atol=1e-12)
            np.testing.assert_allclose(got.T_ego_from_camera, want.T_ego_from_camera, atol=1e-9)
            assert d.calibration_source[got.name] == "intrinsics: drive, extrinsics: drive"
        # Frames are BGR8 and byte-identical to the rendered pixels (every lossless encoding).
        first = {}
        for m in d.messages():
            h = m.msg.header
            assert m.publish_time_ns == h.capture_end_ns and h.encoding == frame_pb2.PIXEL_ENCODING_BGR8
            first.setdefault(h.camera_name, (h, m.msg.pixels))
        for cam in rig.cameras:
            h, px = first[cam.name]
            assert h.sequence == 0 and h.HasField("calibration") and h.calibration.camera_name == cam.name
            assert h.capture_end_ns == stamp_of(rig, frames[0][0], cam.name)
            assert px == frames[0][1][cam.name].tobytes(), cam.name
        assert d.rejected == {}
    with open_drive(path, parse_mapping(mapping_for(rig))) as d:
        summary, dets = replay(d, engine, rig=d.rig)
    assert summary.frames == 18 and summary.sets == 3 and summary.rejected == {} and summary.drive_rejected == {}
    assert_same_detections(dets, reference)


def test_foxglove_mcap_replays_like_our_recording(tmp_path, drive, engine, reference):
    from perception.drives import open_drive, parse_mapping

    rig, frames = drive
    path = foxglove_mcap(tmp_path, rig, frames)
    with open_drive(path, parse_mapping(mapping_for(rig))) as d:
        assert d.kind == "foxglove-mcap" and d.rig.camera_names == rig.camera_names
        for got, want in zip(d.rig.cameras, rig.cameras):
            np.testing.assert_allclose(got.K, want.K, atol=1e-12)
            np.testing.assert_allclose(got.T_ego_from_camera, want.T_ego_from_camera, atol=1e-9)
        summary, dets = replay(d, engine, rig=d.rig)
    assert summary.frames == 18 and summary.sets == 3 and summary.rejected == {} and summary.drive_rejected == {}
    assert_same_detections(dets, reference)


def test_ros2_bag_with_mcap_storage(tmp_path, drive):
    """The same bag in MCAP storage yields the same frames, given as the directory or as its .mcap file."""
    from perception.drives import open_drive, parse_mapping

    rig, frames = drive
    mapping = parse_mapping(mapping_for(rig))

    def content(d) -> list[bytes]:          # header.source names the file
        out = []
        for m in d.messages():
            m.msg.header.ClearField("source")
            out.append(m.msg.SerializeToString())
        return out

    with open_drive(ros_bag(tmp_path, rig, frames[:2]), mapping) as d:
        want = content(d)
    path = ros_bag(tmp_path, rig, frames[:2], name="bag_mcap", storage="mcap")
    files = list(path.glob("*.mcap"))
    assert len(files) == 1
    for p in (path, files[0]):
        with open_drive(p, mapping) as d:
            assert d.kind == "rosbag" and content(d) == want
    assert len(want) == 12


def test_truncated_foxglove_mcap_reads_up_to_the_cut(tmp_path, drive):
    """A Foxglove MCAP cut mid-file (no summary, no footer): the calibration and the frames before
    the cut are read, the drive says it was truncated."""
    from perception.drives import open_drive, parse_mapping

    rig, frames = drive
    data = foxglove_mcap(tmp_path, rig, frames).read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: int(len(data) * 0.8)])
    with open_drive(cut, parse_mapping(mapping_for(rig))) as d:
        n = len(list(d.messages()))
        assert d.truncated and 0 < n < 18 and d.rejected == {}


def test_own_recording_goes_through_read_messages(tmp_path, drive):
    from perception.drives import OwnRecording, open_drive
    from perception.record import read_messages

    rig, frames = drive
    path = own_recording(tmp_path, rig, frames)
    with open_drive(path) as d:
        assert isinstance(d, OwnRecording) and d.rig.camera_names == rig.camera_names
        got = [(m.topic, m.msg.SerializeToString()) for m in d.messages()]
    assert got == [(m.topic, m.msg.SerializeToString()) for m in read_messages(path)]


def test_bad_messages_are_counted_not_fatal(tmp_path, drive):
    """One bag with every kind of bad message: each is refused under its reason, the rest replays."""
    from perception.drives import open_drive, parse_mapping

    rig, frames = drive
    t, images = frames[0]
    path = tmp_path / "bad"
    bag = RosBag(path)
    bag.write("/tf_static", bag.tf(t, rig_edges(rig)), t - 1)
    front = rig.camera("front")
    bad_K = np.array(front.K, dtype=np.float64)
    bad_K[0, 0] = np.nan
    bag.write("/front/camera_info", bag.info(t, optical("front"), front, K=bad_K), t)        # refused, then a good one
    for cam in rig.cameras:
        bag.write(f"/{cam.name}/camera_info", bag.info(t, optical(cam.name), cam), t + 1)
    px = images["front"]
    fid, fid_l = optical("front"), optical("front_left")
    bag.write("/front/image", bag.image(t + 10, fid, px, "bgr8", data=px.tobytes()[:-7]), t + 10)         # short data
    bag.write("/front/image", bag.image(t + 20, fid, px, "yuv422"), t + 20)                              # unknown encoding
    bag.write("/front/image", bag.image(t + 50, "somewhere_else", px, "bgr8"), t + 50)                   # wrong frame id
    bag.write("/front/image", bag.image(0, fid, px, "bgr8"), t + 60)                                     # no stamp
    bag.write("/front/image", bag.image(t + 70, fid, px[:100, :100].copy(), "bgr8"), t + 70)             # other aspect
    bag.write("/front/image", bag.image(t + 80, fid, np.ascontiguousarray(px[::2, ::2]), "bgr8"), t + 80)   # half size: resized
    bag.write("/front/image", bag.image(t + 90, fid, np.ascontiguousarray(px[:, :, 1]), "mono8"), t + 90)   # mono: fine
    bag.writer.write(bag.conns["/front/image"], t + 99, b"\x00\x01\x00\x00 not CDR")                     # does not deserialize
    bag.write("/front_left/image", bag.compressed(t + 30, fid_l, b"\x00" * 64, "h264"), t + 30)           # unknown format
    bag.write("/front_left/image", bag.compressed(t + 40, fid_l, b"\x89PNG not really", "png"), t + 40)   # undecodable
    pl = images["front_left"]
    ok, jpeg = cv2.imencode(".jpg", pl)
    bag.write("/front_left/image", bag.compressed(t + 95, fid_l, jpeg.tobytes(), "rgb8; jpeg compressed bgr8"), t + 95)
    bag.close()

    with open_drive(path, parse_mapping(mapping_for(rig))) as d:
        out = list(d.messages())
        assert d.rejected == {"calibration_nonfinite": 1, "payload_size": 1, "unknown_encoding": 2, "bad_compressed": 1,
                              "frame_id_mismatch": 1, "bad_stamp": 1, "size_mismatch": 1, "bad_message": 1}
        assert d.resized == 1
    assert [(m.msg.header.camera_name, m.msg.header.sequence) for m in out] == [("front", 0), ("front", 1), ("front_left", 0)]
    assert all(len(m.msg.pixels) == front.width * front.height * 3 for m in out)
    mono = np.frombuffer(out[1].msg.pixels, np.uint8).reshape(front.height, front.width, 3)
    assert np.array_equal(mono[:, :, 0], px[:, :, 1]) and np.array_equal(mono[:, :, 2], px[:, :, 1])
    jpg = np.frombuffer(out[2].msg.pixels, np.uint8).reshape(pl.shape).astype(int)
    assert np.abs(jpg - pl).mean() < 8                 # lossy, but the same picture

    # resize: false refuses the half-size frame instead
    with open_drive(path, parse_mapping(mapping_for(rig, resize=False))) as d:
        assert len(list(d.messages())) == 2 and d.rejected["size_mismatch"] == 2 and d.resized == 0


def test_missing_calibration(tmp_path, drive, engine):
    """No CameraInfo and no transform for `back`: refused at open without a rig, filled from the
    rig YAML with one; the replay then runs every camera."""
    from perception.drives import DriveError, open_drive, parse_mapping

    rig, frames = drive
    path = tmp_path / "nocal"
    bag = RosBag(path)
    bag.write("/tf_static", bag.tf(frames[0][0], [e for e in rig_edges(rig) if e[1] != optical("back")]), frames[0][0] - 1)
    for t, images in frames:
        for cam in rig.cameras:
            s = stamp_of(rig, t, cam.name)
            if cam.name != "back":
                bag.write(f"/{cam.name}/camera_info", bag.info(s, optical(cam.name), cam), s)
            write_ros_image(bag, cam, s, images[cam.name], "bgr8")
    bag.close()
    mapping = parse_mapping(mapping_for(rig))
    with pytest.raises(DriveError, match="back: no valid calibration"):
        open_drive(path, mapping)
    bad_tf = parse_mapping({**mapping_for(rig), "cameras": [{**c, "info": None} if c["name"] == "back" else c
                                                           for c in mapping_for(rig)["cameras"]]})
    with pytest.raises(DriveError, match="back: no valid calibration"):
        open_drive(path, bad_tf)
    with open_drive(path, mapping, rig=pconfig.DEFAULT_RIG) as d:
        assert d.calibration_source["back"] == "intrinsics: rig, extrinsics: rig"
        assert d.calibration_source["front"] == "intrinsics: drive, extrinsics: drive"
        summary, dets = replay(d, engine, rig=d.rig)
    assert summary.sets == 3 and summary.partial_sets == 0 and summary.drive_rejected == {}


def test_mapping_errors(tmp_path, drive):
    from perception.drives import DriveError, open_drive, parse_mapping

    rig, frames = drive
    for bad in [{}, {"cameras": []}, {"cameras": [{"name": "front"}]}, {"cameras": [{"name": "a", "image": "/x", "typo": 1}]},
                {"cameras": [{"name": "a", "image": "/x"}, {"name": "a", "image": "/y"}]},
                {"cameras": [{"name": "a", "image": "/x"}], "resize": "yes"}]:
        with pytest.raises(DriveError):
            parse_mapping(bad)
    path = ros_bag(tmp_path, rig, frames[:1])
    with pytest.raises(DriveError, match="needs a mapping"):
        open_drive(path)
    swapped = mapping_for(rig)
    swapped["cameras"][0]["image"] = "/front/camera_info"          # a CameraInfo topic as an image
    with pytest.raises(DriveError, match="is a sensor_msgs/msg/CameraInfo"):
        open_drive(path, parse_mapping(swapped))
    with pytest.raises(DriveError, match="does not have"):
        open_drive(path, parse_mapping({"cameras": [{"name": "nose", "image": "/front/image"}]}), rig=pconfig.DEFAULT_RIG)


def test_replay_command_with_map(tmp_path, drive, capsys):
    import yaml

    from perception.commands import replay as replay_cmd
    from perception.record import read_messages

    rig, frames = drive
    path = ros_bag(tmp_path, rig, frames)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(yaml.safe_dump(mapping_for(rig)))
    args = [str(path), "--offline", "--map", str(mapping), "--out", str(tmp_path / "dets.mcap"), "--no-progress", "--threads", "1"]
    if not (pconfig.DEFAULT_MODEL_DIR / "model.safetensors").exists():
        args.append("--allow-random-init")
    assert replay_cmd.main(args) == 0
    assert "frames 18, frame sets 3" in capsys.readouterr().out
    assert len(list(read_messages(tmp_path / "dets.mcap"))) == 3
    assert replay_cmd.main([str(path), "--offline", "--no-progress"]) == 2          # no mapping: refused with a message
    assert "needs a mapping" in capsys.readouterr().err
