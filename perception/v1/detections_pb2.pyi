from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ObjectClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECT_CLASS_UNSPECIFIED: _ClassVar[ObjectClass]
    OBJECT_CLASS_CAR: _ClassVar[ObjectClass]
    OBJECT_CLASS_TRUCK: _ClassVar[ObjectClass]
    OBJECT_CLASS_PEDESTRIAN: _ClassVar[ObjectClass]
    OBJECT_CLASS_CYCLIST: _ClassVar[ObjectClass]
    OBJECT_CLASS_TRAFFIC_CONE: _ClassVar[ObjectClass]
OBJECT_CLASS_UNSPECIFIED: ObjectClass
OBJECT_CLASS_CAR: ObjectClass
OBJECT_CLASS_TRUCK: ObjectClass
OBJECT_CLASS_PEDESTRIAN: ObjectClass
OBJECT_CLASS_CYCLIST: ObjectClass
OBJECT_CLASS_TRAFFIC_CONE: ObjectClass

class Vector3(_message.Message):
    __slots__ = ("x", "y", "z")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    Z_FIELD_NUMBER: _ClassVar[int]
    x: float
    y: float
    z: float
    def __init__(self, x: _Optional[float] = ..., y: _Optional[float] = ..., z: _Optional[float] = ...) -> None: ...

class Object3D(_message.Message):
    __slots__ = ("object_class", "score", "center", "size", "yaw", "velocity", "track_id", "visible_pixels")
    OBJECT_CLASS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CENTER_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    YAW_FIELD_NUMBER: _ClassVar[int]
    VELOCITY_FIELD_NUMBER: _ClassVar[int]
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    object_class: ObjectClass
    score: float
    center: Vector3
    size: Vector3
    yaw: float
    velocity: Vector3
    track_id: int
    visible_pixels: int
    def __init__(self, object_class: _Optional[_Union[ObjectClass, str]] = ..., score: _Optional[float] = ..., center: _Optional[_Union[Vector3, _Mapping]] = ..., size: _Optional[_Union[Vector3, _Mapping]] = ..., yaw: _Optional[float] = ..., velocity: _Optional[_Union[Vector3, _Mapping]] = ..., track_id: _Optional[int] = ..., visible_pixels: _Optional[int] = ...) -> None: ...

class FrameRef(_message.Message):
    __slots__ = ("camera_name", "sequence", "capture_end_ns", "age_ms")
    CAMERA_NAME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_END_NS_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    camera_name: str
    sequence: int
    capture_end_ns: int
    age_ms: float
    def __init__(self, camera_name: _Optional[str] = ..., sequence: _Optional[int] = ..., capture_end_ns: _Optional[int] = ..., age_ms: _Optional[float] = ...) -> None: ...

class StageTimings(_message.Message):
    __slots__ = ("sync_wait_ms", "preprocess_ms", "inference_ms", "postprocess_ms", "total_ms")
    SYNC_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    POSTPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    sync_wait_ms: float
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    def __init__(self, sync_wait_ms: _Optional[float] = ..., preprocess_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., postprocess_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class Detections(_message.Message):
    __slots__ = ("stamp_ns", "sequence", "objects", "frames", "missing_cameras", "timings", "model_name", "backend")
    STAMP_NS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    MISSING_CAMERAS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    stamp_ns: int
    sequence: int
    objects: _containers.RepeatedCompositeFieldContainer[Object3D]
    frames: _containers.RepeatedCompositeFieldContainer[FrameRef]
    missing_cameras: _containers.RepeatedScalarFieldContainer[str]
    timings: StageTimings
    model_name: str
    backend: str
    def __init__(self, stamp_ns: _Optional[int] = ..., sequence: _Optional[int] = ..., objects: _Optional[_Iterable[_Union[Object3D, _Mapping]]] = ..., frames: _Optional[_Iterable[_Union[FrameRef, _Mapping]]] = ..., missing_cameras: _Optional[_Iterable[str]] = ..., timings: _Optional[_Union[StageTimings, _Mapping]] = ..., model_name: _Optional[str] = ..., backend: _Optional[str] = ...) -> None: ...

class GroundTruth(_message.Message):
    __slots__ = ("stamp_ns", "world_seed", "objects")
    STAMP_NS_FIELD_NUMBER: _ClassVar[int]
    WORLD_SEED_FIELD_NUMBER: _ClassVar[int]
    OBJECTS_FIELD_NUMBER: _ClassVar[int]
    stamp_ns: int
    world_seed: int
    objects: _containers.RepeatedCompositeFieldContainer[Object3D]
    def __init__(self, stamp_ns: _Optional[int] = ..., world_seed: _Optional[int] = ..., objects: _Optional[_Iterable[_Union[Object3D, _Mapping]]] = ...) -> None: ...
