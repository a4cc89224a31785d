"""The evaluation protocol's one definition (nasloop/protocol.py), as the run spec and the
evaluator use it."""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

import pytest

from nasloop.config import EvaluatorConfig
from nasloop.protocol import NAMED, ProtocolSettings, message_fields, to_message
from services.controller.runspec import PRESETS, SpecError, evaluation_protocol, load_spec
from services.evaluator import protocols

# What the evaluator's configuration sets on a named protocol (its limits and device).
EVALUATOR_SET = {"time_limit_s", "max_parameters", "device"}


def test_the_message_carries_every_setting_and_back() -> None:
    s = ProtocolSettings(name="quick", epochs=3, momentum=0.0, hyperparameters={"wd": 0.5})
    msg = to_message(s, dataset="cifar10", seed=7)
    fields = message_fields(msg)
    assert (fields.pop("dataset"), fields.pop("seed")) == ("cifar10", 7)
    assert fields["momentum"] == 0.0  # a zero that is set stays set
    assert ProtocolSettings.model_validate(fields) == s


@pytest.mark.parametrize("name", list(NAMED))
def test_the_evaluator_and_the_run_spec_name_the_same_protocols(name: str) -> None:
    settings = ProtocolSettings(name=name).model_dump()
    resolved = asdict(protocols.named(EvaluatorConfig())[name])
    for key in settings.keys() - EVALUATOR_SET:
        assert settings[key] == resolved[key], key
    if "dataset" in NAMED[name]:
        assert resolved["dataset"] == NAMED[name]["dataset"]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_presets_state_only_what_differs_from_the_protocol(preset: str) -> None:
    stated: dict[str, Any] = PRESETS[preset]["protocol"]
    default = ProtocolSettings(name=stated.get("name", "")).model_dump()
    for key, value in stated.items():
        assert key == "name" or value != default[key], key


def test_a_run_naming_paper_gets_its_transforms() -> None:
    spec = load_spec("local", overrides=["protocol.name=paper"])
    p = spec.protocol
    assert (p.input_size, p.horizontal_flip, p.max_parameters) == (256, True, 1_000_000)
    msg = evaluation_protocol(spec)
    resolved = protocols.resolve(msg, EvaluatorConfig())
    assert (resolved.input_size, resolved.horizontal_flip) == (256, True)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("epochs", 101),
        ("batch_size", 0),
        ("lr", 0.0),
        ("momentum", 1.5),
        ("dropout", 1.0),
        ("failure_floor", -0.1),
        ("time_limit_s", 86401.0),
        ("input_size", 2048),
        ("hyperparameters", {"x": 2.0}),
    ],
)
def test_the_run_spec_and_the_evaluator_refuse_the_same_values(key: str, value: Any) -> None:
    with pytest.raises(SpecError, match=f"protocol.{key}"):
        load_spec("local", extra={"protocol": {key: value}})
    base = protocols.named(EvaluatorConfig())["quick"]
    with pytest.raises(ValueError, match=key):
        replace(base, **{key: value}).validate()
