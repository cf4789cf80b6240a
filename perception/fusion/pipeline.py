"""One fusion step without sockets: frame set -> model inputs -> engine -> Detections.

The node (node.py) wraps this with ZeroMQ; replay, tests and the benchmark call it directly,
so what runs live is exactly what is tested and replayed.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from perception.boxes import check_model_classes, objects_from_outputs
from perception.config import CameraConfig, RigConfig
from perception.fusion.sync import FrameSet
from perception.fusion.tracker import Tracker
from perception.inputs import camera_inputs, resize_into
from perception.runtime.base import Engine
from perception.v1 import detections_pb2, frame_pb2

log = logging.getLogger(__name__)


class FrameRejected(ValueError):
    """A frame that cannot be used; `reason` is the counter it goes to."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def to_bgr(pixels: np.ndarray, encoding: int) -> np.ndarray:
    """(H, W, C) uint8 pixels of a frame in `encoding` -> (H, W, 3) BGR, the model's input order.
    BGR8 is returned as is (no copy); RGB8 gets its channels swapped and MONO8 replicated into
    three channels (copies). FrameRejected("bad_encoding") for anything else."""
    channels = pixels.shape[2] if pixels.ndim == 3 else 0
    if encoding == frame_pb2.PIXEL_ENCODING_BGR8 and channels == 3:
        return pixels
    if encoding == frame_pb2.PIXEL_ENCODING_RGB8 and channels == 3:
        return np.ascontiguousarray(pixels[:, :, ::-1])
    if encoding == frame_pb2.PIXEL_ENCODING_MONO8 and channels == 1:
        return np.repeat(pixels, 3, axis=2)
    raise FrameRejected("bad_encoding", f"encoding {encoding} with {channels} channels cannot be converted to BGR")


@dataclass
class CameraFrame:
    """What the pipeline needs of one received frame (pixels may be a zero-copy view)."""
    camera: str
    sequence: int
    stamp_ns: int
    pixels: np.ndarray            # (H, W, 3) uint8 BGR
    source_ns: int | None = None  # FrameHeader.source_time_ns: capture time in the source's clock (None: stamp_ns)

    @classmethod
    def from_header(cls, camera: str, header, stamp_ns: int, pixels: np.ndarray) -> CameraFrame:
        """The frame of a validated FrameHeader (its source time kept when the sender set one)."""
        source = header.source_time_ns if header.HasField("source_time_ns") else None
        return cls(camera, header.sequence, stamp_ns, pixels, source)


def source_stamp(frameset: FrameSet) -> int:
    """The set's stamp in its source's clock. Frames restamped onto the wall clock (the replay
    player, client sessions) carry their source time; velocity must be measured in it, or a
    lock-step run slower than real time would shrink every speed."""
    src = [f.data.source_ns for f in frameset.frames.values()]
    return max(src) if src and all(s is not None for s in src) else frameset.stamp_ns  # type: ignore[type-var]


class Preprocessor:
    """Resizes frames into a preallocated batch and keeps the geometry inputs per camera, through
    the model-input contract (perception/inputs.py) that training uses too.

    Calibration is an input: the rig file gives the starting calibration, and a frame that
    carries a new calibration for its camera replaces it (update_calibration)."""

    def __init__(self, rig: RigConfig, width: int, height: int):
        self.rig, self.width, self.height = rig, width, height
        n = len(rig.cameras)
        self.images = np.zeros((1, n, height, width, 3), np.uint8)
        self.intrinsics_inv = np.zeros((1, n, 3, 3), np.float32)
        self.ego_from_camera = np.zeros((1, n, 4, 4), np.float32)
        self.camera_mask = np.zeros((1, n), np.float32)
        self.calibrations: dict[str, CameraConfig] = {}
        for cam in rig.cameras:
            self.update_calibration(cam)

    def update_calibration(self, cam: CameraConfig) -> None:
        """Hold `cam` for its camera; FrameRejected("calibration_nonfinite"), and the held one
        kept, when its model inputs are not finite in float32."""
        i = self.rig.index(cam.name)
        with np.errstate(all="ignore"):
            k_inv, t = camera_inputs(cam, self.width, self.height)
        if not (np.isfinite(k_inv).all() and np.isfinite(t).all()):
            raise FrameRejected("calibration_nonfinite", f"{cam.name}: calibration {cam.calibration_id} gives "
                                f"non-finite model inputs")
        self.intrinsics_inv[0, i], self.ego_from_camera[0, i] = k_inv, t
        self.calibrations[cam.name] = cam

    def check(self, camera: str, calibration_id: str, width: int, height: int,
              cam: CameraConfig | None = None) -> None:
        """Raise FrameRejected when a frame does not fit the calibration held for its camera (or
        `cam`, the calibration the frame carries)."""
        cam = cam if cam is not None else self.calibrations.get(camera)
        if cam is None:
            raise FrameRejected("unknown_camera", f"{camera!r} is not in rig {self.rig.name!r}")
        if calibration_id and calibration_id != cam.calibration_id:
            raise FrameRejected("stale_calibration", f"{camera}: frame calibration {calibration_id} "
                                f"!= held {cam.calibration_id}")
        if (width, height) != (cam.width, cam.height):
            raise FrameRejected("size_mismatch", f"{camera}: frame {width}x{height}, calibration "
                                f"{cam.width}x{cam.height}")

    def accept(self, rx) -> np.ndarray:
        """Check a received frame (rx.msg a FrameHeader, rx.payload its pixels) against the
        calibration held for its camera, or the calibration it carries, and return its pixels as
        BGR. A carried calibration must be of the frame's own camera, and replaces the held one
        only when the whole frame passed. Raises FrameRejected, config.CalibrationError or
        transport.MalformedMessage, each with the reason it is counted under. The live node and
        offline replay both check frames here."""
        from perception.transport import frame_pixels

        h = rx.msg
        camera = h.camera_name
        held = self.calibrations.get(camera)
        if held is None:
            raise FrameRejected("unknown_camera", f"{camera!r} is not in rig {self.rig.name!r}")
        new_cal = None
        if h.HasField("calibration"):
            if h.calibration.camera_name != camera:
                raise FrameRejected("calibration_camera_mismatch", f"frame of {camera!r} carries the "
                                    f"calibration of {h.calibration.camera_name!r}")
            new_cal = CameraConfig.from_proto(h.calibration)
            if new_cal.calibration_id == held.calibration_id:
                new_cal = None
        self.check(camera, h.calibration_id, h.width, h.height, cam=new_cal)
        pixels = to_bgr(frame_pixels(rx), h.encoding)
        if new_cal is not None:      # last: only a frame that passed every check replaces it
            self.update_calibration(new_cal)
            log.info("camera %s: calibration %s replaces %s", camera, new_cal.calibration_id, held.calibration_id)
        return pixels

    def __call__(self, frames: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for i, cam in enumerate(self.rig.cameras):
            img = frames.get(cam.name)
            if img is None:
                self.camera_mask[0, i] = 0.0
                self.images[0, i] = 0            # never read (masked), zeroed for determinism
                continue
            self.camera_mask[0, i] = 1.0
            resize_into(img, self.images[0, i])
        return {"images": self.images, "intrinsics_inv": self.intrinsics_inv,
                "ego_from_camera": self.ego_from_camera, "camera_mask": self.camera_mask}


class FusionPipeline:
    """Frame set -> Detections. Refuses (UnknownClass) a model whose classes the contract cannot carry.
    With `tracking` (the default) objects carry track ids and tracked velocities (tracker.py)."""

    def __init__(self, rig: RigConfig, engine: Engine, model_cfg, score_threshold: float = 0.3,
                 tracking: bool = True):
        self.rig = rig
        self.engine = engine
        self.model_name = model_cfg.name
        self.label_values = check_model_classes(model_cfg.classes)
        self.score_threshold = score_threshold
        self.preprocess = Preprocessor(rig, model_cfg.image_width, model_cfg.image_height)
        self.tracker = Tracker() if tracking else None
        self.outputs_count = 0
        self.last_outputs: dict[str, np.ndarray] | None = None
        # engine output rows never published: "box_nonfinite" (NaN/inf in a box or score),
        # "box_bad_label" (a label the model's classes do not have)
        self.dropped_boxes: dict[str, int] = {}

    def _usable(self, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The detection outputs of batch item 0 without rows that must never be published:
        non-finite boxes or scores, labels out of range (counted in dropped_boxes)."""
        boxes = np.asarray(outputs["det_boxes"][0])
        scores = np.asarray(outputs["det_scores"][0])
        labels = np.asarray(outputs["det_labels"][0])
        finite = np.isfinite(boxes).all(axis=-1) & np.isfinite(scores)
        labelled = (labels >= 0) & (labels < len(self.label_values))
        for reason, bad in (("box_nonfinite", ~finite), ("box_bad_label", finite & ~labelled)):
            n = int(bad.sum())
            if n:
                self.dropped_boxes[reason] = self.dropped_boxes.get(reason, 0) + n
        keep = finite & labelled
        if keep.all():
            return outputs
        return {"det_boxes": boxes[keep][None], "det_scores": scores[keep][None], "det_labels": labels[keep][None]}
    def process(self, frameset: FrameSet, publish_ns: int | None = None) -> detections_pb2.Detections:
        """Run the model on one frame set. `frameset.frames[cam].data` must be a CameraFrame.
        publish_ns (the clock frame ages are measured against) defaults to the set's stamp, so a
        replay gives identical messages; the live node passes the wall clock."""
        t0 = time.perf_counter()
        frames = {name: f.data.pixels for name, f in frameset.frames.items()}
        inputs = self.preprocess(frames)
        t1 = time.perf_counter()
        outputs = self.engine.infer(inputs)
        t2 = time.perf_counter()
        objects = objects_from_outputs(self._usable(outputs), self.label_values, self.score_threshold)
        if self.tracker is not None:
            self.tracker.update(objects, source_stamp(frameset))
        t3 = time.perf_counter()
        self.last_outputs = outputs
        self.outputs_count += 1

        now = frameset.stamp_ns if publish_ns is None else publish_ns
        msg = detections_pb2.Detections(
            stamp_ns=frameset.stamp_ns, sequence=self.outputs_count, objects=objects,
            missing_cameras=frameset.missing, model_name=self.model_name, backend=self.engine.name)
        for name, f in frameset.frames.items():
            msg.frames.add(camera_name=name, sequence=f.sequence, capture_end_ns=f.stamp_ns,
                           age_ms=(now - f.stamp_ns) / 1e6)
        msg.timings.sync_wait_ms = (frameset.ready_ns - frameset.opened_ns) / 1e6
        msg.timings.preprocess_ms = (t1 - t0) * 1e3
        msg.timings.inference_ms = (t2 - t1) * 1e3
        msg.timings.postprocess_ms = (t3 - t2) * 1e3
        msg.timings.total_ms = (time.perf_counter() - t0) * 1e3
        return msg
