import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nasloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Extraction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXTRACTION_UNSPECIFIED: _ClassVar[Extraction]
    EXTRACTION_PYTHON_BLOCK: _ClassVar[Extraction]
    EXTRACTION_FENCED_BLOCK: _ClassVar[Extraction]
    EXTRACTION_NONE: _ClassVar[Extraction]
EXTRACTION_UNSPECIFIED: Extraction
EXTRACTION_PYTHON_BLOCK: Extraction
EXTRACTION_FENCED_BLOCK: Extraction
EXTRACTION_NONE: Extraction

class GenerateRequest(_message.Message):
    __slots__ = ("spec", "raw_prompt", "n", "sampling", "adapter", "run", "cycle", "id_prefix", "ids")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    RAW_PROMPT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    ID_PREFIX_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.TaskSpec
    raw_prompt: str
    n: int
    sampling: _common_pb2.SamplingParams
    adapter: str
    run: str
    cycle: int
    id_prefix: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, spec: _Optional[_Union[_common_pb2.TaskSpec, _Mapping]] = ..., raw_prompt: _Optional[str] = ..., n: _Optional[int] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., adapter: _Optional[str] = ..., run: _Optional[str] = ..., cycle: _Optional[int] = ..., id_prefix: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GeneratedCandidate(_message.Message):
    __slots__ = ("index", "candidate", "extraction", "prompt_tokens", "completion_tokens", "finish_reason", "latency_s")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    EXTRACTION_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    LATENCY_S_FIELD_NUMBER: _ClassVar[int]
    index: int
    candidate: _common_pb2.Candidate
    extraction: Extraction
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    latency_s: float
    def __init__(self, index: _Optional[int] = ..., candidate: _Optional[_Union[_common_pb2.Candidate, _Mapping]] = ..., extraction: _Optional[_Union[Extraction, str]] = ..., prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., finish_reason: _Optional[str] = ..., latency_s: _Optional[float] = ...) -> None: ...

class LoadAdapterRequest(_message.Message):
    __slots__ = ("name", "prefix", "sha256", "replace")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    name: str
    prefix: str
    sha256: str
    replace: bool
    def __init__(self, name: _Optional[str] = ..., prefix: _Optional[str] = ..., sha256: _Optional[str] = ..., replace: _Optional[bool] = ...) -> None: ...

class AdapterInfo(_message.Message):
    __slots__ = ("name", "ref", "local_path", "loaded_at", "load_seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REF_FIELD_NUMBER: _ClassVar[int]
    LOCAL_PATH_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    ref: _common_pb2.AdapterRef
    local_path: str
    loaded_at: _timestamp_pb2.Timestamp
    load_seconds: float
    def __init__(self, name: _Optional[str] = ..., ref: _Optional[_Union[_common_pb2.AdapterRef, _Mapping]] = ..., local_path: _Optional[str] = ..., loaded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class UnloadAdapterRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UnloadAdapterResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAdaptersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListAdaptersResponse(_message.Message):
    __slots__ = ("adapters",)
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    def __init__(self, adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfoResponse(_message.Message):
    __slots__ = ("backend", "model", "model_sha256", "max_context", "max_lora_rank", "max_loras", "dtype", "device", "prompt_template", "adapters")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MAX_LORA_RANK_FIELD_NUMBER: _ClassVar[int]
    MAX_LORAS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    ADAPTERS_FIELD_NUMBER: _ClassVar[int]
    backend: str
    model: str
    model_sha256: str
    max_context: int
    max_lora_rank: int
    max_loras: int
    dtype: str
    device: str
    prompt_template: str
    adapters: _containers.RepeatedCompositeFieldContainer[AdapterInfo]
    def __init__(self, backend: _Optional[str] = ..., model: _Optional[str] = ..., model_sha256: _Optional[str] = ..., max_context: _Optional[int] = ..., max_lora_rank: _Optional[int] = ..., max_loras: _Optional[int] = ..., dtype: _Optional[str] = ..., device: _Optional[str] = ..., prompt_template: _Optional[str] = ..., adapters: _Optional[_Iterable[_Union[AdapterInfo, _Mapping]]] = ...) -> None: ...

class RenderPromptRequest(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.TaskSpec
    def __init__(self, spec: _Optional[_Union[_common_pb2.TaskSpec, _Mapping]] = ...) -> None: ...

class RenderPromptResponse(_message.Message):
    __slots__ = ("prompt", "template", "prompt_tokens")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    template: str
    prompt_tokens: int
    def __init__(self, prompt: _Optional[str] = ..., template: _Optional[str] = ..., prompt_tokens: _Optional[int] = ...) -> None: ...
