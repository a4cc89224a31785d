from nasloop.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Executor(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTOR_UNSPECIFIED: _ClassVar[Executor]
    EXECUTOR_LOCAL_SANDBOX: _ClassVar[Executor]
    EXECUTOR_LOCAL_UNSANDBOXED: _ClassVar[Executor]
    EXECUTOR_KUBERNETES_JOB: _ClassVar[Executor]
    EXECUTOR_STATIC: _ClassVar[Executor]
EXECUTOR_UNSPECIFIED: Executor
EXECUTOR_LOCAL_SANDBOX: Executor
EXECUTOR_LOCAL_UNSANDBOXED: Executor
EXECUTOR_KUBERNETES_JOB: Executor
EXECUTOR_STATIC: Executor

class ValidateRequest(_message.Message):
    __slots__ = ("candidates", "protocol")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    protocol: _common_pb2.EvaluationProtocol
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., protocol: _Optional[_Union[_common_pb2.EvaluationProtocol, _Mapping]] = ...) -> None: ...

class ValidateResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[EvaluationResult]
    def __init__(self, results: _Optional[_Iterable[_Union[EvaluationResult, _Mapping]]] = ...) -> None: ...

class EvaluateRequest(_message.Message):
    __slots__ = ("candidates", "protocol", "max_parallel")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    MAX_PARALLEL_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    protocol: _common_pb2.EvaluationProtocol
    max_parallel: int
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., protocol: _Optional[_Union[_common_pb2.EvaluationProtocol, _Mapping]] = ..., max_parallel: _Optional[int] = ...) -> None: ...

class EvaluationResult(_message.Message):
    __slots__ = ("candidate_id", "index", "result", "executor", "executor_ref", "output_tail")
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_REF_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TAIL_FIELD_NUMBER: _ClassVar[int]
    candidate_id: str
    index: int
    result: _common_pb2.ValidationResult
    executor: Executor
    executor_ref: str
    output_tail: str
    def __init__(self, candidate_id: _Optional[str] = ..., index: _Optional[int] = ..., result: _Optional[_Union[_common_pb2.ValidationResult, _Mapping]] = ..., executor: _Optional[_Union[Executor, str]] = ..., executor_ref: _Optional[str] = ..., output_tail: _Optional[str] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "in_shape", "out_shape", "train_size", "test_size", "normalisation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IN_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEST_SIZE_FIELD_NUMBER: _ClassVar[int]
    NORMALISATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    in_shape: _containers.RepeatedScalarFieldContainer[int]
    out_shape: _containers.RepeatedScalarFieldContainer[int]
    train_size: int
    test_size: int
    normalisation: str
    def __init__(self, name: _Optional[str] = ..., in_shape: _Optional[_Iterable[int]] = ..., out_shape: _Optional[_Iterable[int]] = ..., train_size: _Optional[int] = ..., test_size: _Optional[int] = ..., normalisation: _Optional[str] = ...) -> None: ...

class ListDatasetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListDatasetsResponse(_message.Message):
    __slots__ = ("datasets",)
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...
