"""The protocols this evaluator runs (nasloop.protocol's named ones, within its configured
limits) and how a request's protocol message is resolved against them."""

from __future__ import annotations

from dataclasses import replace

from nasloop.config import EvaluatorConfig
from nasloop.protocol import (
    DEFAULT_NAME,
    DEFAULT_SEED,
    NAMED,
    Protocol,
    ProtocolSettings,
    message_fields,
)
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2 as common

DEFAULT = DEFAULT_NAME


def named(cfg: EvaluatorConfig) -> dict[str, Protocol]:
    """The protocols a request may name; the evaluator's config fills dataset and limits (a
    protocol that names its own dataset keeps it, and its own parameter limit if higher)."""
    out = {}
    for name, changes in NAMED.items():
        settings = ProtocolSettings(name=name)
        out[name] = Protocol(
            **{
                **settings.model_dump(),
                "dataset": changes.get("dataset", cfg.dataset),
                "seed": DEFAULT_SEED,
                "time_limit_s": cfg.time_limit_s,
                "max_parameters": max(cfg.max_parameters, changes.get("max_parameters", 0)),
                "device": cfg.device,
            }
        )
    return out


def resolve(msg: common.EvaluationProtocol, cfg: EvaluatorConfig) -> Protocol:
    """The request's protocol: the named base with the message's set fields on top."""
    protocols = named(cfg)
    name = msg.name or DEFAULT
    if name not in protocols:
        raise InvalidArgument(f"unknown protocol {name!r}; known: {', '.join(sorted(protocols))}")
    base = protocols[name]
    changes = message_fields(msg)
    changes["name"] = name
    changes["hyperparameters"] = {**base.hyperparameters, **changes.get("hyperparameters", {})}
    try:
        p = replace(base, **changes)
        p.validate()
    except ValueError as e:
        raise InvalidArgument(f"invalid protocol: {e}") from None
    if p.time_limit_s > cfg.time_limit_s:
        raise InvalidArgument(
            f"invalid protocol: time_limit_s {p.time_limit_s:g} is above this evaluator's "
            f"limit of {cfg.time_limit_s:g}"
        )
    if p.max_parameters > base.max_parameters:
        raise InvalidArgument(
            f"invalid protocol: max_parameters {p.max_parameters:,} is above protocol "
            f"{base.name!r}'s limit of {base.max_parameters:,}"
        )
    if p.device != cfg.device and cfg.executor == "local":
        raise InvalidArgument(f"invalid protocol: this evaluator runs on {cfg.device}")
    return p
