from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TokenMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_MODE_UNSPECIFIED: _ClassVar[TokenMode]
    TOKEN_MODE_CANONICAL: _ClassVar[TokenMode]
    TOKEN_MODE_RAW: _ClassVar[TokenMode]
TOKEN_MODE_UNSPECIFIED: TokenMode
TOKEN_MODE_CANONICAL: TokenMode
TOKEN_MODE_RAW: TokenMode

class NamespaceParams(_message.Message):
    __slots__ = ("mode", "shingle_size", "num_perm", "threshold")
    MODE_FIELD_NUMBER: _ClassVar[int]
    SHINGLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NUM_PERM_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    mode: TokenMode
    shingle_size: int
    num_perm: int
    threshold: float
    def __init__(self, mode: _Optional[_Union[TokenMode, str]] = ..., shingle_size: _Optional[int] = ..., num_perm: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...

class NamespaceInfo(_message.Message):
    __slots__ = ("name", "params", "entries", "last_seq", "snapshot_seq")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_SEQ_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: NamespaceParams
    entries: int
    last_seq: int
    snapshot_seq: int
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[NamespaceParams, _Mapping]] = ..., entries: _Optional[int] = ..., last_seq: _Optional[int] = ..., snapshot_seq: _Optional[int] = ...) -> None: ...

class CreateNamespaceRequest(_message.Message):
    __slots__ = ("name", "params")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    params: NamespaceParams
    def __init__(self, name: _Optional[str] = ..., params: _Optional[_Union[NamespaceParams, _Mapping]] = ...) -> None: ...

class GetNamespaceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceInfo]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceInfo, _Mapping]]] = ...) -> None: ...

class DeleteNamespaceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteNamespaceResponse(_message.Message):
    __slots__ = ("removed_entries",)
    REMOVED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    removed_entries: int
    def __init__(self, removed_entries: _Optional[int] = ...) -> None: ...

class CheckRequest(_message.Message):
    __slots__ = ("code", "namespaces", "exhaustive")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTIVE_FIELD_NUMBER: _ClassVar[int]
    code: str
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    exhaustive: bool
    def __init__(self, code: _Optional[str] = ..., namespaces: _Optional[_Iterable[str]] = ..., exhaustive: _Optional[bool] = ...) -> None: ...

class CheckAndAddRequest(_message.Message):
    __slots__ = ("code", "id", "namespace", "consult")
    CODE_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONSULT_FIELD_NUMBER: _ClassVar[int]
    code: str
    id: str
    namespace: str
    consult: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, code: _Optional[str] = ..., id: _Optional[str] = ..., namespace: _Optional[str] = ..., consult: _Optional[_Iterable[str]] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("id", "novel", "added", "max_similarity", "nearest_id", "nearest_namespace", "seq")
    ID_FIELD_NUMBER: _ClassVar[int]
    NOVEL_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    MAX_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    NEAREST_ID_FIELD_NUMBER: _ClassVar[int]
    NEAREST_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    id: str
    novel: bool
    added: bool
    max_similarity: float
    nearest_id: str
    nearest_namespace: str
    seq: int
    def __init__(self, id: _Optional[str] = ..., novel: _Optional[bool] = ..., added: _Optional[bool] = ..., max_similarity: _Optional[float] = ..., nearest_id: _Optional[str] = ..., nearest_namespace: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class BatchCheckRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[CheckRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[CheckRequest, _Mapping]]] = ...) -> None: ...

class BatchCheckAndAddRequest(_message.Message):
    __slots__ = ("namespace", "consult", "items")
    class Item(_message.Message):
        __slots__ = ("id", "code")
        ID_FIELD_NUMBER: _ClassVar[int]
        CODE_FIELD_NUMBER: _ClassVar[int]
        id: str
        code: str
        def __init__(self, id: _Optional[str] = ..., code: _Optional[str] = ...) -> None: ...
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    CONSULT_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    consult: _containers.RepeatedScalarFieldContainer[str]
    items: _containers.RepeatedCompositeFieldContainer[BatchCheckAndAddRequest.Item]
    def __init__(self, namespace: _Optional[str] = ..., consult: _Optional[_Iterable[str]] = ..., items: _Optional[_Iterable[_Union[BatchCheckAndAddRequest.Item, _Mapping]]] = ...) -> None: ...

class BatchCheckResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CheckResult]
    def __init__(self, results: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ...) -> None: ...

class AddRequest(_message.Message):
    __slots__ = ("namespace", "items", "skip_existing")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SKIP_EXISTING_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    items: _containers.RepeatedCompositeFieldContainer[BatchCheckAndAddRequest.Item]
    skip_existing: bool
    def __init__(self, namespace: _Optional[str] = ..., items: _Optional[_Iterable[_Union[BatchCheckAndAddRequest.Item, _Mapping]]] = ..., skip_existing: _Optional[bool] = ...) -> None: ...

class AddResponse(_message.Message):
    __slots__ = ("added", "last_seq")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    added: int
    last_seq: int
    def __init__(self, added: _Optional[int] = ..., last_seq: _Optional[int] = ...) -> None: ...

class RemoveRequest(_message.Message):
    __slots__ = ("namespace", "ids")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespace: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RemoveResponse(_message.Message):
    __slots__ = ("removed", "not_found")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    removed: int
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, removed: _Optional[int] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("namespaces", "total_entries", "checks", "adds", "rejected_duplicates")
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    ADDS_FIELD_NUMBER: _ClassVar[int]
    REJECTED_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceInfo]
    total_entries: int
    checks: int
    adds: int
    rejected_duplicates: int
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceInfo, _Mapping]]] = ..., total_entries: _Optional[int] = ..., checks: _Optional[int] = ..., adds: _Optional[int] = ..., rejected_duplicates: _Optional[int] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, namespaces: _Optional[_Iterable[str]] = ...) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceInfo]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceInfo, _Mapping]]] = ...) -> None: ...

class FingerprintRequest(_message.Message):
    __slots__ = ("code", "params")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    code: str
    params: NamespaceParams
    def __init__(self, code: _Optional[str] = ..., params: _Optional[_Union[NamespaceParams, _Mapping]] = ...) -> None: ...

class FingerprintResponse(_message.Message):
    __slots__ = ("tokens", "shingles")
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    SHINGLES_FIELD_NUMBER: _ClassVar[int]
    tokens: _containers.RepeatedScalarFieldContainer[str]
    shingles: int
    def __init__(self, tokens: _Optional[_Iterable[str]] = ..., shingles: _Optional[int] = ...) -> None: ...
