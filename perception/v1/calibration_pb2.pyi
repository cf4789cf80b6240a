from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CameraCalibration(_message.Message):
    __slots__ = ("camera_name", "calibration_id", "width", "height", "K", "distortion", "T_ego_from_camera")
    CAMERA_NAME_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    DISTORTION_FIELD_NUMBER: _ClassVar[int]
    T_EGO_FROM_CAMERA_FIELD_NUMBER: _ClassVar[int]
    camera_name: str
    calibration_id: str
    width: int
    height: int
    K: _containers.RepeatedScalarFieldContainer[float]
    distortion: _containers.RepeatedScalarFieldContainer[float]
    T_ego_from_camera: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, camera_name: _Optional[str] = ..., calibration_id: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., K: _Optional[_Iterable[float]] = ..., distortion: _Optional[_Iterable[float]] = ..., T_ego_from_camera: _Optional[_Iterable[float]] = ...) -> None: ...

class RigCalibration(_message.Message):
    __slots__ = ("rig_name", "cameras")
    RIG_NAME_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    rig_name: str
    cameras: _containers.RepeatedCompositeFieldContainer[CameraCalibration]
    def __init__(self, rig_name: _Optional[str] = ..., cameras: _Optional[_Iterable[_Union[CameraCalibration, _Mapping]]] = ...) -> None: ...
