import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EditMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EDIT_MODE_UNSPECIFIED: _ClassVar[EditMode]
    EDIT_MODE_FULL: _ClassVar[EditMode]
    EDIT_MODE_DIFF: _ClassVar[EditMode]

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    STAGE_EXTRACTED: _ClassVar[Stage]
    STAGE_PARSED: _ClassVar[Stage]
    STAGE_POLICY: _ClassVar[Stage]
    STAGE_IMPORTED: _ClassVar[Stage]
    STAGE_INSTANTIATED: _ClassVar[Stage]
    STAGE_FORWARD_PROBE: _ClassVar[Stage]
    STAGE_TRAINED: _ClassVar[Stage]
    STAGE_EVALUATED: _ClassVar[Stage]

class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STATUS_UNSPECIFIED: _ClassVar[Status]
    STATUS_OK: _ClassVar[Status]
    STATUS_NO_CODE: _ClassVar[Status]
    STATUS_SYNTAX_ERROR: _ClassVar[Status]
    STATUS_MISSING_ENTRY_POINT: _ClassVar[Status]
    STATUS_FORBIDDEN_CONSTRUCT: _ClassVar[Status]
    STATUS_IMPORT_ERROR: _ClassVar[Status]
    STATUS_INIT_EXCEPTION: _ClassVar[Status]
    STATUS_PARAMETER_LIMIT: _ClassVar[Status]
    STATUS_FORWARD_EXCEPTION: _ClassVar[Status]
    STATUS_WRONG_OUTPUT_SHAPE: _ClassVar[Status]
    STATUS_TRAIN_EXCEPTION: _ClassVar[Status]
    STATUS_NON_FINITE_LOSS: _ClassVar[Status]
    STATUS_CPU_TIMEOUT: _ClassVar[Status]
    STATUS_WALL_TIMEOUT: _ClassVar[Status]
    STATUS_OUT_OF_MEMORY: _ClassVar[Status]
    STATUS_CUDA_OUT_OF_MEMORY: _ClassVar[Status]
    STATUS_SANDBOX_VIOLATION: _ClassVar[Status]
    STATUS_NO_RESULT: _ClassVar[Status]
    STATUS_LOW_ACCURACY: _ClassVar[Status]
    STATUS_EVAL_EXCEPTION: _ClassVar[Status]
    STATUS_CANCELLED: _ClassVar[Status]
    STATUS_INTERNAL_ERROR: _ClassVar[Status]
    STATUS_EVICTED: _ClassVar[Status]
    STATUS_PROTOCOL_VIOLATION: _ClassVar[Status]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
EDIT_MODE_UNSPECIFIED: EditMode
EDIT_MODE_FULL: EditMode
EDIT_MODE_DIFF: EditMode
STAGE_UNSPECIFIED: Stage
STAGE_EXTRACTED: Stage
STAGE_PARSED: Stage
STAGE_POLICY: Stage
STAGE_IMPORTED: Stage
STAGE_INSTANTIATED: Stage
STAGE_FORWARD_PROBE: Stage
STAGE_TRAINED: Stage
STAGE_EVALUATED: Stage
STATUS_UNSPECIFIED: Status
STATUS_OK: Status
STATUS_NO_CODE: Status
STATUS_SYNTAX_ERROR: Status
STATUS_MISSING_ENTRY_POINT: Status
STATUS_FORBIDDEN_CONSTRUCT: Status
STATUS_IMPORT_ERROR: Status
STATUS_INIT_EXCEPTION: Status
STATUS_PARAMETER_LIMIT: Status
STATUS_FORWARD_EXCEPTION: Status
STATUS_WRONG_OUTPUT_SHAPE: Status
STATUS_TRAIN_EXCEPTION: Status
STATUS_NON_FINITE_LOSS: Status
STATUS_CPU_TIMEOUT: Status
STATUS_WALL_TIMEOUT: Status
STATUS_OUT_OF_MEMORY: Status
STATUS_CUDA_OUT_OF_MEMORY: Status
STATUS_SANDBOX_VIOLATION: Status
STATUS_NO_RESULT: Status
STATUS_LOW_ACCURACY: Status
STATUS_EVAL_EXCEPTION: Status
STATUS_CANCELLED: Status
STATUS_INTERNAL_ERROR: Status
STATUS_EVICTED: Status
STATUS_PROTOCOL_VIOLATION: Status
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class ObjectRef(_message.Message):
    __slots__ = ("key", "sha256", "size")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    key: str
    sha256: str
    size: int
    def __init__(self, key: _Optional[str] = ..., sha256: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class AdapterRef(_message.Message):
    __slots__ = ("name", "prefix", "sha256", "base_model", "rank", "run", "cycle", "base_model_sha256", "parent_sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_SHA256_FIELD_NUMBER: _ClassVar[int]
    PARENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    prefix: str
    sha256: str
    base_model: str
    rank: int
    run: str
    cycle: int
    base_model_sha256: str
    parent_sha256: str
    def __init__(self, name: _Optional[str] = ..., prefix: _Optional[str] = ..., sha256: _Optional[str] = ..., base_model: _Optional[str] = ..., rank: _Optional[int] = ..., run: _Optional[str] = ..., cycle: _Optional[int] = ..., base_model_sha256: _Optional[str] = ..., parent_sha256: _Optional[str] = ...) -> None: ...

class Provenance(_message.Message):
    __slots__ = ("source", "run", "cycle", "model", "adapter_name", "adapter_sha256", "seed", "prompt_sha256", "created")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_NAME_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_SHA256_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    PROMPT_SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    source: str
    run: str
    cycle: int
    model: str
    adapter_name: str
    adapter_sha256: str
    seed: int
    prompt_sha256: str
    created: _timestamp_pb2.Timestamp
    def __init__(self, source: _Optional[str] = ..., run: _Optional[str] = ..., cycle: _Optional[int] = ..., model: _Optional[str] = ..., adapter_name: _Optional[str] = ..., adapter_sha256: _Optional[str] = ..., seed: _Optional[int] = ..., prompt_sha256: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "code", "raw_text", "provenance")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    RAW_TEXT_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: str
    raw_text: str
    provenance: Provenance
    def __init__(self, id: _Optional[str] = ..., code: _Optional[str] = ..., raw_text: _Optional[str] = ..., provenance: _Optional[_Union[Provenance, _Mapping]] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("task", "dataset", "in_shape", "out_shape", "parameter_budget", "reference_accuracy", "reference_code", "template", "parent")
    TASK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    IN_SHAPE_FIELD_NUMBER: _ClassVar[int]
    OUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_BUDGET_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_CODE_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    task: str
    dataset: str
    in_shape: _containers.RepeatedScalarFieldContainer[int]
    out_shape: _containers.RepeatedScalarFieldContainer[int]
    parameter_budget: int
    reference_accuracy: float
    reference_code: str
    template: str
    parent: Parent
    def __init__(self, task: _Optional[str] = ..., dataset: _Optional[str] = ..., in_shape: _Optional[_Iterable[int]] = ..., out_shape: _Optional[_Iterable[int]] = ..., parameter_budget: _Optional[int] = ..., reference_accuracy: _Optional[float] = ..., reference_code: _Optional[str] = ..., template: _Optional[str] = ..., parent: _Optional[_Union[Parent, _Mapping]] = ...) -> None: ...

class Parent(_message.Message):
    __slots__ = ("id", "code", "accuracy", "parameters", "mode")
    ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    id: str
    code: str
    accuracy: float
    parameters: int
    mode: EditMode
    def __init__(self, id: _Optional[str] = ..., code: _Optional[str] = ..., accuracy: _Optional[float] = ..., parameters: _Optional[int] = ..., mode: _Optional[_Union[EditMode, str]] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "max_tokens", "seed", "stop")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    max_tokens: int
    seed: int
    stop: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_tokens: _Optional[int] = ..., seed: _Optional[int] = ..., stop: _Optional[_Iterable[str]] = ...) -> None: ...

class LoraConfig(_message.Message):
    __slots__ = ("r", "alpha", "dropout", "target_modules")
    R_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    TARGET_MODULES_FIELD_NUMBER: _ClassVar[int]
    r: int
    alpha: float
    dropout: float
    target_modules: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, r: _Optional[int] = ..., alpha: _Optional[float] = ..., dropout: _Optional[float] = ..., target_modules: _Optional[_Iterable[str]] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "seconds")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    seconds: float
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., seconds: _Optional[float] = ...) -> None: ...

class CandidateMetrics(_message.Message):
    __slots__ = ("accuracy", "loss", "parameter_count", "train_seconds", "eval_seconds", "peak_memory_bytes", "trained_samples", "optimizer_steps", "informative", "macs", "depth", "layer_families")
    ACCURACY_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRAINED_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    OPTIMIZER_STEPS_FIELD_NUMBER: _ClassVar[int]
    INFORMATIVE_FIELD_NUMBER: _ClassVar[int]
    MACS_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    LAYER_FAMILIES_FIELD_NUMBER: _ClassVar[int]
    accuracy: float
    loss: float
    parameter_count: int
    train_seconds: float
    eval_seconds: float
    peak_memory_bytes: int
    trained_samples: int
    optimizer_steps: int
    informative: _containers.RepeatedScalarFieldContainer[str]
    macs: int
    depth: int
    layer_families: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, accuracy: _Optional[float] = ..., loss: _Optional[float] = ..., parameter_count: _Optional[int] = ..., train_seconds: _Optional[float] = ..., eval_seconds: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ..., trained_samples: _Optional[int] = ..., optimizer_steps: _Optional[int] = ..., informative: _Optional[_Iterable[str]] = ..., macs: _Optional[int] = ..., depth: _Optional[int] = ..., layer_families: _Optional[_Iterable[str]] = ...) -> None: ...

class ValidationResult(_message.Message):
    __slots__ = ("last_stage", "status", "message", "metrics", "timings", "hyperparameters")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    LAST_STAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    last_stage: Stage
    status: Status
    message: str
    metrics: CandidateMetrics
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    hyperparameters: _containers.ScalarMap[str, float]
    def __init__(self, last_stage: _Optional[_Union[Stage, str]] = ..., status: _Optional[_Union[Status, str]] = ..., message: _Optional[str] = ..., metrics: _Optional[_Union[CandidateMetrics, _Mapping]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., hyperparameters: _Optional[_Mapping[str, float]] = ...) -> None: ...

class EvaluationProtocol(_message.Message):
    __slots__ = ("dataset", "epochs", "batch_size", "lr", "momentum", "dropout", "hyperparameters", "seed", "train_subset", "failure_floor", "time_limit_s", "max_parameters", "device", "name", "test_subset", "dataset_source", "input_size", "random_resized_crop", "horizontal_flip")
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DATASET_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    DROPOUT_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SUBSET_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_S_FIELD_NUMBER: _ClassVar[int]
    MAX_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TEST_SUBSET_FIELD_NUMBER: _ClassVar[int]
    DATASET_SOURCE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANDOM_RESIZED_CROP_FIELD_NUMBER: _ClassVar[int]
    HORIZONTAL_FLIP_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    dropout: float
    hyperparameters: _containers.ScalarMap[str, float]
    seed: int
    train_subset: int
    failure_floor: float
    time_limit_s: float
    max_parameters: int
    device: str
    name: str
    test_subset: int
    dataset_source: str
    input_size: int
    random_resized_crop: bool
    horizontal_flip: bool
    def __init__(self, dataset: _Optional[str] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., lr: _Optional[float] = ..., momentum: _Optional[float] = ..., dropout: _Optional[float] = ..., hyperparameters: _Optional[_Mapping[str, float]] = ..., seed: _Optional[int] = ..., train_subset: _Optional[int] = ..., failure_floor: _Optional[float] = ..., time_limit_s: _Optional[float] = ..., max_parameters: _Optional[int] = ..., device: _Optional[str] = ..., name: _Optional[str] = ..., test_subset: _Optional[int] = ..., dataset_source: _Optional[str] = ..., input_size: _Optional[int] = ..., random_resized_crop: _Optional[bool] = ..., horizontal_flip: _Optional[bool] = ...) -> None: ...
