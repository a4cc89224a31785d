"""The run spec: everything one closed-loop run needs, validated in one place.

Sources, later ones winning (``load_spec``):
1. a preset (``local`` or ``paper``, below): every field has a value there, except the protocol
   section, which states only what differs from nasloop.protocol's defaults;
2. a YAML file, then YAML text (their ``preset:`` key picks the preset);
3. ``extra``: a dict of overrides, e.g. ``spec_from_proto(StartRunRequest.spec)``;
4. ``--set key=value`` overrides (dotted path; the value is read as YAML).

The sections mirror ``RunSpec`` in proto/nasloop/v1/controller.proto field by field, so a proto
converts to overrides with ``spec_from_proto``. The dataset is stated once (``task.dataset``);
the TaskSpec and EvaluationProtocol sent to the services are derived from the spec
(``task_spec``, ``evaluation_protocol``) so they cannot disagree. Unknown keys and bad values
raise ``SpecError`` naming the dotted path of each bad key.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from google.protobuf import json_format
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nasloop import layout, protocol
from nasloop.layout import MAX_CYCLE, InvalidName, check_run_name
from nasloop.lora import DEFAULT_TARGETS, LoraSettings, check_rank, check_targets
from nasloop.messages import message_from
from nasloop.protocol import ProtocolSettings, check_known
from nasloop.v1 import common_pb2, controller_pb2, novelty_pb2, trainer_pb2


class SpecError(ValueError):
    """A run spec that cannot be used; one ``path: why`` per problem, joined by ``; ``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid run spec: " + "; ".join(self.problems))


class DatasetShape(NamedTuple):
    image_shape: tuple[int, int, int]  # (C, H, W) as the evaluator serves it
    num_classes: int


DATASETS: dict[str, DatasetShape] = {
    "digits": DatasetShape((3, 32, 32), 10),  # 8x8 digits upsampled by the evaluator
    "cifar10": DatasetShape((3, 32, 32), 10),
}
PROJECTIONS = list(DEFAULT_TARGETS)
OBJECTIVES = ("accuracy", "parameters", "macs")  # selection.objectives' words
OBJECTIVE_LISTS = (["accuracy"], ["accuracy", "parameters"], ["accuracy", "macs"])  # allowed
MAX_SEED = 2**32 - 1


# -- presets: every field of a RunSpec (except name; the protocol states what differs) -----------
def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> None:
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = copy.deepcopy(v)


def _merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with ``changes`` merged in (mappings key by key)."""
    out = copy.deepcopy(dict(base))
    _merge(out, changes)
    return out


# Offline, CPU: the bootstrapped small model on its own grammar corpus, digits.
_LOCAL: dict[str, Any] = {
    "cycles": 5,
    "candidates_per_cycle": 48,
    "base_model": layout.bootstrap_model("default"),
    "corpus": "seed",
    "seed": 0,
    "baseline": True,
    "task": {
        "task": "img-classification",
        "dataset": "digits",
        "template": "",  # the generator's default (plain)
        "reference_accuracy": 0.0,
        "reference_code": "",
        "show_budget": True,
    },
    "sampling": {"temperature": 0.8, "top_p": 0.95, "top_k": 0, "max_tokens": 600, "stop": []},
    # Only what differs from the default protocol (nasloop.protocol): LEMUR's one epoch.
    "protocol": {
        "time_limit_s": 120.0,
        "max_parameters": 1_000_000,  # stated in the prompt: a budget the bootstrap LM saw
    },
    "novelty": {
        "corpus_namespace": "corpus",
        "params": {"mode": "canonical", "shingle_size": 7, "num_perm": 128, "threshold": 0.85},
    },
    "selection": {
        # Only the clearly good answers teach: 0.5 taught validity but not accuracy (mean
        # accuracy +5-7 points, not significant, on two seeds); 0.8 gave +11.5, significant
        # (docs/benchmarks.md, "Does the loop learn?").
        "min_accuracy": 0.8,
        "top_up_to": 8,
        "top_up_min_accuracy": 0.3,
        "max_per_cycle": 16,
        "objectives": ["accuracy"],
    },
    # The paper's loop: every prompt is the task alone (loop/plan.py).
    "search": {"strategy": "plain", "parent_share": 0.5, "mode": "full"},
    "training": {
        "lora": {"r": 16, "alpha": 32.0, "dropout": 0.05, "target_modules": PROJECTIONS},
        "lr": 1e-3,
        "epochs": 3,
        "batch_size": 8,
        "grad_accum": 1,
        "precision": "auto",
        "continual": True,
        "max_seq_len": 0,
    },
}
# The paper's settings (DESIGN.md, "The reference result to beat"), GPU cluster: what differs
# from the local preset (its protocol is stated below, whole).
_PAPER: dict[str, Any] = {
    "cycles": 22,
    "candidates_per_cycle": 150,
    "base_model": "deepseek-ai/deepseek-coder-7b-instruct-v1.5",
    "corpus": "lemur",
    "task": {"dataset": "cifar10", "template": "instruct", "show_budget": False},
    "sampling": {"temperature": 0.7, "top_k": 100, "max_tokens": 2048},
    "novelty": {"params": {"mode": "raw"}},
    "selection": {
        "min_accuracy": 0.40,
        "top_up_to": 15,
        "top_up_min_accuracy": 0.35,
        "max_per_cycle": 0,
    },
    "training": {
        "lora": {"r": 32},
        "lr": 1e-5,
        "epochs": 5,
        "batch_size": 1,
        "grad_accum": 8,
        "precision": "bf16",
    },
}
PRESETS: dict[str, dict[str, Any]] = {
    "local": _LOCAL,
    # A protocol section replaces local's whole, not merged: it states only what differs from
    # its named protocol. The evaluator's paper protocol (nasloop.protocol.NAMED): CIFAR-10 as
    # LEMUR's norm_256_flip sees it, a parameter limit that admits VGG (≈ 129 M).
    "paper": {**_merged(_LOCAL, _PAPER), "protocol": {"name": "paper", "time_limit_s": 600.0}},
}


# -- the model ---------------------------------------------------------------------------------
_Section = protocol.Section  # every section's rules, the protocol section's too


class TaskSection(_Section):
    task: Literal["img-classification"]
    dataset: str
    template: Literal["", "plain", "instruct"] = Field(description='"" = the generator default')
    reference_accuracy: float = Field(ge=0, le=1, description="0 = not shown")
    reference_code: str
    show_budget: bool = Field(description="state protocol.max_parameters in the prompt")

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, v: str) -> str:
        return check_known("dataset", v, DATASETS)


class SamplingSection(_Section):
    temperature: float = Field(ge=0, le=2, description="0 = greedy")
    top_p: float = Field(gt=0, le=1)
    top_k: int = Field(ge=0, description="0 = disabled")
    max_tokens: int = Field(ge=1, le=1 << 17)
    stop: list[str] = Field(max_length=16)

    @field_validator("stop")
    @classmethod
    def _non_empty(cls, v: list[str]) -> list[str]:
        if any(not s for s in v):
            raise ValueError("stop strings must be non-empty")
        return v


class NoveltyParams(_Section):
    mode: Literal["canonical", "raw"]
    shingle_size: int = Field(ge=1, le=64)
    num_perm: int = Field(ge=16, le=1024)
    threshold: float = Field(gt=0, lt=1)


class NoveltySection(_Section):
    corpus_namespace: str = Field(
        pattern=r"^([a-z0-9][a-z0-9._-]{0,62})?$", description='"" = no shared corpus'
    )
    params: NoveltyParams


class SelectionSection(_Section):
    min_accuracy: float = Field(ge=0, le=1)
    top_up_to: int = Field(ge=0)
    top_up_min_accuracy: float = Field(ge=0, le=1)
    max_per_cycle: int = Field(ge=0, description="0 = no cap")
    objectives: list[str] = Field(
        description="[accuracy], [accuracy, parameters] or [accuracy, macs]: maximise accuracy "
        "(and minimise parameter_count or macs) by non-dominated sorting "
        "(services/controller/loop/selection.py)"
    )

    @field_validator("objectives")
    @classmethod
    def _known_objectives(cls, v: list[str]) -> list[str]:
        for o in v:
            check_known("objective", o, OBJECTIVES)
        if v not in OBJECTIVE_LISTS:
            *first, last = (f"[{', '.join(o)}]" for o in OBJECTIVE_LISTS)
            raise ValueError(f"expected {', '.join(first)} or {last}, got {v}")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> SelectionSection:
        if self.top_up_min_accuracy > self.min_accuracy:
            raise ValueError(
                f"top_up_min_accuracy {self.top_up_min_accuracy} is above "
                f"min_accuracy {self.min_accuracy}"
            )
        return self


class SearchSection(_Section):
    strategy: Literal["plain", "archive"] = Field(
        description='"plain": the task alone in every prompt (the paper\'s loop); "archive": '
        "a share of each cycle's prompts carry a parent from the earlier cycles' archive"
    )
    parent_share: float = Field(ge=0, le=1, description="share of a cycle's prompts with a parent")
    mode: Literal["full", "diff"] = Field(
        description='how an answer improves its parent: "full" module or unified "diff"'
    )


class LoraSection(_Section):
    r: int
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)

    @field_validator("r")
    @classmethod
    def _servable(cls, v: int) -> int:
        return check_rank(v)

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        for m in v:
            if not m.replace(".", "_").isidentifier():
                raise ValueError(f"{m!r} is not a module name")
        check_targets(v)
        if len(set(v)) != len(v):
            raise ValueError("duplicate module names")
        return v


class TrainingSection(_Section):
    lora: LoraSection
    lr: float = Field(gt=0, le=1)
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(ge=1, le=4096)
    grad_accum: int = Field(ge=1, le=4096)
    precision: Literal["auto", "fp32", "bf16", "qlora-4bit"]
    continual: bool = Field(description="continue from the previous cycle's adapter")
    max_seq_len: int = Field(ge=0, le=1 << 17, description="0 = the model's context")


class RunSpec(_Section):
    name: str | None = None
    preset: Literal["local", "paper"]
    cycles: int = Field(ge=1, le=MAX_CYCLE)
    candidates_per_cycle: int = Field(ge=1, le=4096)
    base_model: str = Field(min_length=1, description="store prefix, HF id or path")
    corpus: str = Field(min_length=1, description="corpora/<name> in the store")
    seed: int = Field(ge=0, le=MAX_SEED)
    baseline: bool = Field(
        description="after the last cycle, the base model (no adapter) answers the last "
        "cycle's prompts with its seeds, evaluated the same way (runs/<run>/baseline/)"
    )
    task: TaskSection
    sampling: SamplingSection
    protocol: ProtocolSettings = Field(default_factory=ProtocolSettings)
    novelty: NoveltySection
    selection: SelectionSection
    search: SearchSection
    training: TrainingSection

    @field_validator("name")
    @classmethod
    def _run_name(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                check_run_name(v)
            except InvalidName as e:
                raise ValueError(str(e)) from None
        return v


# -- derived messages --------------------------------------------------------------------------
PRECISIONS = {
    "auto": trainer_pb2.PRECISION_UNSPECIFIED,
    "fp32": trainer_pb2.PRECISION_FP32,
    "bf16": trainer_pb2.PRECISION_BF16,
    "qlora-4bit": trainer_pb2.PRECISION_QLORA_4BIT,
}
_MODE = {"canonical": novelty_pb2.TOKEN_MODE_CANONICAL, "raw": novelty_pb2.TOKEN_MODE_RAW}


def _image_shape(spec: RunSpec) -> tuple[int, ...]:
    channels, height, width = DATASETS[spec.task.dataset].image_shape
    size = spec.protocol.input_size
    return (channels, size, size) if size else (channels, height, width)


def _derived(spec: RunSpec) -> dict[tuple[str, str], Any]:
    """Fields of the proto RunSpec that follow from the spec, with their values."""
    shape = DATASETS[spec.task.dataset]
    return {
        ("task", "in_shape"): [spec.protocol.batch_size, *_image_shape(spec)],
        ("task", "out_shape"): [shape.num_classes],
        ("task", "parameter_budget"): spec.protocol.max_parameters if spec.task.show_budget else 0,
        ("protocol", "dataset"): spec.task.dataset,
        ("protocol", "seed"): spec.seed,
        ("sampling", "seed"): spec.seed,
    }


_DERIVED_FROM = {
    ("task", "in_shape"): "protocol.batch_size, protocol.input_size and task.dataset",
    ("task", "out_shape"): "task.dataset",
    ("task", "parameter_budget"): "protocol.max_parameters and task.show_budget",
    ("protocol", "dataset"): "task.dataset",
    ("protocol", "seed"): "seed",
    ("sampling", "seed"): "seed",
}


def task_spec(spec: RunSpec) -> common_pb2.TaskSpec:
    d = _derived(spec)
    t = spec.task
    return common_pb2.TaskSpec(
        task=t.task,
        dataset=t.dataset,
        in_shape=d["task", "in_shape"],
        out_shape=d["task", "out_shape"],
        parameter_budget=d["task", "parameter_budget"],
        reference_accuracy=t.reference_accuracy,
        reference_code=t.reference_code,
        template=t.template,
    )


def evaluation_protocol(spec: RunSpec) -> common_pb2.EvaluationProtocol:
    return protocol.to_message(spec.protocol, dataset=spec.task.dataset, seed=spec.seed)


def sampling_params(spec: RunSpec, seed: int) -> common_pb2.SamplingParams:
    s = spec.sampling
    return common_pb2.SamplingParams(
        temperature=s.temperature,
        top_p=s.top_p,
        top_k=s.top_k or -1,  # the proto's 0 means "server default", -1 "disabled"
        max_tokens=s.max_tokens,
        seed=seed,
        stop=s.stop,
    )


def lora_config(spec: RunSpec) -> common_pb2.LoraConfig:
    lo = spec.training.lora
    return LoraSettings(lo.r, lo.alpha, lo.dropout, tuple(lo.target_modules)).to_proto()


def namespace_params(spec: RunSpec) -> novelty_pb2.NamespaceParams:
    p = spec.novelty.params
    return novelty_pb2.NamespaceParams(
        mode=_MODE[p.mode], shingle_size=p.shingle_size, num_perm=p.num_perm, threshold=p.threshold
    )


def spec_to_proto(spec: RunSpec) -> controller_pb2.RunSpec:
    """The spec as a proto (``max_seq_len`` has no proto field and is not carried)."""
    sampling = sampling_params(spec, 0)
    sampling.ClearField("seed")
    t, s = spec.training, spec.selection
    return controller_pb2.RunSpec(
        name=spec.name or "",
        preset=spec.preset,
        cycles=spec.cycles,
        candidates_per_cycle=spec.candidates_per_cycle,
        base_model=spec.base_model,
        corpus=spec.corpus,
        task=task_spec(spec),
        sampling=sampling,
        protocol=evaluation_protocol(spec),
        novelty=controller_pb2.NoveltySettings(
            corpus_namespace=spec.novelty.corpus_namespace, params=namespace_params(spec)
        ),
        selection=message_from(controller_pb2.SelectionPolicy, s),
        training=message_from(
            controller_pb2.TrainingSettings,
            t,
            lora=lora_config(spec),
            precision=PRECISIONS[t.precision],
        ),
        seed=spec.seed,
        baseline=spec.baseline,
        search=controller_pb2.SearchSettings(**spec.search.model_dump()),
    )


def spec_from_proto(msg: controller_pb2.RunSpec) -> dict[str, Any]:
    """Overrides for ``load_spec(extra=...)``: only the fields set in ``msg``.

    proto3 cannot tell a zero from an unset field, so zero values (``continual: false``,
    ``max_per_cycle: 0``, ``precision: auto``, ...) leave the preset's value in place. Derived
    fields (task shapes and budget, protocol dataset and seed, sampling seed) are kept and
    checked by ``load_spec`` against the values the spec implies."""
    d = json_format.MessageToDict(msg, preserving_proto_field_name=True)
    if "seed" in d:
        d["seed"] = int(d["seed"])
    task = d.get("task", {})
    for k in ("in_shape", "out_shape"):
        if k in task:
            task[k] = [int(x) for x in task[k]]
    if "parameter_budget" in task:
        task["parameter_budget"] = int(task["parameter_budget"])
    if "in_shape" in task or "parameter_budget" in task:  # a full TaskSpec: the budget is shown
        task["show_budget"] = task.get("parameter_budget", 0) != 0  # iff it is non-zero
    if msg.HasField("protocol"):
        d["protocol"] = protocol.message_fields(msg.protocol)
    if "seed" in d.get("sampling", {}):
        d["sampling"]["seed"] = int(d["sampling"]["seed"])
    if d.get("sampling", {}).get("top_k") == -1:
        d["sampling"]["top_k"] = 0
    params = d.get("novelty", {}).get("params", {})
    if "mode" in params:
        params["mode"] = {"TOKEN_MODE_CANONICAL": "canonical", "TOKEN_MODE_RAW": "raw"}.get(
            params["mode"], params["mode"]
        )
    training = d.get("training", {})
    if "precision" in training:
        names = {trainer_pb2.Precision.Name(v): k for k, v in PRECISIONS.items()}
        training["precision"] = names.get(training["precision"], training["precision"])
    return d


# -- loading -----------------------------------------------------------------------------------
def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpecError([f"{source}: not valid YAML: {' '.join(str(e).split())}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError([f"{source}: a run spec is a YAML mapping, got {type(data).__name__}"])
    return data


def _parse_set(item: str) -> tuple[list[str], Any]:
    key, eq, raw = item.partition("=")
    path = key.strip().split(".")
    if not eq or not all(path):
        raise SpecError([f"--set {item!r}: expected key=value with a dotted key"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise SpecError([f"{key}: --set value {raw!r} is not valid YAML"]) from None
    return path, value


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def _near(loc: Sequence[Any]) -> str:
    """' (did you mean X?)' for an unknown key, from the fields of the model at that place."""
    cls: type[BaseModel] = RunSpec
    for part in loc[:-1]:
        field = cls.model_fields.get(str(part))
        ann = field.annotation if field else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return ""
        cls = ann
    close = difflib.get_close_matches(str(loc[-1]), list(cls.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _problems(err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        if e["type"] == "extra_forbidden":
            why = "unknown key" + _near(e["loc"])
        elif e["type"] == "missing":
            why = "missing"
        else:
            why = e["msg"].removeprefix("Value error, ")
        out.append(f"{_dotted(e['loc']) or 'spec'}: {why}")
    return out


def load_spec(
    preset: str | None = None,
    spec_file: str | Path | None = None,
    spec_yaml: str | None = None,
    overrides: Sequence[str] = (),
    extra: Mapping[str, Any] | None = None,
) -> RunSpec:
    """The run spec from a preset, a YAML file, YAML text, ``extra`` and ``--set`` overrides."""
    layers: list[dict[str, Any]] = []
    if spec_file is not None:
        try:
            text = Path(spec_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SpecError([f"{spec_file}: cannot read: {e}"]) from None
        layers.append(_read_yaml(text, str(spec_file)))
    if spec_yaml is not None:
        layers.append(_read_yaml(spec_yaml, "spec yaml"))
    sets = [_parse_set(s) for s in overrides]

    problems: list[str] = []
    for key in _DERIVED_FROM:  # stated once: a spec never sets a derived field itself
        given = any(isinstance(x.get(key[0]), dict) and key[1] in x[key[0]] for x in layers)
        if given or any(tuple(p) == key for p, _ in sets):
            problems.append(f"{'.'.join(key)}: derived from {_DERIVED_FROM[key]}; set that instead")
    extra = copy.deepcopy(dict(extra or {}))
    stated: dict[tuple[str, str], Any] = {}
    for key in _DERIVED_FROM:
        section = extra.get(key[0])
        if isinstance(section, dict) and key[1] in section:
            stated[key] = section.pop(key[1])

    chosen = preset
    for layer in [*layers, extra]:
        if layer.get("preset") is not None:
            chosen = layer["preset"]
    for path, value in sets:
        if path == ["preset"]:
            chosen = value
    chosen = chosen or "local"
    if not isinstance(chosen, str) or chosen not in PRESETS:
        raise SpecError([f"preset: unknown preset {chosen!r}; known: {', '.join(PRESETS)}"])

    data = copy.deepcopy(PRESETS[chosen])
    for layer in [*layers, extra]:
        _merge(data, layer)
    for path, value in sets:
        node = data
        for i, part in enumerate(path[:-1]):
            if part not in node:
                node[part] = {}
            if not isinstance(node[part], dict):
                problems.append(f"{'.'.join(path[: i + 1])}: not a mapping; cannot set {path[-1]}")
                break
            node = node[part]
        else:
            node[path[-1]] = value
    data["preset"] = chosen
    if problems:
        raise SpecError(problems)
    try:
        spec = RunSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_problems(e)) from None

    derived = _derived(spec)
    for key, value in stated.items():
        want = derived[key]
        try:
            same = [int(x) for x in value] == want if isinstance(want, list) else value == want
        except (TypeError, ValueError):
            same = False
        if not same:
            problems.append(
                f"{'.'.join(key)}: {value!r} disagrees with {want!r} "
                f"(derived from {_DERIVED_FROM[key]})"
            )
    if problems:
        raise SpecError(problems)
    return spec


def dump_spec(spec: RunSpec) -> str:
    """The spec as YAML, in field order; ``load_spec(spec_yaml=dump_spec(s)) == s``."""
    return yaml.safe_dump(spec.model_dump(), sort_keys=False, allow_unicode=True)
