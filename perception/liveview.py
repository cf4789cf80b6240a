"""The live view (`perception view`, docs/live_view.md): what a running pipeline or replay sees,
drawn in the Rerun viewer while it runs.

One subscriber process beside the pipeline: the six camera images (downscaled) with the
detections' 3D boxes projected into them, a bird's-eye 3D panel with detections and ground truth
(`sim/truth`) as boxes coloured by class, and scalars (latency, rates, drops). This module holds
the conversions (validated messages -> what is logged) and the receive loop; the viewer, its
sinks and the command line are in perception/commands/view.py.

It must never slow or break the pipeline: it subscribes with receive queues of depth 1 (the
newest message per topic replaces older ones, counted by the transport as superseded), draws at
most `image_hz` images per camera (the rest are counted as skipped), and every message is
checked before use; a bad one is counted by reason and logged at a limited rate, never fatal.

Time: everything is logged on the `capture` timeline at the message's own stamp (frames: capture
end; detections and truth: stamp_ns), so scrubbing back shows each image with the boxes of the
same instant, and a replay's recorded stamps keep their own time axis.
"""
from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from perception import config as pconfig
from perception import geometry, topics
from perception.boxes import CLASSES, MIN_VISIBLE_PX, class_name
from perception.sim.mosaic import CLASS_COLORS as _MOSAIC_BGR
from perception.sim.mosaic import _grid_order

log = logging.getLogger("perception.view")

# RGB per class name: the colours of `perception render`'s pictures (perception/sim/mosaic.py keeps them as BGR).
CLASS_RGB: dict[str, tuple[int, int, int]] = {CLASSES[k]: (int(r), int(g), int(b)) for k, (b, g, r) in _MOSAIC_BGR.items()}
UNKNOWN_RGB = (200, 200, 200)
TRUTH_ALPHA = 90                    # ground truth is drawn filled and translucent under the detection wireframes
HIDDEN_TRUTH_ALPHA = 30             # truth below MIN_VISIBLE_PX: no camera could see it
TRUTH_IN_CAMERA_RGBA = (255, 255, 255, 110)
EGO_RGBA = (220, 220, 220, 255)
EGO_BOX = ((1.4, 0.0, 0.8), (4.6, 1.9, 1.6))    # centre, size (m) of the ego car, as perception/viz.py draws it

# Input limits: anything outside is refused (counted) before it is used or allocated.
MAX_BOX_SIDE_M = 50.0
MAX_CENTER_M = 1000.0
MAX_SPEED_MPS = 100.0
NEAR_PLANE_M = 0.1                  # box edges are clipped here before projection
_CAMERA_NAME = re.compile(r"^[A-Za-z0-9_\-]{1,64}$")   # becomes part of an entity path
_LOG_EVERY_S = 5.0
_EDGES = np.array([(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)])
TIMELINE = "capture"


@dataclass
class ViewConfig:
    rig: str = str(pconfig.DEFAULT_RIG)  # fallback calibration and the layout; frames' own calibrations win
    image_width: int = 160               # camera images are downscaled to this width (px) before logging
    image_hz: float = 5.0                # at most this many images (and truth projections) per camera per second
    max_objects: int = 256               # objects of one message beyond this are not drawn (counted)
    max_cameras: int = 16                # camera topics beyond this are refused (a bound on entities and state)
    metrics_period_s: float = 1.0        # rates and counters are logged this often

    def validate(self) -> None:
        if not 16 <= self.image_width <= 4096:
            raise pconfig.ConfigError(f"image_width {self.image_width} is not in [16, 4096]")
        if not (np.isfinite(self.image_hz) and 0 < self.image_hz <= 120):
            raise pconfig.ConfigError(f"image_hz {self.image_hz} is not in (0, 120]")
        if self.max_objects < 1 or self.max_cameras < 1 or not self.metrics_period_s > 0:
            raise pconfig.ConfigError("max_objects and max_cameras must be >= 1, metrics_period_s > 0")


class BadMessage(ValueError):
    """A message the view cannot use; `reason` is the counter key."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# ------------------------------------------------------------------------------------ conversions

def class_color(name: str | None) -> tuple[int, int, int]:
    return CLASS_RGB.get(name or "", UNKNOWN_RGB)


@dataclass
class Boxes:
    """Validated boxes in the ego frame (metres, radians), N of them."""
    centers: np.ndarray        # (N, 3)
    sizes: np.ndarray          # (N, 3) length, width, height
    yaws: np.ndarray           # (N,)
    velocities: np.ndarray     # (N, 2)
    scores: np.ndarray         # (N,)
    visible: np.ndarray        # (N,) visible pixels (truth), 0 when unknown
    classes: list[str]         # class names (CLASSES)

    def __len__(self) -> int:
        return len(self.classes)

    def colors(self, alpha: int | np.ndarray | None = None) -> np.ndarray:
        """(N, 3) uint8 RGB by class, or (N, 4) RGBA with `alpha`."""
        rgb = np.array([class_color(c) for c in self.classes], np.uint8).reshape(-1, 3)
        if alpha is None:
            return rgb
        a = np.broadcast_to(np.asarray(alpha, np.uint8), (len(rgb),))
        return np.concatenate([rgb, a[:, None]], axis=1)


def boxes_from_objects(objects: Iterable, max_objects: int) -> tuple[Boxes, dict[str, int]]:
    """Object3D messages -> Boxes, and {reason: count} of the objects refused: a class the contract
    does not name, non-finite values, a side not in (0, MAX_BOX_SIDE_M], a centre farther than
    MAX_CENTER_M, a speed over MAX_SPEED_MPS, or more than max_objects."""
    rejected: dict[str, int] = {}
    rows: list[tuple] = []
    names: list[str] = []
    for o in objects:
        if len(rows) >= max_objects:
            rejected["object_over_limit"] = rejected.get("object_over_limit", 0) + 1
            continue
        name = class_name(o.object_class)
        values = (o.center.x, o.center.y, o.center.z, o.size.x, o.size.y, o.size.z, o.yaw, o.velocity.x, o.velocity.y, o.score)
        reason = None
        if name is None or name not in CLASSES:
            reason = "object_class"
        elif not all(np.isfinite(values)):
            reason = "object_nonfinite"
        elif not all(0 < s <= MAX_BOX_SIDE_M for s in values[3:6]):
            reason = "object_size"
        elif max(abs(values[0]), abs(values[1]), abs(values[2])) > MAX_CENTER_M:
            reason = "object_range"
        elif np.hypot(values[7], values[8]) > MAX_SPEED_MPS:
            reason = "object_speed"
        if reason is not None:
            rejected[reason] = rejected.get(reason, 0) + 1
            continue
        rows.append(values + (o.visible_pixels,))
        names.append(name)  # type: ignore[arg-type]   # checked above
    a = np.array(rows, np.float64).reshape(-1, 11)
    return Boxes(centers=a[:, 0:3], sizes=a[:, 3:6], yaws=a[:, 6], velocities=a[:, 7:9], scores=a[:, 9],
                 visible=a[:, 10].astype(np.int64), classes=names), rejected


def yaw_quaternions(yaws: np.ndarray) -> np.ndarray:
    """(N, 4) quaternions (x, y, z, w) of rotations by `yaws` about +z."""
    half = np.asarray(yaws, np.float64) / 2
    return np.stack([np.zeros_like(half), np.zeros_like(half), np.sin(half), np.cos(half)], axis=1)


def clip_segments(segments: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Liang-Barsky clip of 2D segments (M, 2, 2) to the rectangle [0, width] x [0, height].
    Returns the clipped segments (K, 2, 2) and the indices (K,) of the input segments they came from."""
    p0, d = segments[:, 0], segments[:, 1] - segments[:, 0]
    t0, t1 = np.zeros(len(segments)), np.ones(len(segments))
    keep = np.ones(len(segments), bool)
    for p, q in ((-d[:, 0], p0[:, 0]), (d[:, 0], width - p0[:, 0]), (-d[:, 1], p0[:, 1]), (d[:, 1], height - p0[:, 1])):
        parallel = p == 0
        keep &= ~(parallel & (q < 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(parallel, 0.0, q / np.where(parallel, 1.0, p))
        t0 = np.where(~parallel & (p < 0), np.maximum(t0, r), t0)
        t1 = np.where(~parallel & (p > 0), np.minimum(t1, r), t1)
    keep &= t0 <= t1
    idx = np.flatnonzero(keep)
    out = np.stack([p0[idx] + t0[idx, None] * d[idx], p0[idx] + t1[idx, None] * d[idx]], axis=1)
    return out, idx


def project_boxes(boxes: Boxes, camera: pconfig.CameraConfig, near: float = NEAR_PLANE_M) -> tuple[np.ndarray, np.ndarray]:
    """The 12 edges of each box projected into `camera` (a CameraConfig of the drawn image's size):
    edges are clipped at the near plane in 3D, then to the image in 2D. Returns segments (M, 2, 2)
    in Rerun image coordinates (pixel i spans [i, i+1], i.e. OpenCV's u + 0.5) and the box index of
    each segment (M,)."""
    if len(boxes) == 0:
        return np.zeros((0, 2, 2)), np.zeros(0, np.int64)
    corners = np.stack([geometry.box_corners(c, s, y) for c, s, y in zip(boxes.centers, boxes.sizes, boxes.yaws)])  # (N, 8, 3)
    T = geometry.invert_transform(camera.T_ego_from_camera)
    P = geometry.transform_points(T, corners)                                  # (N, 8, 3) camera frame
    a, b = P[:, _EDGES[:, 0]].reshape(-1, 3), P[:, _EDGES[:, 1]].reshape(-1, 3)  # (N*12, 3)
    owner = np.repeat(np.arange(len(boxes)), len(_EDGES))
    front = (a[:, 2] >= near) | (b[:, 2] >= near)
    a, b, owner = a[front], b[front], owner[front]
    # move the endpoint behind the near plane onto it
    for p, q in ((a, b), (b, a)):
        behind = p[:, 2] < near
        t = (near - p[behind, 2]) / (q[behind, 2] - p[behind, 2])
        p[behind] = p[behind] + t[:, None] * (q[behind] - p[behind])
    K = np.asarray(camera.K, np.float64)
    uv = np.stack([a, b], axis=1) @ K.T                                      # (M, 2, 3)
    seg = uv[..., :2] / uv[..., 2:3] + 0.5
    seg, idx = clip_segments(seg, camera.width, camera.height)
    return seg, owner[idx]


def display_size(size: tuple[int, int], width: int) -> tuple[int, int]:
    """(width, height) of the drawn image of an image of `size` (width, height): `width` across
    (never upscaled), same aspect."""
    w = min(width, size[0])
    return w, max(1, round(size[1] * w / size[0]))


def downscale(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8 -> (h, w, C) for size (w, h), area-averaged."""
    import cv2

    if (pixels.shape[1], pixels.shape[0]) == size:
        return pixels
    out = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
    return out if out.ndim == 3 else out[:, :, None]


def _color_models() -> dict[int, Literal["BGR", "RGB", "L"]]:
    from perception.v1 import frame_pb2

    return {frame_pb2.PIXEL_ENCODING_BGR8: "BGR", frame_pb2.PIXEL_ENCODING_RGB8: "RGB", frame_pb2.PIXEL_ENCODING_MONO8: "L"}


_COLOR_MODEL = _color_models()


def grid_order(rig: pconfig.RigConfig) -> list[str]:
    """Camera names in the 2x3 order `perception render` uses (front row, then back row)."""
    return [rig.cameras[i].name for i in _grid_order(rig)]


# ------------------------------------------------------------------------------------ the view

@dataclass
class ViewCounters:
    received: dict[str, int] = field(default_factory=dict)     # messages handled, per topic
    images: int = 0                 # images drawn
    skipped: int = 0                # frames not drawn: over image_hz (newest-only keeps going)
    detections: int = 0             # Detections messages drawn
    truth: int = 0                  # GroundTruth messages drawn
    rejected: dict[str, int] = field(default_factory=dict)     # messages or objects refused, per reason

    def reject(self, reason: str, n: int = 1) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + n


class LiveView:
    """Turns received messages into Rerun log calls on `rec` (a rerun.RecordingStream).

    handle(rx) takes one transport.Received and never raises for bad input: it is counted in
    counters.rejected (by reason) and logged at a limited rate. run(sub) is the receive loop."""

    def __init__(self, rig: pconfig.RigConfig, rec: Any, config: ViewConfig | None = None):
        import rerun as rr

        self.rr = rr
        self.rec = rec
        self.rig = rig
        self.config = config or ViewConfig()
        self.config.validate()
        self.counters = ViewCounters()
        # calibration id -> CameraConfig: the rig's, then every valid one a frame carried (bounded)
        self._calibrations: dict[str, pconfig.CameraConfig] = {c.calibration_id: c for c in rig.cameras}
        # camera name -> the calibration of its newest frame (None: unknown id, boxes are not projected)
        self.active: dict[str, pconfig.CameraConfig | None] = {c.name: c for c in rig.cameras}
        self._last_image_ns: dict[str, int] = {}
        self._last_truth_ns = 0
        self._last_stamp_ns = 0
        self._last_log: dict[str, float] = {}
        self._window = {"detections": 0, "images": 0}
        self._window_start = time.monotonic()

    # ---- static content and layout

    def setup(self) -> None:
        """Log what does not change (axes, ego car, range rings, camera frusta)."""
        rr, rec = self.rr, self.rec
        rec.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
        c, s = EGO_BOX
        rec.log("world/ego", rr.Boxes3D(centers=[c], half_sizes=[np.array(s) / 2], colors=[EGO_RGBA], fill_mode="solid",
                                        labels=["ego"], show_labels=False), static=True)
        circle = np.linspace(0, 2 * np.pi, 73)
        rings = [np.stack([r * np.cos(circle), r * np.sin(circle), np.zeros_like(circle)], 1) for r in (10, 20, 30)]
        rec.log("world/rings", rr.LineStrips3D(rings, colors=[(90, 90, 90)], radii=rr.Radius.ui_points(0.5)), static=True)
        for cam in self.rig.cameras:
            self._log_frustum(cam)

    def _log_frustum(self, cam: pconfig.CameraConfig) -> None:
        rr = self.rr
        T = cam.T_ego_from_camera
        path = f"world/cameras/{cam.name}"
        self.rec.log(path, rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]), static=True)
        self.rec.log(path, rr.Pinhole(image_from_camera=cam.K, resolution=[cam.width, cam.height],
                                      camera_xyz=rr.ViewCoordinates.RDF, image_plane_distance=1.5), static=True)

    def blueprint(self):
        """The layout a person sees first: the cameras in a 2x3 grid like the car, the BEV beside
        them, the scalars below."""
        import rerun.blueprint as rrb

        views = []
        for name in grid_order(self.rig):
            w, h = display_size((self.rig.camera(name).width, self.rig.camera(name).height), self.config.image_width)
            views.append(rrb.Spatial2DView(origin=f"cameras/{name}", name=name,
                                           visual_bounds=rrb.VisualBounds2D(x_range=[0, w], y_range=[0, h])))
        bev = rrb.Spatial3DView(origin="world", name="BEV (detections: wireframe, truth: filled)",
                                eye_controls=rrb.EyeControls3D(position=(0.0, 0.0, 75.0), look_target=(0.0, 0.0, 0.0),
                                                               eye_up=(1.0, 0.0, 0.0)))
        plots = rrb.Horizontal(rrb.TimeSeriesView(origin="metrics/latency_ms", name="latency (ms)"),
                               rrb.TimeSeriesView(origin="metrics/rate_hz", name="rates (Hz)"),
                               rrb.TimeSeriesView(origin="metrics", contents=["metrics/drops/**", "metrics/objects/**",
                                                                              "metrics/online_score"],
                                                  name="drops (cumulative), objects, online mAP"))
        return rrb.Blueprint(rrb.Horizontal(rrb.Vertical(rrb.Grid(*views, grid_columns=3), plots, row_shares=[3, 2]),
                                            bev, column_shares=[3, 2]),
                             collapse_panels=True)

    # ---- messages

    def handle(self, rx) -> bool:
        """Draw one received message; False when it was refused (counted and logged)."""
        from perception.config import CalibrationError
        from perception.transport import MalformedMessage, type_name

        topic = rx.topic
        self.counters.received[topic] = self.counters.received.get(topic, 0) + 1
        try:
            expected = topics.message_type(topic)
            if expected is None or expected != type_name(rx.msg):
                raise BadMessage("wrong_type", f"{topic!r} carries {type_name(rx.msg)}, expected {expected}")
            if topic.startswith(topics.CAMERA_PREFIX):
                self.on_frame(rx)
            elif topic == topics.DETECTIONS:
                self.on_detections(rx.msg, rx.recv_ns)
            elif topic == topics.TRUTH:
                self.on_truth(rx.msg, rx.recv_ns)
            elif topic.startswith("status/"):
                self.on_status(rx.msg)
            return True
        except (BadMessage, MalformedMessage, CalibrationError) as e:
            self._refuse(getattr(e, "reason", type(e).__name__), f"{topic}: {e}")
        except Exception as e:     # a view must never take the process down; say what broke, at a limited rate
            self._refuse(f"error_{type(e).__name__}", f"{topic}: {e!r}", exc_info=True)
        return False

    def _refuse(self, reason: str, detail: str, n: int = 1, exc_info: bool = False) -> None:
        self.counters.reject(reason, n)
        now = time.monotonic()
        if now - self._last_log.get(reason, -_LOG_EVERY_S) >= _LOG_EVERY_S:
            self._last_log[reason] = now
            log.warning("not drawn (%d so far with reason %s): %s", self.counters.rejected[reason], reason, detail,
                        exc_info=exc_info)

    def _stamp(self, stamp_ns: int) -> None:
        if not 0 < stamp_ns < (1 << 62):
            raise BadMessage("bad_stamp", f"stamp {stamp_ns} ns")
        self._last_stamp_ns = max(self._last_stamp_ns, stamp_ns)
        self.rec.set_time(TIMELINE, timestamp=np.datetime64(int(stamp_ns), "ns"))

    def _camera_of_frame(self, rx) -> tuple[str, pconfig.CameraConfig | None]:
        """The frame's camera name (checked) and its calibration (None when its id is unknown)."""
        h = rx.msg
        name = h.camera_name
        if rx.topic != topics.camera(name) or not _CAMERA_NAME.match(name):
            raise BadMessage("camera_name", f"frame of camera {name[:64]!r} on topic {rx.topic[:80]!r}")
        if name not in self.active and len(self.active) >= self.config.max_cameras:
            raise BadMessage("too_many_cameras", f"{name!r}: already {len(self.active)} cameras")
        if h.HasField("calibration"):
            carried = pconfig.CameraConfig.from_proto(h.calibration)
            if carried.name != name or (carried.width, carried.height) != (h.width, h.height):
                raise BadMessage("calibration_mismatch", f"frame {name!r} {h.width}x{h.height} carries the calibration of "
                                 f"{carried.name!r} {carried.width}x{carried.height}")
            if carried.calibration_id not in self._calibrations:
                if len(self._calibrations) >= 4 * self.config.max_cameras:
                    self._calibrations.pop(next(iter(self._calibrations)))
                self._calibrations[carried.calibration_id] = carried
                if name not in self.rig.camera_names:
                    self._log_frustum(carried)
        cam: pconfig.CameraConfig | None = self._calibrations.get(h.calibration_id)
        if cam is not None and (cam.name != name or (cam.width, cam.height) != (h.width, h.height)):
            raise BadMessage("calibration_mismatch", f"frame {name!r} {h.width}x{h.height}: calibration "
                             f"{h.calibration_id!r} is of {cam.name!r} {cam.width}x{cam.height}")
        self.active[name] = cam
        return name, cam

    def on_frame(self, rx) -> None:
        """A camera frame: downscaled, logged at its capture time (at most image_hz per camera)."""
        from perception.transport import frame_pixels

        pixels = frame_pixels(rx)            # checks size, stride and encoding against the payload
        name, cam = self._camera_of_frame(rx)
        last = self._last_image_ns.get(name)
        if last is not None and 0 <= rx.recv_ns - last < 1e9 / self.config.image_hz:
            self.counters.skipped += 1
            return
        self._last_image_ns[name] = rx.recv_ns
        size = display_size((pixels.shape[1], pixels.shape[0]), self.config.image_width)   # == the calibration's size
        image = downscale(pixels, size)
        self._stamp(rx.msg.capture_end_ns)
        self.rec.log(f"cameras/{name}/image", self.rr.Image(image, color_model=_COLOR_MODEL[rx.msg.encoding]))
        self.counters.images += 1
        self._window["images"] += 1

    def _project_into_cameras(self, boxes: Boxes, entity: str, colors: np.ndarray | None = None) -> None:
        """Log the boxes' edges into every camera whose calibration is known (class colours, or
        one colour per box given in `colors`)."""
        for name, cam in self.active.items():
            if cam is None:
                continue
            w, h = display_size((cam.width, cam.height), self.config.image_width)
            seg, owner = project_boxes(boxes, cam.resized(w, h))
            rgb = (boxes.colors() if colors is None else colors)[owner]
            self.rec.log(f"cameras/{name}/{entity}", self.rr.LineStrips2D(seg, colors=rgb, radii=self.rr.Radius.ui_points(1.0)))

    def on_detections(self, msg, recv_ns: int) -> None:
        """Detections: wireframe boxes with class and score in the BEV, their edges in every camera,
        latency and object count as scalars."""
        rr = self.rr
        boxes, refused = boxes_from_objects(msg.objects, self.config.max_objects)
        for reason, n in refused.items():
            self._refuse(reason, f"detections #{msg.sequence}: {n} objects not drawn", n)
        self._stamp(msg.stamp_ns)
        rec = self.rec
        rec.log("world/detections", rr.Boxes3D(
            centers=boxes.centers, half_sizes=boxes.sizes / 2, quaternions=yaw_quaternions(boxes.yaws), colors=boxes.colors(),
            labels=[f"{c} {s:.2f}" for c, s in zip(boxes.classes, boxes.scores)], fill_mode="majorwireframe",
            radii=rr.Radius.ui_points(1.5)))
        moving = np.hypot(boxes.velocities[:, 0], boxes.velocities[:, 1]) > 0.3
        rec.log("world/detections/velocity", rr.Arrows3D(
            origins=boxes.centers[moving], vectors=np.concatenate([boxes.velocities[moving], np.zeros((int(moving.sum()), 1))], 1),
            colors=boxes.colors()[moving]))
        self._project_into_cameras(boxes, "detections")
        rec.log("metrics/objects/detections", rr.Scalars(float(len(boxes))))
        latency_ms = (recv_ns - msg.stamp_ns) / 1e6
        if 0 <= latency_ms < 60_000:         # a replay of an old recording has no meaningful latency
            rec.log("metrics/latency_ms/capture_to_view", rr.Scalars(latency_ms))
        ages = [f.age_ms for f in msg.frames if np.isfinite(f.age_ms) and 0 <= f.age_ms < 60_000]
        if ages:
            rec.log("metrics/latency_ms/capture_to_publish", rr.Scalars(max(ages)))
        self.counters.detections += 1
        self._window["detections"] += 1

    def on_truth(self, msg, recv_ns: int) -> None:
        """Ground truth: filled translucent boxes in the BEV (fainter when no camera sees the object),
        thin white edges in the cameras (at most image_hz)."""
        if self._last_truth_ns and 0 <= recv_ns - self._last_truth_ns < 1e9 / self.config.image_hz:
            self.counters.skipped += 1
            return
        self._last_truth_ns = recv_ns
        rr = self.rr
        boxes, refused = boxes_from_objects(msg.objects, self.config.max_objects)
        for reason, n in refused.items():
            self._refuse(reason, f"ground truth at {msg.stamp_ns}: {n} objects not drawn", n)
        self._stamp(msg.stamp_ns)
        alpha = np.where(boxes.visible >= MIN_VISIBLE_PX, TRUTH_ALPHA, HIDDEN_TRUTH_ALPHA)
        self.rec.log("world/truth", rr.Boxes3D(centers=boxes.centers, half_sizes=boxes.sizes / 2,
                                               quaternions=yaw_quaternions(boxes.yaws), colors=boxes.colors(alpha),
                                               fill_mode="solid"))
        seen = np.flatnonzero(boxes.visible >= MIN_VISIBLE_PX)
        visible = Boxes(boxes.centers[seen], boxes.sizes[seen], boxes.yaws[seen], boxes.velocities[seen], boxes.scores[seen],
                        boxes.visible[seen], [boxes.classes[i] for i in seen])
        self._project_into_cameras(visible, "truth", np.tile(np.array(TRUTH_IN_CAMERA_RGBA, np.uint8), (len(visible), 1)))
        self.rec.log("metrics/objects/truth_visible", rr.Scalars(float(len(visible))))
        self.counters.truth += 1

    def on_status(self, msg) -> None:
        """The fusion node's status: its own latency percentiles, overload drops and online score."""
        rr = self.rr
        if msg.stamp_ns <= 0:
            raise BadMessage("bad_stamp", f"status stamp {msg.stamp_ns}")
        # on the data's time axis (a replay's stamps are old), the node's own clock until data came
        self.rec.set_time(TIMELINE, timestamp=np.datetime64(self._last_stamp_ns or int(msg.stamp_ns), "ns"))
        for path, value in (("metrics/latency_ms/node_p50", msg.latency_ms_p50), ("metrics/latency_ms/node_p99", msg.latency_ms_p99),
                            ("metrics/rate_hz/node_output", msg.output_rate_hz)):
            if np.isfinite(value) and 0 <= value < 1e6:
                self.rec.log(path, rr.Scalars(float(value)))
        self.rec.log("metrics/drops/node_sets_dropped_overload", rr.Scalars(float(msg.sets_dropped_overload)))
        if msg.online_score_name and np.isfinite(msg.online_score):
            self.rec.log("metrics/online_score", rr.Scalars(float(msg.online_score)))

    # ---- periodic scalars and the loop

    def log_metrics(self, sub=None) -> None:
        """Rates over the last period and the view's own drop counters (transport superseded +
        skipped; refused), at the newest stamp seen."""
        if self._last_stamp_ns == 0:
            return
        rr = self.rr
        now = time.monotonic()
        period = max(now - self._window_start, 1e-3)
        self._window_start = now
        self.rec.set_time(TIMELINE, timestamp=np.datetime64(self._last_stamp_ns, "ns"))
        for key, n in self._window.items():
            self.rec.log(f"metrics/rate_hz/view_{key}", rr.Scalars(n / period))
            self._window[key] = 0
        superseded = sum(s.superseded for s in sub.stats.values()) if sub is not None else 0
        malformed = sum(sub.malformed.values()) if sub is not None else 0
        self.rec.log("metrics/drops/view_dropped", rr.Scalars(float(superseded + self.counters.skipped)))
        self.rec.log("metrics/drops/view_refused", rr.Scalars(float(malformed + sum(self.counters.rejected.values()))))

    def run(self, sub, *, duration_s: float | None = None, should_stop: Callable[[], bool] | None = None) -> None:
        """Draw the newest message of each topic as it comes (Subscriber.drain_latest) until
        duration_s passed or should_stop() is true; scalars every metrics_period_s."""
        end = None if duration_s is None else time.monotonic() + duration_s
        next_metrics = time.monotonic() + self.config.metrics_period_s
        while not (should_stop is not None and should_stop()) and (end is None or time.monotonic() < end):
            for rx in sub.drain_latest(timeout_ms=100):
                self.handle(rx)
            if time.monotonic() >= next_metrics:
                self.log_metrics(sub)
                next_metrics = time.monotonic() + self.config.metrics_period_s

    def summary(self, sub=None) -> str:
        c = self.counters
        superseded = sum(s.superseded for s in sub.stats.values()) if sub is not None else 0
        malformed = dict(sub.malformed) if sub is not None else {}
        return (f"drawn: {c.images} images, {c.detections} detections, {c.truth} truth; dropped: {superseded} superseded "
                f"(newest only), {c.skipped} over the draw rate; refused: {dict(c.rejected) or 0}; malformed on the wire: "
                f"{malformed or 0}; received {sum(c.received.values())} messages")


# ------------------------------------------------------------------------------------ subscription

def view_topics(rig_path, endpoints: list[str] | None) -> tuple[list[str], list[str]]:
    """(endpoints, topics) the view subscribes to: every camera of the rig, sim/truth, detections and
    status/fusion at the default launch's endpoints; with `endpoints`, every camera ("camera/*"),
    sim/truth, detections and status/* on those."""
    if endpoints:
        return list(dict.fromkeys(endpoints)), [f"{topics.CAMERA_PREFIX}*", topics.TRUTH, topics.DETECTIONS, "status/*"]
    rig = pconfig.load_rig(rig_path)
    wanted = [topics.camera(n) for n in rig.camera_names] + [topics.TRUTH, topics.DETECTIONS, topics.FUSION_STATUS]
    eps = [ep for t in wanted for ep in topics.resolve_endpoints(t, None, rig_path)]
    return list(dict.fromkeys(eps)), wanted


# ------------------------------------------------------------------------------------ launch --view

VIEW_PROCESS = "view"
VIEW_NICE = 15          # below the simulated cameras (10): the view gets what the pipeline leaves


def view_process(launch, extra_args: Iterable[str] = ()):
    """The ProcessSpec of `perception view` for a launch: it subscribes to every endpoint the launch
    file names (heartbeats and the monitor), joins with the launch's keys, runs at nice VIEW_NICE,
    has no heartbeat and is optional (giving up on it leaves the pipeline running)."""
    from perception.launch import ProcessSpec

    endpoints = [p.heartbeat.endpoint for p in launch.processes if p.heartbeat is not None]
    endpoints += [launch.monitor] if launch.monitor else []
    args = [VIEW_PROCESS]
    for ep in dict.fromkeys(endpoints):
        args += ["-e", ep]
    if launch.keys:
        args += ["--keys", launch.keys]
    args += list(extra_args)
    return ProcessSpec(name=VIEW_PROCESS, command=[sys.executable, "-m", "perception.cli", *args], nice=VIEW_NICE,
                       heartbeat=None, required=False)


def with_view(launch, extra_args: Iterable[str] = ()):
    """The launch config with the view process added at the end of its process list."""
    if any(p.name == VIEW_PROCESS for p in launch.processes):
        raise pconfig.ConfigError(f"launch file {launch.name!r} already has a process named {VIEW_PROCESS!r}")
    return replace(launch, processes=[*launch.processes, view_process(launch, extra_args)])


def web_url(web_port: int, grpc_port: int, host: str = "127.0.0.1") -> str:
    """The web viewer's address, connected to the view's gRPC server."""
    from urllib.parse import quote

    return f"http://{host}:{web_port}/?url=" + quote(f"rerun+http://{host}:{grpc_port}/proxy", safe="")

