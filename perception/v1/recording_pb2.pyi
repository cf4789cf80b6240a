from perception.v1 import frame_pb2 as _frame_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RecordedFrame(_message.Message):
    __slots__ = ("header", "pixels")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PIXELS_FIELD_NUMBER: _ClassVar[int]
    header: _frame_pb2.FrameHeader
    pixels: bytes
    def __init__(self, header: _Optional[_Union[_frame_pb2.FrameHeader, _Mapping]] = ..., pixels: _Optional[bytes] = ...) -> None: ...
