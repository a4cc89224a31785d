"""The evaluation protocol: how a candidate is trained and scored, defined once.

Its fields, their defaults (LEMUR's one-epoch evaluation, DESIGN.md), limits and checks live
here, with the named protocols as what each changes from those defaults. The run spec's
``protocol`` section is ``ProtocolSettings`` (a preset states only what differs); the evaluator
resolves a request into a ``Protocol`` (every field set) and checks it with the same limits.
``to_message`` and ``message_fields`` are the one conversion to and from the
``EvaluationProtocol`` message.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from nasloop.v1 import common_pb2

DEFAULT_NAME = "lemur-1epoch"  # the evaluator's protocol for a request that names none
DEFAULT_SEED = 42  # the evaluator's seed for a request that sets none
DEFAULT_TIME_LIMIT_S = 300.0
DEFAULT_MAX_PARAMETERS = 20_000_000
MAX_TIME_LIMIT_S = 24 * 3600
MAX_SEED = 2**63 - 1
# The paper protocol admits LEMUR's large classics (VGG-16 ≈ 138 M, VGG ≈ 129 M on 10 classes).
PAPER_MAX_PARAMETERS = 150_000_000
PAPER_INPUT_SIZE = 256  # LEMUR's default transform, norm_256_flip

# What each named protocol changes from the defaults (ProtocolSettings' fields, and the dataset).
NAMED: dict[str, dict[str, Any]] = {
    DEFAULT_NAME: {},  # DESIGN.md: the paper's evaluation
    "quick": {"train_subset": 512, "test_subset": 256},
    # DESIGN.md presets: CIFAR-10 seen as LEMUR's norm_256_flip sees it: Resize(256),
    # CenterCrop(256), RandomHorizontalFlip, normalised (services.evaluator.lemur)
    "paper": {
        "dataset": "cifar10",
        "input_size": PAPER_INPUT_SIZE,
        "random_resized_crop": False,
        "horizontal_flip": True,
        "max_parameters": PAPER_MAX_PARAMETERS,
    },
}
NAMES = ("", *NAMED)  # "" = the evaluator's default


class Section(BaseModel):
    """A section of a run spec: unknown keys are refused, assignments are validated, and a
    number given for a string is read as that string."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, coerce_numbers_to_str=True)


def check_known(kind: str, value: str, known: Collection[str], *, quoted: bool = False) -> str:
    """``value`` if it is one of ``known``, else ValueError ``unknown <kind> 'x'; known: a, b``
    (a section's validators' message; ``quoted`` shows the known names as reprs)."""
    if value not in known:
        names = map(repr, known) if quoted else known
        raise ValueError(f"unknown {kind} {value!r}; known: {', '.join(names)}")
    return value


class ProtocolSettings(Section):
    """What a run asks of the evaluator (a run spec's ``protocol`` section), with its limits.

    A field left out takes the named protocol's value, else the default below. The dataset and
    the seed are not here: a run spec states them once (``task.dataset``, ``seed``)."""

    name: str = Field(
        default="", description='named evaluator protocol; "" = the evaluator default'
    )
    epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=16, ge=1, le=4096)
    lr: float = Field(default=0.01, gt=0, le=10)
    momentum: float = Field(default=0.9, ge=0, le=1)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    hyperparameters: dict[str, float] = Field(default_factory=dict)
    train_subset: int = Field(default=0, ge=0, description="0 = all")
    test_subset: int = Field(default=0, ge=0, description="0 = all")
    failure_floor: float = Field(default=0.12, ge=0, lt=1)
    time_limit_s: float = Field(default=DEFAULT_TIME_LIMIT_S, gt=0, le=MAX_TIME_LIMIT_S)
    max_parameters: int = Field(default=DEFAULT_MAX_PARAMETERS, ge=1)
    device: Literal["", "cpu", "cuda"] = Field(
        default="", description='"" = the evaluator\'s device'
    )
    dataset_source: str = ""
    input_size: int = Field(
        default=0, ge=0, le=1024, description="resize images to this; 0 = as they are"
    )
    random_resized_crop: bool = False
    horizontal_flip: bool = False

    @model_validator(mode="before")
    @classmethod
    def _named_defaults(cls, data: Any) -> Any:
        """Fields left out take the named protocol's values."""
        if not isinstance(data, dict) or not isinstance(data.get("name"), str):
            return data
        named = NAMED.get(data["name"], {})
        return {**{k: v for k, v in named.items() if k in cls.model_fields}, **data}

    @field_validator("name")
    @classmethod
    def _known_protocol(cls, v: str) -> str:
        return check_known("protocol", v, NAMES, quoted=True)

    @field_validator("hyperparameters")
    @classmethod
    def _prm(cls, v: dict[str, float]) -> dict[str, float]:
        for k, x in v.items():
            if not k.isidentifier():
                raise ValueError(f"hyperparameter name {k!r} is not an identifier")
            if not 0 <= x <= 1:
                raise ValueError(f"hyperparameter {k!r} must be in [0, 1], got {x}")
        return dict(sorted(v.items()))


@dataclass(frozen=True)
class Protocol:
    """A fully resolved evaluation protocol (every field set), as the evaluator runs it.

    It crosses process boundaries (a sandbox worker, a Kubernetes pod) as JSON, so it holds only
    plain values."""

    name: str
    dataset: str
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    dropout: float
    seed: int
    train_subset: int
    test_subset: int
    failure_floor: float
    time_limit_s: float
    max_parameters: int
    device: str
    hyperparameters: dict[str, float] = field(default_factory=dict)
    dataset_source: str = ""
    # LEMUR's transforms (services.evaluator.lemur.Transform); 0/False = none.
    input_size: int = 0
    random_resized_crop: bool = False
    horizontal_flip: bool = False

    def prm(self) -> dict[str, float]:
        """The ``prm`` dict a candidate's ``Net`` receives (LEMUR: values in [0, 1] + batch)."""
        return {
            **self.hyperparameters,
            "lr": self.lr,
            "momentum": self.momentum,
            "dropout": self.dropout,
            "batch": self.batch_size,
        }

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field out of range (ProtocolSettings' limits)."""
        if self.device not in ("cpu", "cuda"):
            raise ValueError("device must be 'cpu' or 'cuda'")
        if not 0 <= self.seed <= MAX_SEED:
            raise ValueError("seed must be in [0, 2^63)")
        values = {k: v for k, v in asdict(self).items() if k in ProtocolSettings.model_fields}
        try:
            ProtocolSettings.model_validate(values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(x) for x in first["loc"])
            raise ValueError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


def to_message(
    settings: ProtocolSettings, *, dataset: str, seed: int
) -> common_pb2.EvaluationProtocol:
    """The message asking for ``settings`` on ``dataset`` with ``seed`` (every field set)."""
    return common_pb2.EvaluationProtocol(dataset=dataset, seed=seed, **settings.model_dump())


def message_fields(msg: common_pb2.EvaluationProtocol) -> dict[str, Any]:
    """The fields set in ``msg`` (non-zero, or present where the field tracks presence), as
    plain values: what a request changes on top of its named protocol."""
    return {
        fd.name: dict(value) if fd.name == "hyperparameters" else value
        for fd, value in msg.ListFields()
    }
