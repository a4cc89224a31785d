import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from nasloop.v1 import common_pb2 as _common_pb2
from nasloop.v1 import evaluator_pb2 as _evaluator_pb2
from nasloop.v1 import novelty_pb2 as _novelty_pb2
from nasloop.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_STOPPING: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]

class CyclePhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CYCLE_PHASE_UNSPECIFIED: _ClassVar[CyclePhase]
    CYCLE_PHASE_GENERATE: _ClassVar[CyclePhase]
    CYCLE_PHASE_VALIDATE: _ClassVar[CyclePhase]
    CYCLE_PHASE_EVALUATE: _ClassVar[CyclePhase]
    CYCLE_PHASE_NOVELTY: _ClassVar[CyclePhase]
    CYCLE_PHASE_SELECT: _ClassVar[CyclePhase]
    CYCLE_PHASE_FINE_TUNE: _ClassVar[CyclePhase]
    CYCLE_PHASE_PUBLISH: _ClassVar[CyclePhase]
    CYCLE_PHASE_HOT_LOAD: _ClassVar[CyclePhase]
    CYCLE_PHASE_DONE: _ClassVar[CyclePhase]
    CYCLE_PHASE_FAILED: _ClassVar[CyclePhase]
    CYCLE_PHASE_BASELINE: _ClassVar[CyclePhase]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_STOPPING: RunState
RUN_STATE_STOPPED: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
CYCLE_PHASE_UNSPECIFIED: CyclePhase
CYCLE_PHASE_GENERATE: CyclePhase
CYCLE_PHASE_VALIDATE: CyclePhase
CYCLE_PHASE_EVALUATE: CyclePhase
CYCLE_PHASE_NOVELTY: CyclePhase
CYCLE_PHASE_SELECT: CyclePhase
CYCLE_PHASE_FINE_TUNE: CyclePhase
CYCLE_PHASE_PUBLISH: CyclePhase
CYCLE_PHASE_HOT_LOAD: CyclePhase
CYCLE_PHASE_DONE: CyclePhase
CYCLE_PHASE_FAILED: CyclePhase
CYCLE_PHASE_BASELINE: CyclePhase

class SelectionPolicy(_message.Message):
    __slots__ = ("min_accuracy", "top_up_to", "top_up_min_accuracy", "max_per_cycle", "objectives")
    MIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    TOP_UP_TO_FIELD_NUMBER: _ClassVar[int]
    TOP_UP_MIN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_CYCLE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    min_accuracy: float
    top_up_to: int
    top_up_min_accuracy: float
    max_per_cycle: int
    objectives: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, min_accuracy: _Optional[float] = ..., top_up_to: _Optional[int] = ..., top_up_min_accuracy: _Optional[float] = ..., max_per_cycle: _Optional[int] = ..., objectives: _Optional[_Iterable[str]] = ...) -> None: ...

class TrainingSettings(_message.Message):
    __slots__ = ("lora", "lr", "epochs", "batch_size", "grad_accum", "precision", "continual")
    LORA_FIELD_NUMBER: _ClassVar[int]
    LR_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    GRAD_ACCUM_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    CONTINUAL_FIELD_NUMBER: _ClassVar[int]
    lora: _common_pb2.LoraConfig
    lr: float
    epochs: int
    batch_size: int
    grad_accum: int
    precision: _trainer_pb2.Precision
    continual: bool
    def __init__(self, lora: _Optional[_Union[_common_pb2.LoraConfig, _Mapping]] = ..., lr: _Optional[float] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., grad_accum: _Optional[int] = ..., precision: _Optional[_Union[_trainer_pb2.Precision, str]] = ..., continual: _Optional[bool] = ...) -> None: ...

class NoveltySettings(_message.Message):
    __slots__ = ("corpus_namespace", "params")
    CORPUS_NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    corpus_namespace: str
    params: _novelty_pb2.NamespaceParams
    def __init__(self, corpus_namespace: _Optional[str] = ..., params: _Optional[_Union[_novelty_pb2.NamespaceParams, _Mapping]] = ...) -> None: ...

class RunSpec(_message.Message):
    __slots__ = ("name", "preset", "cycles", "candidates_per_cycle", "base_model", "corpus", "task", "sampling", "protocol", "novelty", "selection", "training", "seed", "baseline", "search")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRESET_FIELD_NUMBER: _ClassVar[int]
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_PER_CYCLE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    NOVELTY_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    name: str
    preset: str
    cycles: int
    candidates_per_cycle: int
    base_model: str
    corpus: str
    task: _common_pb2.TaskSpec
    sampling: _common_pb2.SamplingParams
    protocol: _common_pb2.EvaluationProtocol
    novelty: NoveltySettings
    selection: SelectionPolicy
    training: TrainingSettings
    seed: int
    baseline: bool
    search: SearchSettings
    def __init__(self, name: _Optional[str] = ..., preset: _Optional[str] = ..., cycles: _Optional[int] = ..., candidates_per_cycle: _Optional[int] = ..., base_model: _Optional[str] = ..., corpus: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.TaskSpec, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., protocol: _Optional[_Union[_common_pb2.EvaluationProtocol, _Mapping]] = ..., novelty: _Optional[_Union[NoveltySettings, _Mapping]] = ..., selection: _Optional[_Union[SelectionPolicy, _Mapping]] = ..., training: _Optional[_Union[TrainingSettings, _Mapping]] = ..., seed: _Optional[int] = ..., baseline: _Optional[bool] = ..., search: _Optional[_Union[SearchSettings, _Mapping]] = ...) -> None: ...

class SearchSettings(_message.Message):
    __slots__ = ("strategy", "parent_share", "mode")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    PARENT_SHARE_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    strategy: str
    parent_share: float
    mode: str
    def __init__(self, strategy: _Optional[str] = ..., parent_share: _Optional[float] = ..., mode: _Optional[str] = ...) -> None: ...

class StageCount(_message.Message):
    __slots__ = ("stage", "status", "count")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    stage: _common_pb2.Stage
    status: _common_pb2.Status
    count: int
    def __init__(self, stage: _Optional[_Union[_common_pb2.Stage, str]] = ..., status: _Optional[_Union[_common_pb2.Status, str]] = ..., count: _Optional[int] = ...) -> None: ...

class CycleSummary(_message.Message):
    __slots__ = ("run", "cycle", "phase", "generated", "valid", "novel", "selected", "valid_rate", "mean_accuracy", "best_accuracy", "share_above_040", "stopped", "adapter", "generated_with", "seconds", "started", "finished", "candidates", "error", "distinct", "step_seconds", "service_seconds", "training_pairs", "final_loss", "selection_threshold", "share_above_threshold", "novel_good")
    class StepSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    RUN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    GENERATED_FIELD_NUMBER: _ClassVar[int]
    VALID_FIELD_NUMBER: _ClassVar[int]
    NOVEL_FIELD_NUMBER: _ClassVar[int]
    SELECTED_FIELD_NUMBER: _ClassVar[int]
    VALID_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    BEST_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    SHARE_ABOVE_040_FIELD_NUMBER: _ClassVar[int]
    STOPPED_FIELD_NUMBER: _ClassVar[int]
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    GENERATED_WITH_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_FIELD_NUMBER: _ClassVar[int]
    STEP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_PAIRS_FIELD_NUMBER: _ClassVar[int]
    FINAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SHARE_ABOVE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NOVEL_GOOD_FIELD_NUMBER: _ClassVar[int]
    run: str
    cycle: int
    phase: CyclePhase
    generated: int
    valid: int
    novel: int
    selected: int
    valid_rate: float
    mean_accuracy: float
    best_accuracy: float
    share_above_040: float
    stopped: _containers.RepeatedCompositeFieldContainer[StageCount]
    adapter: _common_pb2.AdapterRef
    generated_with: _common_pb2.AdapterRef
    seconds: float
    started: _timestamp_pb2.Timestamp
    finished: _timestamp_pb2.Timestamp
    candidates: _common_pb2.ObjectRef
    error: str
    distinct: int
    step_seconds: _containers.ScalarMap[str, float]
    service_seconds: float
    training_pairs: int
    final_loss: float
    selection_threshold: float
    share_above_threshold: float
    novel_good: int
    def __init__(self, run: _Optional[str] = ..., cycle: _Optional[int] = ..., phase: _Optional[_Union[CyclePhase, str]] = ..., generated: _Optional[int] = ..., valid: _Optional[int] = ..., novel: _Optional[int] = ..., selected: _Optional[int] = ..., valid_rate: _Optional[float] = ..., mean_accuracy: _Optional[float] = ..., best_accuracy: _Optional[float] = ..., share_above_040: _Optional[float] = ..., stopped: _Optional[_Iterable[_Union[StageCount, _Mapping]]] = ..., adapter: _Optional[_Union[_common_pb2.AdapterRef, _Mapping]] = ..., generated_with: _Optional[_Union[_common_pb2.AdapterRef, _Mapping]] = ..., seconds: _Optional[float] = ..., started: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., candidates: _Optional[_Union[_common_pb2.ObjectRef, _Mapping]] = ..., error: _Optional[str] = ..., distinct: _Optional[int] = ..., step_seconds: _Optional[_Mapping[str, float]] = ..., service_seconds: _Optional[float] = ..., training_pairs: _Optional[int] = ..., final_loss: _Optional[float] = ..., selection_threshold: _Optional[float] = ..., share_above_threshold: _Optional[float] = ..., novel_good: _Optional[int] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("name", "spec", "state", "current_cycle", "current_phase", "cycles", "error", "created", "updated", "cycle_job", "cycles_done", "spec_yaml", "baseline")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_CYCLE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PHASE_FIELD_NUMBER: _ClassVar[int]
    CYCLES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    CYCLE_JOB_FIELD_NUMBER: _ClassVar[int]
    CYCLES_DONE_FIELD_NUMBER: _ClassVar[int]
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec: RunSpec
    state: RunState
    current_cycle: int
    current_phase: CyclePhase
    cycles: _containers.RepeatedCompositeFieldContainer[CycleSummary]
    error: str
    created: _timestamp_pb2.Timestamp
    updated: _timestamp_pb2.Timestamp
    cycle_job: str
    cycles_done: int
    spec_yaml: str
    baseline: CycleSummary
    def __init__(self, name: _Optional[str] = ..., spec: _Optional[_Union[RunSpec, _Mapping]] = ..., state: _Optional[_Union[RunState, str]] = ..., current_cycle: _Optional[int] = ..., current_phase: _Optional[_Union[CyclePhase, str]] = ..., cycles: _Optional[_Iterable[_Union[CycleSummary, _Mapping]]] = ..., error: _Optional[str] = ..., created: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., cycle_job: _Optional[str] = ..., cycles_done: _Optional[int] = ..., spec_yaml: _Optional[str] = ..., baseline: _Optional[_Union[CycleSummary, _Mapping]] = ...) -> None: ...

class CycleEvent(_message.Message):
    __slots__ = ("run", "cycle", "phase", "at", "message", "candidate", "training", "summary", "counts")
    class CountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    run: str
    cycle: int
    phase: CyclePhase
    at: _timestamp_pb2.Timestamp
    message: str
    candidate: _evaluator_pb2.EvaluationResult
    training: _trainer_pb2.JobProgress
    summary: CycleSummary
    counts: _containers.ScalarMap[str, int]
    def __init__(self, run: _Optional[str] = ..., cycle: _Optional[int] = ..., phase: _Optional[_Union[CyclePhase, str]] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., message: _Optional[str] = ..., candidate: _Optional[_Union[_evaluator_pb2.EvaluationResult, _Mapping]] = ..., training: _Optional[_Union[_trainer_pb2.JobProgress, _Mapping]] = ..., summary: _Optional[_Union[CycleSummary, _Mapping]] = ..., counts: _Optional[_Mapping[str, int]] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("spec", "spec_yaml", "overrides")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    SPEC_YAML_FIELD_NUMBER: _ClassVar[int]
    OVERRIDES_FIELD_NUMBER: _ClassVar[int]
    spec: RunSpec
    spec_yaml: str
    overrides: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, spec: _Optional[_Union[RunSpec, _Mapping]] = ..., spec_yaml: _Optional[str] = ..., overrides: _Optional[_Iterable[str]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("name", "now")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NOW_FIELD_NUMBER: _ClassVar[int]
    name: str
    now: bool
    def __init__(self, name: _Optional[str] = ..., now: _Optional[bool] = ...) -> None: ...

class ResumeRunRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("name", "from_cycle")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FROM_CYCLE_FIELD_NUMBER: _ClassVar[int]
    name: str
    from_cycle: int
    def __init__(self, name: _Optional[str] = ..., from_cycle: _Optional[int] = ...) -> None: ...

class GetCycleRequest(_message.Message):
    __slots__ = ("run", "cycle")
    RUN_FIELD_NUMBER: _ClassVar[int]
    CYCLE_FIELD_NUMBER: _ClassVar[int]
    run: str
    cycle: int
    def __init__(self, run: _Optional[str] = ..., cycle: _Optional[int] = ...) -> None: ...

class CycleCertificateRequest(_message.Message):
    __slots__ = ("csr_pem",)
    CSR_PEM_FIELD_NUMBER: _ClassVar[int]
    csr_pem: bytes
    def __init__(self, csr_pem: _Optional[bytes] = ...) -> None: ...

class CycleCertificate(_message.Message):
    __slots__ = ("certificate_pem", "identity")
    CERTIFICATE_PEM_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    certificate_pem: bytes
    identity: str
    def __init__(self, certificate_pem: _Optional[bytes] = ..., identity: _Optional[str] = ...) -> None: ...

class ObjectKey(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class ObjectChunk(_message.Message):
    __slots__ = ("key", "data", "size", "sha256")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    key: str
    data: bytes
    size: int
    sha256: str
    def __init__(self, key: _Optional[str] = ..., data: _Optional[bytes] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ObjectStat(_message.Message):
    __slots__ = ("key", "exists", "size", "sha256")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    key: str
    exists: bool
    size: int
    sha256: str
    def __init__(self, key: _Optional[str] = ..., exists: _Optional[bool] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ListObjectsRequest(_message.Message):
    __slots__ = ("prefix",)
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    def __init__(self, prefix: _Optional[str] = ...) -> None: ...

class ListObjectsResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...
