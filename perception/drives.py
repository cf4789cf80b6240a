"""Drives: recordings made by this package or by other tools, read one way (docs/recording.md).

``open_drive(path, mapping, rig)`` returns a `Drive`: the rig its frames belong to and an iterator
of the same ``RecordedMessage`` objects (camera frames as ``perception.v1.RecordedFrame``: a
FrameHeader with the calibration + BGR8 pixels) that ``record.read_messages`` yields for our own
recordings, so offline replay and a live player consume every kind of drive alike. Three kinds:

- our own MCAP recordings (``perception record``): read with ``record.read_messages``, rig from YAML;
- MCAP files with Foxglove channels (``foxglove.RawImage`` / ``foxglove.CompressedImage``,
  ``foxglove.CameraCalibration``, ``foxglove.FrameTransform(s)``), decoded from the schema stored
  in the file (mcap_protobuf), so no generated Foxglove classes are needed to read;
- ROS 2 bags (a bag directory; ``.bag`` ROS 1 files go through the same reader, untested), read
  with ``rosbags`` (no ROS install): ``sensor_msgs/msg/Image``, ``CompressedImage``, ``CameraInfo``
  and ``tf2_msgs/msg/TFMessage`` on ``/tf_static``.

A foreign drive needs a mapping (YAML, `load_mapping`) naming each rig camera's image topic, its
calibration topic and the ego frame. Calibration comes from the drive where it has one (K,
distortion and size from the first valid calibration message; T_ego_from_camera from the static
transforms between the ego frame and the camera's frame), else from the rig YAML. Every message is
checked at this boundary (sizes against the data length before anything is allocated, finite
values, frame ids): a bad one is counted in ``Drive.rejected`` by reason, logged once per reason and
camera, and skipped; it never ends the iteration.
"""
from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from perception import config as pconfig
from perception import topics
from perception.record import RECORDED_FRAME_TYPE, RecordedMessage, read_messages
from perception.v1 import frame_pb2, recording_pb2

log = logging.getLogger("perception.drives")

# Compressed images larger than this are refused before decoding (bytes).
MAX_COMPRESSED_BYTES = 64 << 20
# Images whose aspect ratio differs from the calibration's by more than this are refused, not resized.
ASPECT_TOLERANCE = 0.01
# |q| of a transform's quaternion must be within this of 1 (it is then normalised).
QUATERNION_TOLERANCE = 1e-3

ROS_IMAGE = "sensor_msgs/msg/Image"
ROS_COMPRESSED = "sensor_msgs/msg/CompressedImage"
ROS_INFO = "sensor_msgs/msg/CameraInfo"
ROS_TF = "tf2_msgs/msg/TFMessage"
FOX_IMAGE = "foxglove.RawImage"
FOX_COMPRESSED = "foxglove.CompressedImage"
FOX_INFO = "foxglove.CameraCalibration"
FOX_TF = "foxglove.FrameTransform"
FOX_TFS = "foxglove.FrameTransforms"

# Raw encodings (ROS sensor_msgs/image_encodings and Foxglove RawImage use the same names) ->
# (channels, OpenCV conversion to BGR or None when already BGR).
_CV_BGR = {"rgb8": "COLOR_RGB2BGR", "mono8": "COLOR_GRAY2BGR", "bgra8": "COLOR_BGRA2BGR", "rgba8": "COLOR_RGBA2BGR"}
RAW_ENCODINGS = {"bgr8": 3, "rgb8": 3, "mono8": 1, "bgra8": 4, "rgba8": 4}
COMPRESSED_FORMATS = ("jpeg", "jpg", "png", "webp")
# Distortion models whose coefficients are OpenCV's (k1, k2, p1, p2[, k3[, k4, k5, k6]]).
DISTORTION_MODELS = ("", "plumb_bob", "rational_polynomial")


class DriveError(pconfig.ConfigError):
    """A drive that cannot be replayed at all (unknown format, a mapping that does not fit it, a
    camera without any calibration); the message says what and where."""


class _Bad(Exception):
    """One message refused; `reason` is the key it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# ------------------------------------------------------------------------------------------ mapping

@dataclass(frozen=True)
class CameraTopics:
    """Where one rig camera is in a foreign drive."""
    name: str                       # rig camera name (topic camera/<name> in what the drive yields)
    image: str                      # Image / CompressedImage (ROS) or RawImage / CompressedImage (Foxglove) topic
    info: str | None = None         # CameraInfo / CameraCalibration topic (None: calibration from the rig YAML)
    frame_id: str | None = None     # the camera's optical frame (None: frame_id of its calibration messages)


@dataclass(frozen=True)
class DriveMapping:
    """Which topic is which rig camera (YAML: `load_mapping`)."""
    cameras: tuple[CameraTopics, ...]
    ego_frame: str = "base_link"    # the rig's ego frame in the drive's transforms
    resize: bool = True             # resize images whose size differs from the calibration (same aspect), else refuse
    tf_topics: tuple[str, ...] = ("/tf_static",)   # ROS bags: static transform topics (Foxglove: every FrameTransform channel)


def parse_mapping(data: Any, where: str = "mapping") -> DriveMapping:
    """A DriveMapping from parsed YAML; DriveError naming the field otherwise."""
    if not isinstance(data, dict) or not isinstance(data.get("cameras"), list) or not data["cameras"]:
        raise DriveError(f"{where}: expected a mapping with a non-empty 'cameras' list")
    unknown = set(data) - {"cameras", "ego_frame", "resize", "tf_topics"}
    if unknown:
        raise DriveError(f"{where}: unknown field(s) {sorted(unknown)}")
    cams = []
    for i, c in enumerate(data["cameras"]):
        w = f"{where}: cameras[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("name"), str) or not isinstance(c.get("image"), str):
            raise DriveError(f"{w}: needs 'name' and 'image' (strings)")
        bad = set(c) - {"name", "image", "info", "frame_id"}
        if bad:
            raise DriveError(f"{w}: unknown field(s) {sorted(bad)}")
        for key in ("info", "frame_id"):
            if c.get(key) is not None and not isinstance(c[key], str):
                raise DriveError(f"{w}.{key}: expected a string")
        cams.append(CameraTopics(c["name"], c["image"], c.get("info"), c.get("frame_id")))
    names = [c.name for c in cams]
    images = [c.image for c in cams]
    if len(set(names)) != len(names) or len(set(images)) != len(images):
        raise DriveError(f"{where}: camera names and image topics must be unique")
    ego = data.get("ego_frame", "base_link")
    resize = data.get("resize", True)
    tf_topics = data.get("tf_topics", ["/tf_static"])
    if not isinstance(ego, str) or not ego:
        raise DriveError(f"{where}.ego_frame: expected a frame name")
    if not isinstance(resize, bool):
        raise DriveError(f"{where}.resize: expected true or false")
    if not isinstance(tf_topics, list) or not all(isinstance(t, str) for t in tf_topics):
        raise DriveError(f"{where}.tf_topics: expected a list of topic names")
    return DriveMapping(tuple(cams), ego, resize, tuple(tf_topics))


def load_mapping(path: str | Path) -> DriveMapping:
    return parse_mapping(pconfig.read_yaml(path, "drive mapping"), str(path))


# ------------------------------------------------------------------------------------------ geometry

def matrix_from_quaternion(x: float, y: float, z: float, w: float) -> np.ndarray:
    """(3, 3) rotation of a unit quaternion (x, y, z, w), the ROS/Foxglove order."""
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def quaternion_from_matrix(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a (3, 3) rotation (Shepperd's method: stable for every rotation)."""
    R = np.asarray(R, dtype=np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = 2 * math.sqrt(tr + 1)
        q = ((R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, s / 4)
    elif R[0, 0] >= R[1, 1] and R[0, 0] >= R[2, 2]:
        s = 2 * math.sqrt(1 + R[0, 0] - R[1, 1] - R[2, 2])
        q = (s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s)
    elif R[1, 1] >= R[2, 2]:
        s = 2 * math.sqrt(1 + R[1, 1] - R[0, 0] - R[2, 2])
        q = ((R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s)
    else:
        s = 2 * math.sqrt(1 + R[2, 2] - R[0, 0] - R[1, 1])
        q = ((R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4, (R[1, 0] - R[0, 1]) / s)
    return (float(q[0]), float(q[1]), float(q[2]), float(q[3]))


def transform_matrix(translation, rotation_xyzw) -> np.ndarray:
    """(4, 4) T_parent_from_child of a transform message's translation and quaternion; _Bad for
    non-finite values or a quaternion that is not (nearly) of unit length."""
    t = np.asarray(translation, dtype=np.float64)
    q = np.asarray(rotation_xyzw, dtype=np.float64)
    if t.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise _Bad("transform_nonfinite", f"translation {t}, rotation {q}")
    n = float(np.linalg.norm(q))
    if abs(n - 1.0) > QUATERNION_TOLERANCE:
        raise _Bad("transform_quaternion", f"quaternion {q} has length {n}")
    T = np.eye(4)
    T[:3, :3] = matrix_from_quaternion(*(q / n))
    T[:3, 3] = t
    return T


def chain_transform(edges: dict[tuple[str, str], np.ndarray], target: str, source: str) -> np.ndarray | None:
    """T_target_from_source through a tree of transforms {(parent, child): T_parent_from_child},
    walked in either direction (breadth first); None when the two frames are not connected."""
    if target == source:
        return np.eye(4)
    adjacent: dict[str, list[tuple[str, np.ndarray]]] = {}
    for (parent, child), T in edges.items():
        adjacent.setdefault(parent, []).append((child, T))                                  # parent <- child
        adjacent.setdefault(child, []).append((parent, np.linalg.inv(T)))                   # child <- parent
    # best[f] = T_target_from_f
    best = {target: np.eye(4)}
    frontier = [target]
    while frontier:
        nxt = []
        for f in frontier:
            for g, T_f_from_g in adjacent.get(f, []):
                if g not in best:
                    best[g] = best[f] @ T_f_from_g
                    if g == source:
                        return best[g]
                    nxt.append(g)
        frontier = nxt
    return None


# ------------------------------------------------------------------------------------------ normalised messages

@dataclass
class _Image:
    """An image message of either source, fields as sent (not yet checked)."""
    topic: str
    log_ns: int
    stamp_ns: int
    frame_id: str
    data: Any                       # bytes-like
    compressed: bool
    encoding: str = ""              # raw: rgb8, bgr8, ...; compressed: the format string
    width: int = 0
    height: int = 0
    step: int = 0


@dataclass
class _Info:
    """A calibration message of either source."""
    topic: str
    frame_id: str
    width: int
    height: int
    K: Any                          # 9 values, row major
    D: Any
    distortion_model: str
    roi_or_binning: bool = False    # ROS: a region of interest or binning (not supported)


@dataclass
class _Transform:
    parent: str
    child: str
    translation: tuple
    rotation: tuple                 # x, y, z, w


def _stamp(sec: Any, nanos: Any) -> int:
    sec, nanos = int(sec), int(nanos)
    if not (0 <= nanos < 1_000_000_000) or not (0 < sec < (1 << 62) // 1_000_000_000):
        raise _Bad("bad_stamp", f"stamp {sec} s {nanos} ns")
    return sec * 1_000_000_000 + nanos


# ------------------------------------------------------------------------------------------ sources

def _check_types(path: Path, types: dict[str, str], mapping: DriveMapping, image_types: tuple[str, ...],
                 info_type: str) -> None:
    """DriveError when a mapped topic the drive has carries another message type than expected."""
    for cam in mapping.cameras:
        t = types.get(cam.image)
        if t is not None and t not in image_types:
            raise DriveError(f"{path}: image topic {cam.image} of camera {cam.name} is a {t}, not {' or '.join(image_types)}")
        t = types.get(cam.info) if cam.info else None
        if t is not None and t != info_type:
            raise DriveError(f"{path}: calibration topic {cam.info} of camera {cam.name} is a {t}, not {info_type}")


class _RosSource:
    """A ROS 2 bag directory (or ROS 1 .bag) through rosbags' AnyReader, messages deserialized
    with the type definitions stored in the bag."""

    kind = "rosbag"

    def __init__(self, path: Path):
        from rosbags.highlevel import AnyReader

        self.path = path
        self._reader = AnyReader([path])
        self._reader.open()
        self.truncated = False
        self.types = {c.topic: c.msgtype for c in self._reader.connections}

    def close(self) -> None:
        self._reader.close()

    def check_types(self, mapping: DriveMapping) -> None:
        _check_types(self.path, self.types, mapping, (ROS_IMAGE, ROS_COMPRESSED), ROS_INFO)

    def read(self, wanted: set[str], tf_topics: tuple[str, ...], on_bad) -> Iterator[Any]:
        """_Image, _Info and _Transform of the `wanted` topics (plus `tf_topics`) in file order;
        a message that does not deserialize or convert is passed to on_bad(reason, topic, detail)."""
        from rosbags.highlevel import AnyReaderError

        conns = [c for c in self._reader.connections
                 if c.topic in wanted or (c.topic in tf_topics and c.msgtype == ROS_TF)]
        if not conns:
            return
        it = self._reader.messages(connections=conns)
        while True:
            try:
                conn, log_ns, raw = next(it)
            except StopIteration:
                return
            except Exception as e:      # rosbags' reader or storage errors (a damaged database or chunk): stop here
                log.warning("%s: stops after a damaged record (%s: %s)", self.path, type(e).__name__, e)
                self.truncated = True
                return
            try:
                msg = self._reader.deserialize(raw, conn.msgtype)
                if conn.msgtype == ROS_TF:
                    yield from self._transforms(msg)
                else:
                    yield self._convert(conn.topic, conn.msgtype, log_ns, msg)
            except _Bad as e:
                on_bad(e.reason, conn.topic, str(e))
            except (AnyReaderError, AttributeError, TypeError, ValueError, IndexError, struct.error) as e:
                on_bad("bad_message", conn.topic, f"{type(e).__name__}: {e}")

    @staticmethod
    def _convert(topic: str, msgtype: str, log_ns: int, msg: Any):
        h = msg.header
        if msgtype == ROS_INFO:
            roi = msg.roi
            roi_or_binning = (msg.binning_x > 1 or msg.binning_y > 1
                              or bool(roi.width or roi.height or roi.x_offset or roi.y_offset))
            return _Info(topic, str(h.frame_id), int(msg.width), int(msg.height), msg.k, msg.d,
                         str(msg.distortion_model), roi_or_binning)
        stamp = _stamp(h.stamp.sec, h.stamp.nanosec)
        if msgtype == ROS_COMPRESSED:
            return _Image(topic, log_ns, stamp, str(h.frame_id), msg.data, True, str(msg.format))
        return _Image(topic, log_ns, stamp, str(h.frame_id), msg.data, False, str(msg.encoding),
                      int(msg.width), int(msg.height), int(msg.step))

    @staticmethod
    def _transforms(msg: Any) -> Iterator[_Transform]:
        for ts in msg.transforms:
            tr, rot = ts.transform.translation, ts.transform.rotation
            yield _Transform(str(ts.header.frame_id), str(ts.child_frame_id), (tr.x, tr.y, tr.z),
                             (rot.x, rot.y, rot.z, rot.w))


class _FoxgloveSource:
    """An MCAP file with Foxglove protobuf channels, decoded from the schemas stored in it."""

    kind = "foxglove-mcap"

    def __init__(self, path: Path, schemas: dict[str, str]):
        self.path = path
        self.types = schemas                # topic -> schema name
        self.truncated = False

    def close(self) -> None:
        pass

    def check_types(self, mapping: DriveMapping) -> None:
        _check_types(self.path, self.types, mapping, (FOX_IMAGE, FOX_COMPRESSED), FOX_INFO)

    def read(self, wanted: set[str], tf_topics: tuple[str, ...], on_bad) -> Iterator[Any]:
        """As _RosSource.read; transforms come from every FrameTransform(s) channel when
        `tf_topics` is not empty. A file cut short ends the iteration (self.truncated)."""
        from mcap.exceptions import McapError
        from mcap.reader import NonSeekingReader
        from mcap_protobuf.decoder import DecoderFactory

        tf = [t for t, s in self.types.items() if s in (FOX_TF, FOX_TFS)] if tf_topics else []
        factory = DecoderFactory()
        decoders: dict[int, Any] = {}
        with open(self.path, "rb") as f:
            it = NonSeekingReader(f, validate_crcs=True).iter_messages(topics=sorted(wanted | set(tf)), log_time_order=False)
            while True:
                try:
                    schema, channel, message = next(it)
                except StopIteration:
                    return
                except (McapError, EOFError, ValueError, struct.error) as e:    # partial record at the end, bad CRC
                    log.warning("%s: stops after a damaged or partial record (%s)", self.path, e)
                    self.truncated = True
                    return
                name = schema.name if schema is not None else ""
                try:
                    if schema is None or channel.message_encoding != "protobuf":
                        raise _Bad("bad_message", f"channel {channel.topic} is not protobuf-encoded")
                    if channel.id not in decoders:
                        decoders[channel.id] = factory.decoder_for(channel.message_encoding, schema)
                    decode = decoders[channel.id]
                    if decode is None:
                        raise _Bad("bad_message", f"no protobuf schema for {channel.topic}")
                    msg = decode(message.data)
                    if name == FOX_TF:
                        yield self._transform(msg)
                    elif name == FOX_TFS:
                        for t in msg.transforms:
                            yield self._transform(t)
                    else:
                        yield self._convert(channel.topic, name, message.log_time, msg)
                except _Bad as e:
                    on_bad(e.reason, channel.topic, str(e))
                except (McapError, AttributeError, TypeError, ValueError, IndexError) as e:   # incl. protobuf DecodeError
                    on_bad("bad_message", channel.topic, f"{type(e).__name__}: {e}")

    @staticmethod
    def _convert(topic: str, schema: str, log_ns: int, msg: Any):
        if schema == FOX_INFO:
            return _Info(topic, str(msg.frame_id), int(msg.width), int(msg.height), list(msg.K), list(msg.D),
                         str(msg.distortion_model))
        stamp = _stamp(msg.timestamp.seconds, msg.timestamp.nanos)
        if schema == FOX_COMPRESSED:
            return _Image(topic, log_ns, stamp, str(msg.frame_id), msg.data, True, str(msg.format))
        if schema == FOX_IMAGE:
            return _Image(topic, log_ns, stamp, str(msg.frame_id), msg.data, False, str(msg.encoding),
                          int(msg.width), int(msg.height), int(msg.step))
        raise _Bad("bad_message", f"{topic}: {schema} is not an image or calibration")

    @staticmethod
    def _transform(msg: Any) -> _Transform:
        tr, rot = msg.translation, msg.rotation
        return _Transform(str(msg.parent_frame_id), str(msg.child_frame_id), (tr.x, tr.y, tr.z),
                          (rot.x, rot.y, rot.z, rot.w))


def _mcap_channels(path: Path) -> dict[str, tuple[str, str]]:
    """{topic: (schema name, message encoding)} of an MCAP file: from its summary, or by streaming
    the records when it has none (a file cut short)."""
    from mcap.exceptions import McapError
    from mcap.reader import make_reader
    from mcap.records import Channel, Schema
    from mcap.stream_reader import StreamReader

    out: dict[str, tuple[str, str]] = {}
    with open(path, "rb") as f:
        try:
            summary = make_reader(f).get_summary()
        except (McapError, EOFError, ValueError, struct.error):
            summary = None
        if summary is not None and summary.channels:
            for ch in summary.channels.values():
                sch = summary.schemas.get(ch.schema_id)
                out[ch.topic] = (sch.name if sch is not None else "", ch.message_encoding)
            return out
        f.seek(0)
        schemas: dict[int, str] = {}
        try:
            for record in StreamReader(f, skip_magic=False).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record.name
                elif isinstance(record, Channel):
                    out[record.topic] = (schemas.get(record.schema_id, ""), record.message_encoding)
        except (McapError, EOFError, ValueError, struct.error):
            pass
    return out


# ------------------------------------------------------------------------------------------ drives

@dataclass
class Drive:
    """A drive ready to replay: its rig and its messages (`messages`). Counters: `rejected` (messages
    refused, by reason), `resized` (frames resized to their calibration), `truncated` (the file
    ends in a partial record)."""
    path: Path
    kind: str                                   # "perception", "foxglove-mcap" or "rosbag"
    rig: pconfig.RigConfig
    rejected: dict[str, int] = field(default_factory=dict)
    resized: int = 0
    truncated: bool = False

    def messages(self, topics_: list[str] | None = None) -> Iterator[RecordedMessage]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Drive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _count(self, reason: str, where: str, detail: str) -> None:
        n = self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if n == 1 or n & (n - 1) == 0:          # the 1st, 2nd, 4th, 8th ... of each reason
            log.warning("%s: %s refused (%s, %d so far): %s", self.path, where, reason, n, detail)


@dataclass
class OwnRecording(Drive):
    """A `perception record` file: frames already carry their header and calibration."""

    def messages(self, topics_: list[str] | None = None) -> Iterator[RecordedMessage]:
        stats: dict = {}
        yield from read_messages(self.path, topics_, stats)
        self.truncated = bool(stats.get("truncated"))


@dataclass
class ForeignDrive(Drive):
    """A Foxglove MCAP or a ROS bag, mapped onto the rig by a DriveMapping."""
    mapping: DriveMapping = field(default_factory=lambda: DriveMapping(()))
    source: Any = None
    frame_ids: dict[str, str] = field(default_factory=dict)      # camera -> its optical frame in the drive
    calibration_source: dict[str, str] = field(default_factory=dict)   # camera -> "drive", "rig" or "drive+rig"

    def close(self) -> None:
        if self.source is not None:
            self.source.close()

    def messages(self, topics_: list[str] | None = None) -> Iterator[RecordedMessage]:
        """RecordedFrames of the mapped cameras (topic camera/<name>) in file order: BGR8, the
        calibration's size, stamp = the message's header stamp (capture time), sequence = frames
        of that camera yielded so far. The first frame of a camera, and the first after its
        calibration changed in the drive, carries the full calibration."""
        cams = [c for c in self.mapping.cameras if topics_ is None or topics.camera(c.name) in topics_]
        by_image = {c.image: c for c in cams}
        by_info = {c.info: c for c in self.mapping.cameras if c.info}
        calibration = {c.name: c for c in self.rig.cameras}
        send_calibration = {c.name: True for c in self.rig.cameras}
        sequence = {c.name: 0 for c in self.rig.cameras}
        wanted = set(by_image) | set(by_info)
        for item in self.source.read(wanted, (), self._on_bad):       # transforms: read once, by open_drive
            if isinstance(item, _Info):
                cam = by_info[item.topic]
                try:
                    new = _intrinsics(item, calibration[cam.name])
                    self._check_frame_id(cam, item.frame_id)
                except (_Bad, pconfig.CalibrationError) as e:
                    self._count(getattr(e, "reason", "calibration"), item.topic, str(e))
                    continue
                if new.calibration_id != calibration[cam.name].calibration_id:
                    log.info("%s: camera %s: calibration changes to %s", self.path, cam.name, new.calibration_id)
                    calibration[cam.name] = new
                    send_calibration[cam.name] = True
                continue
            if not isinstance(item, _Image) or item.topic not in by_image:
                continue
            cam = by_image[item.topic]
            cal = calibration[cam.name]
            try:
                self._check_frame_id(cam, item.frame_id)
                pixels = self._bgr(item, cal)
            except _Bad as e:
                self._count(e.reason, f"{item.topic} at {item.stamp_ns}", str(e))
                continue
            h = frame_pb2.FrameHeader(camera_name=cam.name, sequence=sequence[cam.name], capture_start_ns=item.stamp_ns,
                                      capture_end_ns=item.stamp_ns, publish_ns=item.log_ns, width=cal.width,
                                      height=cal.height, encoding=frame_pb2.PIXEL_ENCODING_BGR8,
                                      row_stride=cal.width * 3, calibration_id=cal.calibration_id,
                                      source=f"{self.kind}:{self.path.name}")
            if send_calibration[cam.name]:
                h.calibration.CopyFrom(cal.to_proto())
                send_calibration[cam.name] = False
            sequence[cam.name] += 1
            yield RecordedMessage(topics.camera(cam.name), item.log_ns, item.stamp_ns,
                                  recording_pb2.RecordedFrame(header=h, pixels=pixels.tobytes()))
        self.truncated = bool(getattr(self.source, "truncated", False))

    def _on_bad(self, reason: str, topic: str, detail: str) -> None:
        self._count(reason, topic, detail)

    def _check_frame_id(self, cam: CameraTopics, frame_id: str) -> None:
        expected = self.frame_ids.get(cam.name)
        if expected and frame_id and frame_id != expected:
            raise _Bad("frame_id_mismatch", f"camera {cam.name}: message in frame {frame_id!r}, calibration in {expected!r}")

    def _bgr(self, m: _Image, cal: pconfig.CameraConfig) -> np.ndarray:
        """(cal.height, cal.width, 3) uint8 BGR of an image message, checked before allocating."""
        import cv2

        if m.compressed:
            fmt = m.encoding.lower()
            if not any(k in fmt for k in COMPRESSED_FORMATS):
                raise _Bad("unknown_encoding", f"compressed format {m.encoding!r} (known: {', '.join(COMPRESSED_FORMATS)})")
            n = len(m.data)
            if not 0 < n <= MAX_COMPRESSED_BYTES:
                raise _Bad("payload_size", f"compressed image of {n} bytes (at most {MAX_COMPRESSED_BYTES})")
            # OpenCV refuses images over its own pixel limit (CV_IO_MAX_IMAGE_PIXELS) before allocating them.
            img = cv2.imdecode(np.frombuffer(m.data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if img is None or img.ndim != 3 or img.shape[2] != 3:
                raise _Bad("bad_compressed", f"{m.encoding} data that does not decode to an image")
        else:
            channels = RAW_ENCODINGS.get(m.encoding)
            if channels is None:
                raise _Bad("unknown_encoding", f"encoding {m.encoding!r} (known: {', '.join(RAW_ENCODINGS)})")
            if not (0 < m.width <= pconfig.MAX_IMAGE_SIDE and 0 < m.height <= pconfig.MAX_IMAGE_SIDE):
                raise _Bad("bad_size", f"image size {m.width}x{m.height}")
            row = m.width * channels
            step = m.step or row
            if step < row:
                raise _Bad("bad_stride", f"step {step} < width {m.width} x {channels} bytes")
            if len(m.data) != step * m.height:
                raise _Bad("payload_size", f"{len(m.data)} bytes of data, header says height {m.height} x step {step}")
            img = np.frombuffer(m.data, dtype=np.uint8).reshape(m.height, step)[:, :row].reshape(m.height, m.width, channels)
            code = _CV_BGR.get(m.encoding)
            img = np.ascontiguousarray(img) if code is None else cv2.cvtColor(img, getattr(cv2, code))
        h, w = img.shape[:2]
        if (w, h) != (cal.width, cal.height):
            if not self.mapping.resize:
                raise _Bad("size_mismatch", f"image {w}x{h}, calibration {cal.width}x{cal.height} (resize: false)")
            if abs((w / h) / (cal.width / cal.height) - 1.0) > ASPECT_TOLERANCE:
                raise _Bad("size_mismatch", f"image {w}x{h} has not the aspect ratio of the calibration's "
                           f"{cal.width}x{cal.height}: cannot resize")
            shrink = w * h > cal.width * cal.height
            img = cv2.resize(img, (cal.width, cal.height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            self.resized += 1
        return img


def _intrinsics(info: _Info, cam: pconfig.CameraConfig) -> pconfig.CameraConfig:
    """`cam` with the size, K and distortion of a calibration message (validated); _Bad or
    CalibrationError for one that cannot be used."""
    if info.roi_or_binning:
        raise _Bad("calibration_roi_binning", f"{info.topic}: region of interest or binning is not supported")
    K = np.asarray(info.K, dtype=np.float64)
    D = np.asarray(info.D, dtype=np.float64).ravel()
    if K.size != 9:
        raise _Bad("calibration_shape", f"{info.topic}: K has {K.size} values")
    if np.all(K == 0):
        raise _Bad("calibration_uncalibrated", f"{info.topic}: K is all zeros (an uncalibrated camera)")
    if D.size and np.any(D != 0) and info.distortion_model not in DISTORTION_MODELS:
        raise _Bad("calibration_distortion_model", f"{info.topic}: distortion model {info.distortion_model!r} "
                   f"(supported: plumb_bob, rational_polynomial)")
    dist = tuple(float(x) for x in D) if np.any(D != 0) else ()
    new = replace(cam, width=info.width, height=info.height, K=K.reshape(3, 3), distortion=dist)
    # The intrinsics alone here (the extrinsics may still be missing); the whole camera later.
    new.with_extrinsics(np.eye(4)).validate(f"calibration of camera {cam.name} on {info.topic}")
    return new


def _placeholder(name: str) -> pconfig.CameraConfig:
    return pconfig.CameraConfig(name=name, width=0, height=0, K=np.full((3, 3), np.nan), T_ego_from_camera=np.full((4, 4), np.nan))


def _foreign(path: Path, source: Any, mapping: DriveMapping, rig: pconfig.RigConfig | None) -> ForeignDrive:
    """Build the rig of a foreign drive: read its calibration and static transforms once, fill in
    from `rig` what it lacks; DriveError for a camera calibrated by neither."""
    source.check_types(mapping)
    if rig is not None:
        extra = [c.name for c in mapping.cameras if c.name not in rig.camera_names]
        if extra:
            raise DriveError(f"mapping names camera(s) {extra} that rig {rig.name!r} does not have "
                             f"({', '.join(rig.camera_names)})")
    drive = ForeignDrive(path=path, kind=source.kind, rig=pconfig.RigConfig(name="pending"), mapping=mapping, source=source)
    for cam in mapping.cameras:
        if cam.image not in source.types:
            log.warning("%s: no topic %s (camera %s): that camera will be missing from every frame set",
                        path, cam.image, cam.name)
    infos: dict[str, _Info] = {}
    edges: dict[tuple[str, str], np.ndarray] = {}
    by_info = {c.info: c for c in mapping.cameras if c.info}

    def on_bad(reason: str, topic: str, detail: str) -> None:
        if topic in by_info:                                 # counted when messages() meets it again
            log.debug("%s: %s: %s", path, topic, detail)
        else:
            drive._count(reason, topic, detail)

    for item in source.read(set(by_info), mapping.tf_topics, on_bad):
        if isinstance(item, _Info):
            cam = by_info[item.topic]
            if cam.name in infos:
                continue
            try:
                _intrinsics(item, _placeholder(cam.name))
                infos[cam.name] = item
            except (_Bad, pconfig.CalibrationError) as e:     # counted when messages() meets it again
                log.debug("%s: %s: %s", path, item.topic, e)
        elif isinstance(item, _Transform):
            key = (item.parent, item.child)
            if key in edges:
                continue                                     # the first of each pair (static transforms)
            try:
                edges[key] = transform_matrix(item.translation, item.rotation)
            except _Bad as e:
                drive._count(e.reason, f"transform {item.parent} -> {item.child}", str(e))
    source_truncated = bool(getattr(source, "truncated", False))
    if hasattr(source, "truncated"):
        source.truncated = False

    cameras: list[pconfig.CameraConfig] = []
    problems: list[str] = []
    names = rig.camera_names if rig is not None else [c.name for c in mapping.cameras]
    mapped = {c.name: c for c in mapping.cameras}
    for name in names:
        fallback = rig.camera(name) if rig is not None else None
        topics_ = mapped.get(name)
        info = infos.get(name)
        frame_id = (topics_.frame_id if topics_ is not None else None) or (info.frame_id if info is not None else "")
        T = chain_transform(edges, mapping.ego_frame, frame_id) if frame_id else None
        used = []
        camera = _placeholder(name) if fallback is None else fallback
        if info is not None:
            camera = _intrinsics(info, camera)
            used.append("intrinsics: drive")
        elif fallback is not None:
            used.append("intrinsics: rig")
        else:
            problems.append(f"{name}: no valid calibration on {topics_.info if topics_ else None!r} and no rig")
            continue
        if T is not None:
            camera = camera.with_extrinsics(T)
            used.append("extrinsics: drive")
        elif fallback is not None:
            camera = camera.with_extrinsics(fallback.T_ego_from_camera)
            used.append("extrinsics: rig")
        else:
            problems.append(f"{name}: no static transform from {mapping.ego_frame!r} to {frame_id or '(no frame id)'!r} "
                            "and no rig")
            continue
        try:
            camera.validate(f"camera {name} of {path}")
        except pconfig.CalibrationError as e:
            problems.append(str(e))
            continue
        cameras.append(camera)
        drive.frame_ids[name] = frame_id
        drive.calibration_source[name] = ", ".join(used)
    if problems:
        raise DriveError(f"{path}: cannot calibrate every camera (give --rig for what the drive lacks): " + "; ".join(problems))
    drive.rig = pconfig.RigConfig(name=f"{rig.name if rig is not None else 'drive'}:{path.name}", cameras=tuple(cameras))
    drive.truncated = source_truncated
    for name, how in drive.calibration_source.items():
        log.info("%s: camera %s: %s", path, name, how)
    return drive


def _as_rig(rig: str | Path | pconfig.RigConfig | None) -> pconfig.RigConfig | None:
    if rig is None or isinstance(rig, pconfig.RigConfig):
        return rig
    return pconfig.load_rig(rig)


def open_drive(path: str | Path, mapping: str | Path | DriveMapping | None = None,
               rig: str | Path | pconfig.RigConfig | None = None) -> Drive:
    """Open a drive: our own MCAP recording, an MCAP with Foxglove image channels, or a ROS bag.

    `mapping` (a DriveMapping or its YAML file) is required for the foreign kinds; an own recording
    given a mapping is read through its Foxglove channels instead. `rig` (RigConfig or YAML) is
    the rig of an own recording (default rigs/nuscenes_6cam.yaml) and, for a foreign drive, the
    camera order and the calibration the drive lacks. DriveError (a ConfigError) when the drive
    cannot be replayed; FileNotFoundError when `path` does not exist."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    the_rig = _as_rig(rig)
    the_mapping = load_mapping(mapping) if isinstance(mapping, (str, Path)) else mapping
    if path.is_dir() or path.suffix == ".bag":
        if the_mapping is None:
            raise DriveError(f"{path}: a ROS bag needs a mapping (--map mapping.yaml) naming each camera's topics")
        return _open_ros(path, the_mapping, the_rig)
    channels = _mcap_channels(path)
    if not channels:
        raise DriveError(f"{path}: not an MCAP file with channels, nor a ROS 2 bag directory")
    encodings = {enc for _, enc in channels.values()}
    if "cdr" in encodings and (path.parent / "metadata.yaml").exists():     # the MCAP file of a ROS 2 bag
        if the_mapping is None:
            raise DriveError(f"{path}: a ROS bag needs a mapping (--map mapping.yaml) naming each camera's topics")
        return _open_ros(path.parent, the_mapping, the_rig)
    schemas = {t: s for t, (s, _) in channels.items()}
    if the_mapping is None:
        if RECORDED_FRAME_TYPE in schemas.values():
            return OwnRecording(path=path, kind="perception", rig=the_rig or pconfig.load_rig(pconfig.DEFAULT_RIG))
        images = sorted(t for t, s in schemas.items() if s in (FOX_IMAGE, FOX_COMPRESSED))
        if images:
            raise DriveError(f"{path}: Foxglove image channels {images} need a mapping (--map mapping.yaml)")
        raise DriveError(f"{path}: no camera channels this package reads (schemas: {sorted(set(schemas.values()))})")
    return _foreign(path, _FoxgloveSource(path, schemas), the_mapping, the_rig)


def _open_ros(path: Path, mapping: DriveMapping, rig: pconfig.RigConfig | None) -> ForeignDrive:
    try:
        from rosbags.highlevel import AnyReaderError
    except ImportError as e:
        raise DriveError(f"{path}: reading ROS bags needs the rosbags package: pip install 'perception[drives]' ({e})") from None
    try:
        source = _RosSource(path)
    except AnyReaderError as e:
        raise DriveError(f"{path}: not a readable ROS bag: {e}") from None
    try:
        return _foreign(path, source, mapping, rig)
    except BaseException:
        source.close()
        raise
