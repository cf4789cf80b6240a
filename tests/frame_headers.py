"""A valid FrameHeader for a rig camera, for tests that drive the fusion node message by message."""
from __future__ import annotations

from perception.v1 import frame_pb2


def header(cam, seq: int, stamp: int, **kw) -> frame_pb2.FrameHeader:
    """BGR8 header of `cam` (a CameraConfig) with sequence and capture stamp; keyword fields
    override ("calibration" takes a CameraCalibration message)."""
    h = frame_pb2.FrameHeader(camera_name=cam.name, sequence=seq, capture_end_ns=stamp, width=cam.width,
                              height=cam.height, encoding=frame_pb2.PIXEL_ENCODING_BGR8, row_stride=cam.width * 3,
                              calibration_id=cam.calibration_id)
    for k, v in kw.items():
        if k == "calibration":
            h.calibration.CopyFrom(v)
        else:
            setattr(h, k, v)
    return h
