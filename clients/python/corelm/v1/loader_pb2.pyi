from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
KV_TYPE_F16: KVType
KV_TYPE_Q8_0: KVType
KV_TYPE_UNSPECIFIED: KVType
LOAD_STAGE_PACKING: LoadStage
LOAD_STAGE_PUBLISHING: LoadStage
LOAD_STAGE_READY: LoadStage
LOAD_STAGE_UNSPECIFIED: LoadStage
LOAD_STAGE_VALIDATING: LoadStage
MODEL_EVENT_KIND_PUBLISHED: ModelEventKind
MODEL_EVENT_KIND_SYNCED: ModelEventKind
MODEL_EVENT_KIND_UNLOADED: ModelEventKind
MODEL_EVENT_KIND_UNSPECIFIED: ModelEventKind

class LoadModelRequest(_message.Message):
    __slots__ = ["model_id", "options", "path", "reload"]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    RELOAD_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    options: LoadOptions
    path: str
    reload: bool
    def __init__(self, model_id: _Optional[str] = ..., path: _Optional[str] = ..., options: _Optional[_Union[LoadOptions, _Mapping]] = ..., reload: bool = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ["bytes_done", "bytes_per_second", "bytes_total", "eta", "model", "reused", "stage"]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    BYTES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ETA_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    bytes_done: int
    bytes_per_second: float
    bytes_total: int
    eta: _duration_pb2.Duration
    model: PublishedModel
    reused: bool
    stage: LoadStage
    def __init__(self, stage: _Optional[_Union[LoadStage, str]] = ..., bytes_done: _Optional[int] = ..., bytes_total: _Optional[int] = ..., model: _Optional[_Union[PublishedModel, _Mapping]] = ..., reused: bool = ..., bytes_per_second: _Optional[float] = ..., eta: _Optional[_Union[_duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class LoadOptions(_message.Message):
    __slots__ = ["context", "kv_type"]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    KV_TYPE_FIELD_NUMBER: _ClassVar[int]
    context: int
    kv_type: KVType
    def __init__(self, kv_type: _Optional[_Union[KVType, str]] = ..., context: _Optional[int] = ...) -> None: ...

class LoaderServiceListModelsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class LoaderServiceListModelsResponse(_message.Message):
    __slots__ = ["models"]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[PublishedModel]
    def __init__(self, models: _Optional[_Iterable[_Union[PublishedModel, _Mapping]]] = ...) -> None: ...

class PublishedModel(_message.Message):
    __slots__ = ["architecture", "device", "generation", "inode", "model_id", "options", "path", "published_unix_nano", "size_bytes", "source_path", "source_sha256"]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    INODE_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    SOURCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    device: int
    generation: int
    inode: int
    model_id: str
    options: LoadOptions
    path: str
    published_unix_nano: int
    size_bytes: int
    source_path: str
    source_sha256: bytes
    def __init__(self, model_id: _Optional[str] = ..., generation: _Optional[int] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., source_path: _Optional[str] = ..., source_sha256: _Optional[bytes] = ..., architecture: _Optional[str] = ..., options: _Optional[_Union[LoadOptions, _Mapping]] = ..., device: _Optional[int] = ..., inode: _Optional[int] = ..., published_unix_nano: _Optional[int] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ["model_id"]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ["generation"]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    generation: int
    def __init__(self, generation: _Optional[int] = ...) -> None: ...

class WatchModelsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class WatchModelsResponse(_message.Message):
    __slots__ = ["kind", "model"]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    kind: ModelEventKind
    model: PublishedModel
    def __init__(self, kind: _Optional[_Union[ModelEventKind, str]] = ..., model: _Optional[_Union[PublishedModel, _Mapping]] = ...) -> None: ...

class KVType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class LoadStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class ModelEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
