"""Our messages as Foxglove's (foxglove-schemas-protobuf), so a recording opens in Foxglove with
images, camera calibrations, the rig's transforms and 3D boxes (docs/recording.md, "Foxglove
channels").

The conversions are pure functions (one of our messages in, one Foxglove message out) that check
their input first: a recording stores whatever arrived on the wire, so a bad frame or calibration
raises ``Skipped`` (with a short reason the recorder counts) instead of producing a message that
Foxglove would misdraw. ``FoxgloveChannels`` is the only state: the calibration each camera last
sent (frames carry it only now and then) and when the rig's transforms were last written.

Frames of reference: the ego frame is ``base_link`` (x forward, y left, z up); each camera's frame
is named after the camera and is the OpenCV optical frame (x right, y down, z forward), which is
Foxglove's camera frame convention too (the ``frame_id`` of its CameraCalibration and images), so
``T_ego_from_camera`` is the camera's pose in base_link as it is.
"""
from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field

import numpy as np
from foxglove_schemas_protobuf.CameraCalibration_pb2 import CameraCalibration as FoxCalibration
from foxglove_schemas_protobuf.Color_pb2 import Color
from foxglove_schemas_protobuf.CompressedImage_pb2 import CompressedImage
from foxglove_schemas_protobuf.CubePrimitive_pb2 import CubePrimitive
from foxglove_schemas_protobuf.FrameTransform_pb2 import FrameTransform
from foxglove_schemas_protobuf.FrameTransforms_pb2 import FrameTransforms
from foxglove_schemas_protobuf.KeyValuePair_pb2 import KeyValuePair
from foxglove_schemas_protobuf.Pose_pb2 import Pose
from foxglove_schemas_protobuf.Quaternion_pb2 import Quaternion
from foxglove_schemas_protobuf.RawImage_pb2 import RawImage
from foxglove_schemas_protobuf.SceneEntity_pb2 import SceneEntity
from foxglove_schemas_protobuf.SceneEntityDeletion_pb2 import SceneEntityDeletion
from foxglove_schemas_protobuf.SceneUpdate_pb2 import SceneUpdate
from foxglove_schemas_protobuf.TextPrimitive_pb2 import TextPrimitive
from foxglove_schemas_protobuf.Vector3_pb2 import Vector3
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from perception import config as pconfig
from perception import topics
from perception.v1 import calibration_pb2, detections_pb2, frame_pb2

log = logging.getLogger("perception.foxglove")

BASE_FRAME = "base_link"
TF_TOPIC = "/foxglove/tf"
DETECTIONS_TOPIC = "/foxglove/detections"
TRUTH_TOPIC = "/foxglove/sim/truth"
IMAGE_FORMATS = ("jpeg", "raw", "none")

# One colour per class (RGB in [0, 1]); detections and ground truth share them, truth is fainter.
CLASS_COLORS: dict[int, tuple[float, float, float]] = {
    detections_pb2.OBJECT_CLASS_CAR: (0.12, 0.47, 0.71),           # blue
    detections_pb2.OBJECT_CLASS_TRUCK: (1.00, 0.50, 0.05),         # orange
    detections_pb2.OBJECT_CLASS_PEDESTRIAN: (0.84, 0.15, 0.16),    # red
    detections_pb2.OBJECT_CLASS_CYCLIST: (0.17, 0.63, 0.17),       # green
    detections_pb2.OBJECT_CLASS_TRAFFIC_CONE: (1.00, 0.85, 0.00),  # yellow
}
UNKNOWN_COLOR = (0.5, 0.5, 0.5)                                    # grey: OBJECT_CLASS_UNSPECIFIED or unknown
DETECTION_ALPHA = 0.6
TRUTH_ALPHA = 0.25

MAX_OBJECTS = 4096          # objects in one message, at most (Detections carry <= 100)
MAX_BOX_SIDE_M = 100.0      # a box side beyond this is not an object
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")   # camera names that may become topic and frame names
_RAW_ENCODINGS = {frame_pb2.PIXEL_ENCODING_BGR8: "bgr8", frame_pb2.PIXEL_ENCODING_RGB8: "rgb8",
                  frame_pb2.PIXEL_ENCODING_MONO8: "mono8"}


class Skipped(ValueError):
    """An input that gives no Foxglove message; ``reason`` is the short key it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def image_topic(camera: str) -> str:
    return f"/foxglove/camera/{camera}/image"


def calibration_topic(camera: str) -> str:
    return f"/foxglove/camera/{camera}/calibration"


def class_name(object_class: int) -> str:
    """'car' for OBJECT_CLASS_CAR; 'unspecified' for a value the enum does not have."""
    try:
        return detections_pb2.ObjectClass.Name(object_class).removeprefix("OBJECT_CLASS_").lower()  # type: ignore[arg-type]
    except ValueError:
        return "unspecified"


def class_color(object_class: int, alpha: float) -> Color:
    r, g, b = CLASS_COLORS.get(object_class, UNKNOWN_COLOR)
    return Color(r=r, g=g, b=b, a=alpha)


def timestamp(ns: int) -> Timestamp:
    """A protobuf Timestamp of integer nanoseconds since the epoch (negative: Skipped)."""
    ns = int(ns)
    if ns < 0:
        raise Skipped("bad_stamp", f"stamp {ns} ns is before the epoch")
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


def quaternion_from_matrix(R: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a rotation matrix, w >= 0 (Shepperd's method: divide by the largest of the
    four candidates, so it is accurate for every rotation)."""
    R = np.asarray(R, dtype=np.float64)
    tr = float(np.trace(R))
    d = [tr, R[0, 0], R[1, 1], R[2, 2]]
    k = int(np.argmax(d))
    if k == 0:
        s = 2.0 * math.sqrt(max(1.0 + tr, 0.0))
        q = (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s
    elif k == 1:
        s = 2.0 * math.sqrt(max(1.0 + R[0, 0] - R[1, 1] - R[2, 2], 0.0))
        q = 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s
    elif k == 2:
        s = 2.0 * math.sqrt(max(1.0 + R[1, 1] - R[0, 0] - R[2, 2], 0.0))
        q = (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s
    else:
        s = 2.0 * math.sqrt(max(1.0 + R[2, 2] - R[0, 0] - R[1, 1], 0.0))
        q = (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s
    v = np.asarray(q, dtype=np.float64)
    v /= np.linalg.norm(v)
    if v[3] < 0:
        v = -v
    return float(v[0]), float(v[1]), float(v[2]), float(v[3])


# ------------------------------------------------------------------------------------------ images

def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise Skipped("bad_camera_name", f"camera name {name[:80]!r} is not 1-64 of [A-Za-z0-9_.-]")
    return name


def frame_pixels(header: frame_pb2.FrameHeader, payload) -> np.ndarray:
    """The (H, W, C) uint8 view of a frame's pixel part, checked as the fusion node checks it
    (encoding, size, row_stride, payload length); Skipped(reason) otherwise."""
    from perception.transport import MalformedMessage, Received
    from perception.transport import frame_pixels as wire_pixels

    try:
        return wire_pixels(Received(topics.camera(header.camera_name), header,
                                    None if payload is None else memoryview(payload), 0))
    except MalformedMessage as e:
        raise Skipped(e.reason, e.detail) from None


def raw_image(header: frame_pb2.FrameHeader, payload) -> RawImage:
    """The frame as a Foxglove RawImage: the pixel part byte for byte (row padding included, in
    `step`), encoding bgr8/rgb8/mono8, frame_id the camera, stamped with the capture end."""
    name = _check_name(header.camera_name)
    frame_pixels(header, payload)                              # checks size and encoding
    channels = 1 if header.encoding == frame_pb2.PIXEL_ENCODING_MONO8 else 3
    return RawImage(timestamp=timestamp(header.capture_end_ns), frame_id=name, width=header.width,
                    height=header.height, encoding=_RAW_ENCODINGS[header.encoding],
                    step=header.row_stride or header.width * channels, data=bytes(payload))


def jpeg_image(header: frame_pb2.FrameHeader, payload, quality: int = 90) -> CompressedImage:
    """The frame as a Foxglove CompressedImage (JPEG of the given quality, 1-100, OpenCV's encoder)."""
    import cv2

    name = _check_name(header.camera_name)
    pixels = frame_pixels(header, payload)                     # (H, W, C) uint8
    if header.encoding == frame_pb2.PIXEL_ENCODING_RGB8:
        pixels = pixels[:, :, ::-1]                            # OpenCV encodes BGR
    img = np.ascontiguousarray(pixels if pixels.shape[2] == 3 else pixels[:, :, 0])
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(min(max(quality, 1), 100))])
    if not ok:
        raise Skipped("jpeg_failed", f"OpenCV could not encode frame {name} #{header.sequence}")
    return CompressedImage(timestamp=timestamp(header.capture_end_ns), frame_id=name, data=buf.tobytes(),
                           format="jpeg")


# ------------------------------------------------------------------------------- calibration, rig

def checked_calibration(cal: calibration_pb2.CameraCalibration) -> pconfig.CameraConfig:
    """The calibration as the fusion node would accept it (CameraConfig.from_proto), else Skipped."""
    _check_name(cal.camera_name)
    try:
        return pconfig.CameraConfig.from_proto(cal)
    except pconfig.CalibrationError as e:
        raise Skipped(e.reason, str(e)) from None


def camera_calibration(cal: calibration_pb2.CameraCalibration, stamp_ns: int) -> FoxCalibration:
    """Foxglove CameraCalibration of ours: K, distortion (OpenCV order: plumb_bob for 0/4/5
    coefficients, padded to 5; rational_polynomial for 8), R identity, P = [K | 0], frame_id the
    camera name (its optical frame)."""
    cam = checked_calibration(cal)
    K = np.asarray(cam.K, dtype=np.float64)                    # (3, 3) pixels
    d = list(cam.distortion)
    model = "rational_polynomial" if len(d) == 8 else "plumb_bob"
    if model == "plumb_bob":
        d = (d + [0.0] * 5)[:5]
    P = np.hstack([K, np.zeros((3, 1))])                       # (3, 4)
    return FoxCalibration(timestamp=timestamp(stamp_ns), frame_id=cam.name, width=cam.width, height=cam.height,
                          distortion_model=model, D=d, K=K.ravel().tolist(), R=np.eye(3).ravel().tolist(),
                          P=P.ravel().tolist())


def frame_transform(cal: calibration_pb2.CameraCalibration, stamp_ns: int) -> FrameTransform:
    """base_link -> camera: the camera's pose in the ego frame (T_ego_from_camera: translation =
    camera centre in metres, rotation = the optical frame's axes in the ego frame)."""
    cam = checked_calibration(cal)
    T = np.asarray(cam.T_ego_from_camera, dtype=np.float64)   # (4, 4)
    x, y, z, w = quaternion_from_matrix(T[:3, :3])
    return FrameTransform(timestamp=timestamp(stamp_ns), parent_frame_id=BASE_FRAME, child_frame_id=cam.name,
                          translation=Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                          rotation=Quaternion(x=x, y=y, z=z, w=w))


def rig_transforms(cals: list[calibration_pb2.CameraCalibration], stamp_ns: int) -> FrameTransforms:
    return FrameTransforms(transforms=[frame_transform(c, stamp_ns) for c in cals])


# ------------------------------------------------------------------------------------------- boxes

def _valid_object(o: detections_pb2.Object3D) -> bool:
    c, s = o.center, o.size
    values = (c.x, c.y, c.z, s.x, s.y, s.z, o.yaw)
    if not all(math.isfinite(v) for v in values):
        return False
    if max(abs(c.x), abs(c.y), abs(c.z)) > pconfig.MAX_TRANSLATION_M:
        return False
    return all(0.0 <= v <= MAX_BOX_SIDE_M for v in (s.x, s.y, s.z))


def scene_update(objects, stamp_ns: int, alpha: float, labels: bool = True) -> tuple[SceneUpdate, int]:
    """Boxes of Object3D in base_link as a SceneUpdate -> (update, objects left out as invalid).

    One entity per object (id = its index; metadata class, score, track id) holding a
    CubePrimitive (pose = centre and yaw about z, size = length/width/height, colour of its class)
    and, with `labels`, a TextPrimitive "class score" above it. The update first deletes every
    entity older than this stamp, so a drive shows exactly one message's boxes at a time."""
    if len(objects) > MAX_OBJECTS:
        raise Skipped("too_many_objects", f"{len(objects)} objects (at most {MAX_OBJECTS})")
    ts = timestamp(stamp_ns)
    update = SceneUpdate(deletions=[SceneEntityDeletion(timestamp=ts, type=SceneEntityDeletion.ALL)])
    bad = 0
    for i, o in enumerate(objects):
        if not _valid_object(o):
            bad += 1
            continue
        half = 0.5 * float(o.yaw)
        pose = Pose(position=Vector3(x=o.center.x, y=o.center.y, z=o.center.z),
                    orientation=Quaternion(x=0.0, y=0.0, z=math.sin(half), w=math.cos(half)))
        color = class_color(o.object_class, alpha)
        name = class_name(o.object_class)
        entity = SceneEntity(timestamp=ts, frame_id=BASE_FRAME, id=str(i), frame_locked=True,
                             metadata=[KeyValuePair(key="class", value=name),
                                       KeyValuePair(key="score", value=f"{o.score:.3f}"),
                                       KeyValuePair(key="track_id", value=str(o.track_id))],
                             cubes=[CubePrimitive(pose=pose, size=Vector3(x=o.size.x, y=o.size.y, z=o.size.z),
                                                  color=color)])
        if labels:
            above = Pose(position=Vector3(x=o.center.x, y=o.center.y, z=o.center.z + 0.5 * o.size.z + 0.3),
                         orientation=Quaternion(w=1.0))
            entity.texts.append(TextPrimitive(pose=above, billboard=True, font_size=14.0, scale_invariant=True,
                                              color=Color(r=color.r, g=color.g, b=color.b, a=1.0),
                                              text=f"{name} {o.score:.2f}"))
        update.entities.append(entity)
    return update, bad


def detections_scene(msg: detections_pb2.Detections) -> tuple[SceneUpdate, int]:
    return scene_update(msg.objects, msg.stamp_ns, DETECTION_ALPHA)


def truth_scene(msg: detections_pb2.GroundTruth) -> tuple[SceneUpdate, int]:
    """Ground truth boxes (no labels: the score of truth is always 1)."""
    return scene_update(msg.objects, msg.stamp_ns, TRUTH_ALPHA, labels=False)


# ------------------------------------------------------------------------------------ the channels

@dataclass
class FoxgloveConfig:
    images: str = "jpeg"            # jpeg: CompressedImage; raw: RawImage (every byte); none: no image channel
    jpeg_quality: int = 90          # 1-100
    transforms_every_s: float = 1.0  # the rig's FrameTransforms again after this much recording time (s)

    def __post_init__(self) -> None:
        if self.images not in IMAGE_FORMATS:
            raise ValueError(f"images must be one of {', '.join(IMAGE_FORMATS)}, got {self.images!r}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if not self.transforms_every_s > 0:
            raise ValueError(f"transforms_every_s must be positive, got {self.transforms_every_s}")


@dataclass
class Converted:
    topic: str
    msg: Message
    stamp_ns: int               # publish_time in the file


@dataclass
class FoxgloveChannels:
    """What one received message (topic, our message, pixel payload) adds on the Foxglove channels.

    A frame gives its image (unless `images=False` is passed: the recorder is behind) and, when its
    camera's calibration is known (carried by this frame or an earlier one with the same
    calibration_id), a CameraCalibration; a new or changed calibration, and then every
    `transforms_every_s` of frame time, gives the rig's FrameTransforms. Detections and sim/truth
    give SceneUpdates. Inputs that give nothing are counted in `skipped` by reason."""
    config: FoxgloveConfig = field(default_factory=FoxgloveConfig)
    skipped: dict[str, int] = field(default_factory=dict)
    calibrations: dict[str, calibration_pb2.CameraCalibration] = field(default_factory=dict)
    _tf_due_ns: int | None = None

    def _skip(self, reason: str, detail: str = "") -> None:
        n = self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if n == 1 or n % 1000 == 0:          # the first of each reason, then every 1000th
            log.warning("foxglove channels: skipped %s (%d so far) %s", reason, n, detail)

    def convert(self, topic: str, msg: Message, payload=None, *, images: bool = True) -> list[Converted]:
        name = msg.DESCRIPTOR.full_name
        try:
            if name == "perception.v1.FrameHeader":
                return self._frame(topic, msg, payload, images)  # type: ignore[arg-type]
            if name == "perception.v1.Detections":
                update, bad = detections_scene(msg)  # type: ignore[arg-type]
                out = [Converted(DETECTIONS_TOPIC, update, int(msg.stamp_ns))]  # type: ignore[attr-defined]
            elif name == "perception.v1.GroundTruth":
                update, bad = truth_scene(msg)  # type: ignore[arg-type]
                out = [Converted(TRUTH_TOPIC, update, int(msg.stamp_ns))]  # type: ignore[attr-defined]
            else:
                return []                       # status: nothing Foxglove draws
        except Skipped as e:
            self._skip(e.reason, str(e))
            return []
        for _ in range(bad):
            self._skip("bad_object", f"in {topic}")
        return out

    def _frame(self, topic: str, h: frame_pb2.FrameHeader, payload, images: bool) -> list[Converted]:
        camera = _check_name(h.camera_name)
        if topic != topics.camera(camera):
            raise Skipped("camera_mismatch", f"frame of {camera!r} on topic {topic!r}")
        stamp = int(h.capture_end_ns)
        out: list[Converted] = []
        if not images:
            self._skip("backlog", "(the recorder is behind: image left out, the frame itself is recorded)")
        elif self.config.images != "none":
            img = jpeg_image(h, payload, self.config.jpeg_quality) if self.config.images == "jpeg" else raw_image(h, payload)
            out.append(Converted(image_topic(camera), img, stamp))
        if h.HasField("calibration"):
            try:
                checked_calibration(h.calibration)
                if h.calibration.camera_name != camera:
                    raise Skipped("calibration_camera", f"frame of {camera!r} carries {h.calibration.camera_name!r}'s")
                known = self.calibrations.get(camera)
                if known is None or known != h.calibration:
                    self.calibrations[camera] = h.calibration
                    self._tf_due_ns = None                    # a new or changed camera: the rig again now
            except Skipped as e:
                self._skip(e.reason, str(e))
        cal = self.calibrations.get(camera)
        if cal is None or cal.calibration_id != h.calibration_id:
            self._skip("no_calibration", f"(camera {camera!r}: no calibration with id {h.calibration_id!r} yet)")
        elif (cal.width, cal.height) != (h.width, h.height):
            self._skip("calibration_size", f"(camera {camera!r}: calibration {cal.width}x{cal.height}, frame {h.width}x{h.height})")
        else:
            out.append(Converted(calibration_topic(camera), camera_calibration(cal, stamp), stamp))
        if self.calibrations and (self._tf_due_ns is None or stamp >= self._tf_due_ns):
            cals = [self.calibrations[c] for c in sorted(self.calibrations)]
            out.append(Converted(TF_TOPIC, rig_transforms(cals, stamp), stamp))
            self._tf_due_ns = stamp + int(self.config.transforms_every_s * 1e9)
        return out
