"""A training job's spec from its request: the adapter's name (the caller's, else the trainer's
rule) and the LoRA settings (nasloop.lora's defaults and checks)."""

from __future__ import annotations

from typing import Any

import pytest

from nasloop.lora import DEFAULT_TARGETS, LoraSettings
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2, trainer_pb2
from services.trainer.spec import from_request


def request(**kw: Any) -> trainer_pb2.StartJobRequest:
    fields: dict[str, Any] = dict(
        base_model="models/tiny", training_pairs=common_pb2.ObjectRef(key="data/pairs.jsonl"),
        output_prefix="adapters/r/2", run="r", cycle=2,
    )  # fmt: skip
    return trainer_pb2.StartJobRequest(**{**fields, **kw})


def test_the_adapter_is_named_as_the_caller_asks() -> None:
    assert from_request(request(adapter_name="served-name"), "j").adapter_name == "served-name"
    assert from_request(request(), "j").adapter_name == "r-c2"  # no name asked: <run>-c<cycle>
    assert from_request(request(run=""), "j").adapter_name == "adapters-r-2"
    with pytest.raises(InvalidArgument, match="adapter_name"):
        from_request(request(adapter_name="bad name!"), "j")


def test_lora_settings_default_and_checked() -> None:
    assert from_request(request(), "j").lora == LoraSettings(32, 32.0, 0.05, DEFAULT_TARGETS)
    spec = from_request(request(lora=common_pb2.LoraConfig(r=8, dropout=0.0)), "j")
    assert spec.lora == LoraSettings(8, 8.0, 0.0, DEFAULT_TARGETS)
    with pytest.raises(InvalidArgument, match="not servable"):
        from_request(request(lora=common_pb2.LoraConfig(r=7)), "j")
    with pytest.raises(InvalidArgument, match="lm_head"):
        from_request(request(lora=common_pb2.LoraConfig(target_modules=["lm_head"])), "j")
    with pytest.raises(InvalidArgument, match=r"lora\.dropout"):
        from_request(request(lora=common_pb2.LoraConfig(dropout=1.0)), "j")
