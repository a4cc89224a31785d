"""Named evaluation protocols and how a request's protocol message is resolved against them."""

from __future__ import annotations

from dataclasses import replace

from nasloop.config import EvaluatorConfig
from nasloop.rpc import InvalidArgument
from nasloop.v1 import common_pb2 as common
from services.evaluator.task import Protocol

DEFAULT = "lemur-1epoch"
# The paper preset admits LEMUR's large classics (VGG-16 ≈ 138 M, VGG ≈ 129 M on 10 classes).
PAPER_MAX_PARAMETERS = 150_000_000
PAPER_INPUT_SIZE = 256  # LEMUR's default transform, norm_256_flip


def named(cfg: EvaluatorConfig) -> dict[str, Protocol]:
    """The protocols a request may name; the evaluator's config fills dataset and limits."""
    lemur = Protocol(
        name="lemur-1epoch",  # DESIGN.md: the paper's evaluation
        dataset=cfg.dataset,
        epochs=1,
        batch_size=16,
        lr=0.01,
        momentum=0.9,
        dropout=0.2,
        seed=42,
        train_subset=0,
        test_subset=0,
        failure_floor=0.12,
        time_limit_s=cfg.time_limit_s,
        max_parameters=cfg.max_parameters,
        device=cfg.device,
    )
    quick = replace(lemur, name="quick", train_subset=512, test_subset=256)
    paper = replace(
        lemur,
        # DESIGN.md presets: CIFAR-10 seen as LEMUR's norm_256_flip sees it: Resize(256),
        # CenterCrop(256), RandomHorizontalFlip, normalised (services.evaluator.lemur)
        name="paper",
        dataset="cifar10",
        input_size=PAPER_INPUT_SIZE,
        random_resized_crop=False,
        horizontal_flip=True,
        max_parameters=max(cfg.max_parameters, PAPER_MAX_PARAMETERS),
    )
    return {p.name: p for p in (lemur, quick, paper)}


def resolve(msg: common.EvaluationProtocol, cfg: EvaluatorConfig) -> Protocol:
    """The request's protocol: the named base with the message's set fields on top."""
    protocols = named(cfg)
    name = msg.name or DEFAULT
    if name not in protocols:
        raise InvalidArgument(f"unknown protocol {name!r}; known: {', '.join(sorted(protocols))}")
    base = protocols[name]
    try:
        p = replace(
            base,
            dataset=msg.dataset or base.dataset,
            epochs=msg.epochs or base.epochs,
            batch_size=msg.batch_size or base.batch_size,
            lr=msg.lr or base.lr,
            momentum=msg.momentum if msg.HasField("momentum") else base.momentum,
            dropout=msg.dropout if msg.HasField("dropout") else base.dropout,
            seed=msg.seed if msg.HasField("seed") else base.seed,
            train_subset=msg.train_subset or base.train_subset,
            test_subset=msg.test_subset or base.test_subset,
            failure_floor=(
                msg.failure_floor if msg.HasField("failure_floor") else base.failure_floor
            ),
            time_limit_s=msg.time_limit_s or base.time_limit_s,
            max_parameters=msg.max_parameters or base.max_parameters,
            device=msg.device or base.device,
            hyperparameters={**base.hyperparameters, **dict(msg.hyperparameters)},
            dataset_source=msg.dataset_source or base.dataset_source,
            input_size=msg.input_size or base.input_size,
            random_resized_crop=(
                msg.random_resized_crop
                if msg.HasField("random_resized_crop")
                else base.random_resized_crop
            ),
            horizontal_flip=(
                msg.horizontal_flip if msg.HasField("horizontal_flip") else base.horizontal_flip
            ),
        )
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
