from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Level(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEVEL_OK: _ClassVar[Level]
    LEVEL_WARN: _ClassVar[Level]
    LEVEL_ERROR: _ClassVar[Level]
    LEVEL_STALE: _ClassVar[Level]
LEVEL_OK: Level
LEVEL_WARN: Level
LEVEL_ERROR: Level
LEVEL_STALE: Level

class CameraStatus(_message.Message):
    __slots__ = ("camera_name", "rate_hz", "age_ms", "received", "dropped", "rejected", "level", "restarts", "message")
    CAMERA_NAME_FIELD_NUMBER: _ClassVar[int]
    RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    AGE_MS_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    RESTARTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    camera_name: str
    rate_hz: float
    age_ms: float
    received: int
    dropped: int
    rejected: int
    level: Level
    restarts: int
    message: str
    def __init__(self, camera_name: _Optional[str] = ..., rate_hz: _Optional[float] = ..., age_ms: _Optional[float] = ..., received: _Optional[int] = ..., dropped: _Optional[int] = ..., rejected: _Optional[int] = ..., level: _Optional[_Union[Level, str]] = ..., restarts: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class StageStats(_message.Message):
    __slots__ = ("stage", "p50_ms", "p99_ms", "max_ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    p50_ms: float
    p99_ms: float
    max_ms: float
    def __init__(self, stage: _Optional[str] = ..., p50_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., max_ms: _Optional[float] = ...) -> None: ...

class EngineSwitch(_message.Message):
    __slots__ = ("stamp_ns", "from_backend", "to_backend", "reason")
    STAMP_NS_FIELD_NUMBER: _ClassVar[int]
    FROM_BACKEND_FIELD_NUMBER: _ClassVar[int]
    TO_BACKEND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    stamp_ns: int
    from_backend: str
    to_backend: str
    reason: str
    def __init__(self, stamp_ns: _Optional[int] = ..., from_backend: _Optional[str] = ..., to_backend: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node", "stamp_ns", "level", "message", "cameras", "stages", "output_rate_hz", "outputs", "sync_complete", "sync_partial", "sync_dropped", "model_name", "backend", "latency_ms_p50", "online_score", "online_score_name", "counters", "engine_switches", "latency_ms_p99", "sets_dropped_overload", "uptime_s", "rejected")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class RejectedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_FIELD_NUMBER: _ClassVar[int]
    STAMP_NS_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CAMERAS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    SYNC_COMPLETE_FIELD_NUMBER: _ClassVar[int]
    SYNC_PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SYNC_DROPPED_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_P50_FIELD_NUMBER: _ClassVar[int]
    ONLINE_SCORE_FIELD_NUMBER: _ClassVar[int]
    ONLINE_SCORE_NAME_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_SWITCHES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_P99_FIELD_NUMBER: _ClassVar[int]
    SETS_DROPPED_OVERLOAD_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    node: str
    stamp_ns: int
    level: Level
    message: str
    cameras: _containers.RepeatedCompositeFieldContainer[CameraStatus]
    stages: _containers.RepeatedCompositeFieldContainer[StageStats]
    output_rate_hz: float
    outputs: int
    sync_complete: int
    sync_partial: int
    sync_dropped: int
    model_name: str
    backend: str
    latency_ms_p50: float
    online_score: float
    online_score_name: str
    counters: _containers.ScalarMap[str, float]
    engine_switches: _containers.RepeatedCompositeFieldContainer[EngineSwitch]
    latency_ms_p99: float
    sets_dropped_overload: int
    uptime_s: float
    rejected: _containers.ScalarMap[str, int]
    def __init__(self, node: _Optional[str] = ..., stamp_ns: _Optional[int] = ..., level: _Optional[_Union[Level, str]] = ..., message: _Optional[str] = ..., cameras: _Optional[_Iterable[_Union[CameraStatus, _Mapping]]] = ..., stages: _Optional[_Iterable[_Union[StageStats, _Mapping]]] = ..., output_rate_hz: _Optional[float] = ..., outputs: _Optional[int] = ..., sync_complete: _Optional[int] = ..., sync_partial: _Optional[int] = ..., sync_dropped: _Optional[int] = ..., model_name: _Optional[str] = ..., backend: _Optional[str] = ..., latency_ms_p50: _Optional[float] = ..., online_score: _Optional[float] = ..., online_score_name: _Optional[str] = ..., counters: _Optional[_Mapping[str, float]] = ..., engine_switches: _Optional[_Iterable[_Union[EngineSwitch, _Mapping]]] = ..., latency_ms_p99: _Optional[float] = ..., sets_dropped_overload: _Optional[int] = ..., uptime_s: _Optional[float] = ..., rejected: _Optional[_Mapping[str, int]] = ...) -> None: ...
