"""The message contract: round trips of every top-level message, and generated code up to date."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from perception import config
from perception.v1 import calibration_pb2, detections_pb2, frame_pb2, status_pb2


def roundtrip(msg):
    data = msg.SerializeToString()
    back = type(msg).FromString(data)
    assert back == msg
    # Map fields (NodeStatus.counters) serialise in no fixed order unless asked to.
    assert back.SerializeToString(deterministic=True) == msg.SerializeToString(deterministic=True)
    return back


@pytest.fixture(scope="module")
def rig():
    return config.load_rig()


def test_camera_calibration_roundtrip_preserves_K_and_T(rig):
    cam = rig.cameras[1]
    msg = roundtrip(cam.to_proto())
    back = config.CameraConfig.from_proto(msg)
    np.testing.assert_array_equal(back.K, cam.K)
    np.testing.assert_array_equal(back.T_ego_from_camera, cam.T_ego_from_camera)
    assert (back.name, back.width, back.height, back.distortion) == (cam.name, cam.width, cam.height, cam.distortion)
    assert back.calibration_id == cam.calibration_id == msg.calibration_id


def test_from_proto_rejects_wrong_matrix_sizes(rig):
    msg = rig.cameras[0].to_proto()
    del msg.K[-1]
    with pytest.raises(config.ConfigError, match="K needs 9 values"):
        config.CameraConfig.from_proto(msg)


def test_rig_calibration_roundtrip(rig):
    msg = roundtrip(rig.to_proto())
    assert [c.camera_name for c in msg.cameras] == rig.camera_names


def test_frame_header_with_calibration_roundtrip(rig):
    cam = rig.cameras[0]
    h = frame_pb2.FrameHeader(
        camera_name=cam.name, sequence=2**40 + 7, capture_start_ns=1_700_000_000_000_000_000,
        capture_end_ns=1_700_000_000_010_000_000, publish_ns=1_700_000_000_012_000_000,
        width=cam.width, height=cam.height, encoding=frame_pb2.PIXEL_ENCODING_BGR8,
        row_stride=cam.width * 3 + 64, calibration_id=cam.calibration_id,
        calibration=cam.to_proto(), source="sim")
    back = roundtrip(h)
    assert back.HasField("calibration")
    assert back.calibration.calibration_id == back.calibration_id
    assert back.capture_end_ns - back.capture_start_ns == 10_000_000


def _object(cls, x, score=0.9):
    return detections_pb2.Object3D(
        object_class=cls, score=score, center=detections_pb2.Vector3(x=x, y=-2.5, z=0.8),
        size=detections_pb2.Vector3(x=4.5, y=1.9, z=1.6), yaw=0.25,
        velocity=detections_pb2.Vector3(x=3.0, y=0.5), track_id=12)


def test_detections_roundtrip():
    d = detections_pb2.Detections(
        stamp_ns=1_700_000_000_000_000_000, sequence=42,
        objects=[_object(detections_pb2.OBJECT_CLASS_CAR, 10.0),
                 _object(detections_pb2.OBJECT_CLASS_PEDESTRIAN, -3.5, 0.4)],
        frames=[detections_pb2.FrameRef(camera_name="front", sequence=100, capture_end_ns=1_699_999_999_990_000_000,
                                        age_ms=38.5),
                detections_pb2.FrameRef(camera_name="back", sequence=99, capture_end_ns=1_699_999_999_980_000_000,
                                        age_ms=48.5)],
        missing_cameras=["front_left"],
        timings=detections_pb2.StageTimings(sync_wait_ms=3.0, preprocess_ms=2.5, inference_ms=30.0,
                                            postprocess_ms=1.0, total_ms=34.0),
        model_name="bev_vit", backend="torch-cpu")
    back = roundtrip(d)
    assert len(back.objects) == 2 and back.objects[1].object_class == detections_pb2.OBJECT_CLASS_PEDESTRIAN
    assert back.timings.total_ms == 34.0 and list(back.missing_cameras) == ["front_left"]


def test_node_status_roundtrip():
    s = status_pb2.NodeStatus(
        node="fusion", stamp_ns=1_700_000_000_000_000_000, level=status_pb2.LEVEL_WARN, message="back is stale",
        cameras=[status_pb2.CameraStatus(camera_name="front", rate_hz=10.0, age_ms=40.0, received=100,
                                         dropped=2, rejected=1, level=status_pb2.LEVEL_OK),
                 status_pb2.CameraStatus(camera_name="back", level=status_pb2.LEVEL_STALE)],
        stages=[status_pb2.StageStats(stage="inference", p50_ms=30.0, p99_ms=45.0, max_ms=60.0)],
        output_rate_hz=9.8, outputs=98, sync_complete=90, sync_partial=8, sync_dropped=1,
        model_name="bev_vit", backend="torch-cpu", latency_ms_p50=70.0,
        online_score=0.45, online_score_name="AP@2m",
        counters={"malformed/payload_size": 3.0, "superseded/camera/front": 12.0})
    back = roundtrip(s)
    assert dict(back.counters) == {"malformed/payload_size": 3.0, "superseded/camera/front": 12.0}
    assert back.cameras[1].level == status_pb2.LEVEL_STALE


def test_ground_truth_roundtrip():
    gt = detections_pb2.GroundTruth(stamp_ns=123, world_seed=7,
                                    objects=[_object(detections_pb2.OBJECT_CLASS_TRUCK, 20.0, score=1.0)])
    assert roundtrip(gt).objects[0].size.x == 4.5


def test_calibration_type_names_are_in_the_v1_package():
    # The transport sends full type names; other languages resolve the same names.
    assert calibration_pb2.CameraCalibration.DESCRIPTOR.full_name == "perception.v1.CameraCalibration"
    assert frame_pb2.FrameHeader.DESCRIPTOR.full_name == "perception.v1.FrameHeader"


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None,
                    reason="grpcio-tools is not installed (pip install -e '.[dev]'), cannot run protoc")
def test_generated_code_is_up_to_date():
    from perception.tools import gen_proto

    assert gen_proto.stale_files() == [], "run: python -m perception.tools.gen_proto"
