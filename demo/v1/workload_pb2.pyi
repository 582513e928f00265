from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GetItemRequest(_message.Message):
    __slots__ = ("id", "payload_bytes")
    ID_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_BYTES_FIELD_NUMBER: _ClassVar[int]
    id: str
    payload_bytes: int
    def __init__(self, id: _Optional[str] = ..., payload_bytes: _Optional[int] = ...) -> None: ...

class WatchItemsRequest(_message.Message):
    __slots__ = ("prefix", "count", "interval_ms")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    count: int
    interval_ms: int
    def __init__(self, prefix: _Optional[str] = ..., count: _Optional[int] = ..., interval_ms: _Optional[int] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "pod", "payload")
    ID_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    id: str
    pod: str
    payload: bytes
    def __init__(self, id: _Optional[str] = ..., pod: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class ImportSummary(_message.Message):
    __slots__ = ("received", "pod")
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    POD_FIELD_NUMBER: _ClassVar[int]
    received: int
    pod: str
    def __init__(self, received: _Optional[int] = ..., pod: _Optional[str] = ...) -> None: ...

class GetKnobsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class KnobSettings(_message.Message):
    __slots__ = ("latency_ms", "jitter_ms", "cpu_ms", "leak_bytes", "error_rate", "error_code")
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    JITTER_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_MS_FIELD_NUMBER: _ClassVar[int]
    LEAK_BYTES_FIELD_NUMBER: _ClassVar[int]
    ERROR_RATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    latency_ms: float
    jitter_ms: float
    cpu_ms: float
    leak_bytes: int
    error_rate: float
    error_code: str
    def __init__(self, latency_ms: _Optional[float] = ..., jitter_ms: _Optional[float] = ..., cpu_ms: _Optional[float] = ..., leak_bytes: _Optional[int] = ..., error_rate: _Optional[float] = ..., error_code: _Optional[str] = ...) -> None: ...
