"""Typed, validated configuration: camera rigs and the default endpoints of the processes.

A rig file is YAML:

    name: nuscenes_like
    cameras:
      - name: front
        width: 320
        height: 180
        hfov_deg: 70          # or K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]
        distortion: []        # OpenCV (k1, k2, p1, p2, k3); empty = none
        position: [1.70, 0.0, 1.51]   # metres, ego frame
        yaw_deg: 0            # left positive; or T_ego_from_camera: 4x4 rows
        pitch_deg: 0          # down positive
        roll_deg: 0

Every error names the file and the field, so a bad config fails at start-up with a message
a person can act on.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from perception import geometry

PACKAGE_ROOT = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_ROOT.parent
DEFAULT_RIG = REPO_ROOT / "rigs" / "nuscenes_6cam.yaml"
DEFAULT_LAUNCH = REPO_ROOT / "launch" / "sim.yaml"
DEFAULT_MODEL_DIR = REPO_ROOT / "engines" / "bev_vit"

# Endpoints of launch/sim.yaml; the topic tools default to them.
CAMERA_BASE_PORT = 5550          # camera i of the rig publishes on tcp://127.0.0.1:(5550 + i)
FUSION_ENDPOINT = "tcp://127.0.0.1:5560"   # topics.DETECTIONS and topics.FUSION_STATUS


class ConfigError(ValueError):
    """A configuration file or value is invalid; the message says where and why."""


class CalibrationError(ConfigError):
    """A calibration that cannot be used (from a file or from the wire). ``reason`` is a short
    stable key the fusion node counts rejections under (e.g. "calibration_focal")."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# Largest image side a camera may have (rig files and calibrations received on the wire).
MAX_IMAGE_SIDE = 16384
# Focal lengths (pixels) and camera positions (metres) a calibration may have: beyond these the
# model's float32 geometry inputs overflow or lose all precision.
MIN_FOCAL_PX = 1e-2
MAX_FOCAL_PX = 1e7
MAX_TRANSLATION_M = 1e5
# |R R^T - I| and |det R - 1| tolerance of a rigid transform's rotation.
RIGID_TOLERANCE = 1e-4


def camera_endpoint(index: int, host: str = "127.0.0.1") -> str:
    return f"tcp://{host}:{CAMERA_BASE_PORT + index}"


@dataclass(frozen=True)
class CameraConfig:
    name: str
    width: int
    height: int
    K: np.ndarray                       # (3, 3)
    T_ego_from_camera: np.ndarray       # (4, 4)
    distortion: tuple[float, ...] = ()

    @property
    def calibration_id(self) -> str:
        """Content hash of the calibration: equal ids mean equal geometry."""
        h = hashlib.sha1()
        h.update(self.name.encode())
        h.update(np.asarray([self.width, self.height], dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(self.K, dtype=np.float64), 9).tobytes())
        h.update(np.round(np.asarray(self.T_ego_from_camera, dtype=np.float64), 9).tobytes())
        h.update(np.asarray(self.distortion, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    @property
    def position(self) -> np.ndarray:
        return self.T_ego_from_camera[:3, 3]

    def resized(self, width: int, height: int) -> "CameraConfig":
        """The same camera after resizing its image to (width, height)."""
        K = geometry.scale_intrinsics(self.K, width / self.width, height / self.height)
        return replace(self, width=width, height=height, K=K)

    def with_extrinsics(self, T_ego_from_camera: np.ndarray) -> "CameraConfig":
        return replace(self, T_ego_from_camera=np.asarray(T_ego_from_camera, dtype=np.float64))

    def to_proto(self):
        from perception.v1 import calibration_pb2

        return calibration_pb2.CameraCalibration(
            camera_name=self.name,
            calibration_id=self.calibration_id,
            width=self.width,
            height=self.height,
            K=np.asarray(self.K, dtype=np.float64).ravel().tolist(),
            distortion=list(self.distortion),
            T_ego_from_camera=np.asarray(self.T_ego_from_camera, dtype=np.float64).ravel().tolist(),
        )

    @classmethod
    def from_proto(cls, msg) -> "CameraConfig":
        """A validated CameraConfig from a CameraCalibration message; CalibrationError (with a
        reason) for one that cannot be used."""
        if len(msg.K) != 9 or len(msg.T_ego_from_camera) != 16:
            raise CalibrationError("calibration_shape", f"calibration of camera {msg.camera_name!r}: K needs 9 "
                                   f"values and T_ego_from_camera 16, got {len(msg.K)} and "
                                   f"{len(msg.T_ego_from_camera)}")
        cam = cls(name=msg.camera_name, width=msg.width, height=msg.height,
                  K=np.array(msg.K, dtype=np.float64).reshape(3, 3),
                  T_ego_from_camera=np.array(msg.T_ego_from_camera, dtype=np.float64).reshape(4, 4),
                  distortion=tuple(msg.distortion))
        cam.validate(f"calibration of camera {msg.camera_name!r}")
        return cam

    def validate(self, where: str = "calibration") -> None:
        """Raise CalibrationError unless this is a usable calibration: a name, a size in
        [1, MAX_IMAGE_SIDE], finite values, positive focal lengths, a principal point inside the
        image, an upper-triangular K with last row 0 0 1, a rigid T_ego_from_camera (orthonormal
        rotation with det +1, last row 0 0 0 1) and 0, 4, 5 or 8 finite distortion coefficients."""
        if not self.name:
            raise CalibrationError("calibration_name", f"{where}: empty camera name")
        if not (1 <= self.width <= MAX_IMAGE_SIDE and 1 <= self.height <= MAX_IMAGE_SIDE):
            raise CalibrationError("calibration_size", f"{where}: image size {self.width}x{self.height} is not in "
                                   f"[1, {MAX_IMAGE_SIDE}]")
        K = np.asarray(self.K, dtype=np.float64)
        T = np.asarray(self.T_ego_from_camera, dtype=np.float64)
        if K.shape != (3, 3) or T.shape != (4, 4):
            raise CalibrationError("calibration_shape", f"{where}: K {K.shape}, T_ego_from_camera {T.shape}")
        dist = np.asarray(self.distortion, dtype=np.float64)
        if not (np.all(np.isfinite(K)) and np.all(np.isfinite(T)) and np.all(np.isfinite(dist))):
            raise CalibrationError("calibration_nonfinite", f"{where}: contains NaN or inf")
        if not (MIN_FOCAL_PX <= K[0, 0] <= MAX_FOCAL_PX and MIN_FOCAL_PX <= K[1, 1] <= MAX_FOCAL_PX
                and abs(K[0, 1]) <= MAX_FOCAL_PX):
            raise CalibrationError("calibration_focal", f"{where}: focal lengths fx={K[0, 0]}, fy={K[1, 1]} "
                                   f"(skew {K[0, 1]}) must be positive and in [{MIN_FOCAL_PX}, {MAX_FOCAL_PX:g}] px")
        if not (0 <= K[0, 2] <= self.width and 0 <= K[1, 2] <= self.height):
            raise CalibrationError("calibration_principal_point", f"{where}: principal point ({K[0, 2]}, "
                                   f"{K[1, 2]}) is outside the {self.width}x{self.height} image")
        if K[1, 0] != 0 or K[2, 0] != 0 or K[2, 1] != 0 or K[2, 2] != 1:
            raise CalibrationError("calibration_intrinsics", f"{where}: K is not [[fx, s, cx], [0, fy, cy], [0, 0, 1]]")
        R = T[:3, :3]
        with np.errstate(all="ignore"):        # huge entries overflow to inf: not rigid either
            rigid = (np.allclose(R @ R.T, np.eye(3), atol=RIGID_TOLERANCE)
                     and abs(np.linalg.det(R) - 1.0) <= RIGID_TOLERANCE and np.array_equal(T[3], [0, 0, 0, 1]))
        if not rigid:
            raise CalibrationError("calibration_not_rigid", f"{where}: T_ego_from_camera is not a rigid transform "
                                   f"(rotation orthonormal with det +1, last row 0 0 0 1)")
        if np.abs(T[:3, 3]).max() > MAX_TRANSLATION_M:
            raise CalibrationError("calibration_not_rigid", f"{where}: camera position {T[:3, 3]} is more than "
                                   f"{MAX_TRANSLATION_M:g} m from the ego origin")
        if len(dist) not in (0, 4, 5, 8):
            raise CalibrationError("calibration_distortion", f"{where}: expected 0, 4, 5 or 8 distortion "
                                   f"coefficients, got {len(dist)}")


@dataclass(frozen=True)
class RigConfig:
    name: str
    cameras: tuple[CameraConfig, ...] = field(default_factory=tuple)

    @property
    def camera_names(self) -> list[str]:
        return [c.name for c in self.cameras]

    def camera(self, name: str) -> CameraConfig:
        for c in self.cameras:
            if c.name == name:
                return c
        raise ConfigError(f"rig {self.name!r} has no camera {name!r}; cameras: {', '.join(self.camera_names)}")

    def index(self, name: str) -> int:
        return self.camera_names.index(self.camera(name).name)

    def resized(self, width: int, height: int) -> "RigConfig":
        return replace(self, cameras=tuple(c.resized(width, height) for c in self.cameras))

    def to_proto(self):
        from perception.v1 import calibration_pb2

        return calibration_pb2.RigCalibration(rig_name=self.name, cameras=[c.to_proto() for c in self.cameras])


def _matrix(value, shape, where: str) -> np.ndarray:
    try:
        m = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: expected a {shape[0]}x{shape[1]} matrix of numbers ({e})") from None
    if m.shape != shape:
        raise ConfigError(f"{where}: expected shape {shape}, got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ConfigError(f"{where}: contains a non-finite value")
    return m


def parse_camera(d: dict, where: str) -> CameraConfig:
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    known = {"name", "width", "height", "hfov_deg", "K", "distortion", "position", "yaw_deg",
             "pitch_deg", "roll_deg", "T_ego_from_camera"}
    unknown = set(d) - known
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    for key in ("name", "width", "height"):
        if key not in d:
            raise ConfigError(f"{where}: missing required field {key!r}")
    name = str(d["name"])
    where = f"{where} ({name})"
    try:
        width, height = int(d["width"]), int(d["height"])
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: width and height must be integers") from None
    if not (8 <= width <= MAX_IMAGE_SIDE and 8 <= height <= MAX_IMAGE_SIDE):
        raise ConfigError(f"{where}: image size {width}x{height} is out of range")
    if ("K" in d) == ("hfov_deg" in d):
        raise ConfigError(f"{where}: give exactly one of K or hfov_deg")
    if "K" in d:
        K = _matrix(d["K"], (3, 3), f"{where}.K")
    else:
        fov = float(d["hfov_deg"])
        if not 1.0 <= fov < 179.0:
            raise ConfigError(f"{where}.hfov_deg: {fov} is not in [1, 179)")
        K = geometry.intrinsics_from_fov(width, height, fov)
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ConfigError(f"{where}.K: focal lengths must be positive")
    if "T_ego_from_camera" in d:
        if any(k in d for k in ("position", "yaw_deg", "pitch_deg", "roll_deg")):
            raise ConfigError(f"{where}: give T_ego_from_camera or position/yaw/pitch/roll, not both")
        T = _matrix(d["T_ego_from_camera"], (4, 4), f"{where}.T_ego_from_camera")
        R = T[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-6) or not np.allclose(T[3], [0, 0, 0, 1]):
            raise ConfigError(f"{where}.T_ego_from_camera: not a rigid transform")
    else:
        if "position" not in d:
            raise ConfigError(f"{where}: missing 'position' (or T_ego_from_camera)")
        pos = np.asarray(d["position"], dtype=np.float64)
        if pos.shape != (3,):
            raise ConfigError(f"{where}.position: expected [x, y, z]")
        R = geometry.camera_rotation(np.radians(float(d.get("yaw_deg", 0.0))),
                                     np.radians(float(d.get("pitch_deg", 0.0))),
                                     np.radians(float(d.get("roll_deg", 0.0))))
        T = geometry.make_transform(R, pos)
    dist = tuple(float(x) for x in (d.get("distortion") or ()))
    if len(dist) not in (0, 4, 5, 8):
        raise ConfigError(f"{where}.distortion: expected 0, 4, 5 or 8 coefficients, got {len(dist)}")
    cam = CameraConfig(name=name, width=width, height=height, K=K, T_ego_from_camera=T, distortion=dist)
    cam.validate(where)
    return cam


def read_yaml(path: str | Path, what: str):
    """Parsed YAML of a config file; a missing or unparsable file is a ConfigError naming it."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML: {e}") from None


def load_rig(path: str | Path = DEFAULT_RIG) -> RigConfig:
    return parse_rig(read_yaml(path, "rig file"), str(path))


def parse_rig(data, where: str = "rig") -> RigConfig:
    if not isinstance(data, dict) or "cameras" not in data:
        raise ConfigError(f"{where}: expected a mapping with a 'cameras' list")
    cams = data["cameras"]
    if not isinstance(cams, list) or not cams:
        raise ConfigError(f"{where}: 'cameras' must be a non-empty list")
    cameras = tuple(parse_camera(c, f"{where}: cameras[{i}]") for i, c in enumerate(cams))
    names = [c.name for c in cameras]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(f"{where}: duplicate camera name(s) {sorted(dup)}")
    return RigConfig(name=str(data.get("name", Path(where).stem)), cameras=cameras)


# ------------------------------------------------------------------------------------------------
# The processes' settings. `perception camera` and `perception fuse` build these from their
# arguments (the commands' argparse defaults come from here); tests and embedders build them
# directly.

@dataclass(frozen=True)
class CameraProcessConfig:
    """One camera reader (perception.cameras.process.CameraReader)."""
    name: str                                   # camera name in the rig file (e.g. front)
    rig: str = str(DEFAULT_RIG)                 # rig YAML with this camera's calibration
    source: str = "sim"                         # sim, video or images
    uri: str | None = None                      # video file/device/URL/pipeline, or image folder
    loop: bool = False                          # restart a video or image folder at its end
    seed: int = 0                               # world seed of the sim source
    rate: float = 10.0                          # frames per second
    phase_ms: float | None = None               # capture offset in the period (None: 5 ms x camera index)
    endpoint: str | None = None                 # endpoint to bind (None: camera_endpoint(index))
    truth: bool = False                         # also publish the sim's ground truth on sim/truth
    truth_rate: float = 10.0                    # ground truth at most this often (Hz)
    count: int | None = None                    # stop after this many frames


CAMERA_SOURCES = ("sim", "video", "images")


@dataclass(frozen=True)
class FusionNodeConfig:
    """The fusion node (perception.fusion.node.FusionNode)."""
    rig: str = str(DEFAULT_RIG)                 # rig YAML (cameras and calibration)
    model: str = str(DEFAULT_MODEL_DIR)         # model directory (config.yaml + model.safetensors)
    backend: str = "auto"                       # engine backend, NAME or NAME:PRECISION
    threads: int = 2                            # CPU threads for the engine
    camera_endpoints: tuple[str, ...] | None = None   # None: camera_endpoint(i) for camera i of the rig
    publish: str = FUSION_ENDPOINT              # endpoint to bind for detections and status
    max_span_ms: float = 50.0                   # max capture-time spread within a frame set
    timeout_ms: float = 120.0                   # publish an incomplete set this long after its first frame
    min_cameras: int = 1                        # never publish a set with fewer cameras
    score_threshold: float = 0.3                # minimum detection score published
    tracking: bool = True                       # track ids and velocity from tracking (fusion/tracker.py)
    stale_ms: float = 500.0                     # camera age above which status reports it STALE
    max_future_ms: float = 2000.0               # reject frames stamped further ahead of the node's clock
    max_past_ms: float = 10000.0                # reject frames stamped further behind the node's clock
    output_stall_ms: float = 2000.0             # no output this long while cameras are fresh: status ERROR
    online_score: bool = True                   # subscribe to sim/truth and report a live mAP
    allow_random_init: bool = False             # seeded random weights when the model has none
    duration: float | None = None               # exit after this many seconds
