from perception.v1 import calibration_pb2 as _calibration_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PixelEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PIXEL_ENCODING_UNSPECIFIED: _ClassVar[PixelEncoding]
    PIXEL_ENCODING_BGR8: _ClassVar[PixelEncoding]
    PIXEL_ENCODING_RGB8: _ClassVar[PixelEncoding]
    PIXEL_ENCODING_MONO8: _ClassVar[PixelEncoding]
PIXEL_ENCODING_UNSPECIFIED: PixelEncoding
PIXEL_ENCODING_BGR8: PixelEncoding
PIXEL_ENCODING_RGB8: PixelEncoding
PIXEL_ENCODING_MONO8: PixelEncoding

class FrameHeader(_message.Message):
    __slots__ = ("camera_name", "sequence", "capture_start_ns", "capture_end_ns", "publish_ns", "width", "height", "encoding", "row_stride", "calibration_id", "calibration", "source", "source_time_ns")
    CAMERA_NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_START_NS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_END_NS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_NS_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    ROW_STRIDE_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_ID_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TIME_NS_FIELD_NUMBER: _ClassVar[int]
    camera_name: str
    sequence: int
    capture_start_ns: int
    capture_end_ns: int
    publish_ns: int
    width: int
    height: int
    encoding: PixelEncoding
    row_stride: int
    calibration_id: str
    calibration: _calibration_pb2.CameraCalibration
    source: str
    source_time_ns: int
    def __init__(self, camera_name: _Optional[str] = ..., sequence: _Optional[int] = ..., capture_start_ns: _Optional[int] = ..., capture_end_ns: _Optional[int] = ..., publish_ns: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., encoding: _Optional[_Union[PixelEncoding, str]] = ..., row_stride: _Optional[int] = ..., calibration_id: _Optional[str] = ..., calibration: _Optional[_Union[_calibration_pb2.CameraCalibration, _Mapping]] = ..., source: _Optional[str] = ..., source_time_ns: _Optional[int] = ...) -> None: ...
