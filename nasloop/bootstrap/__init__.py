"""The bootstrap code LM of the ``local`` preset: a small Llama trained from scratch on the seed
grammar's networks (prompt→code pairs, and parent→child edit pairs by the grammar's mutations),
published to the store as ``models/<name>/``."""

from nasloop.bootstrap.model import SIZES, Size, build_model, fetch_model, publish_model, sample
from nasloop.bootstrap.pretrain import (
    PretrainResult,
    RunMismatch,
    bootstrap_model,
    corpus_pairs,
    parameter_budget,
    pretrain,
    with_edit_shares,
)
from nasloop.bootstrap.tokenizer import CHAT_TEMPLATE, train_tokenizer

__all__ = [
    "CHAT_TEMPLATE",
    "SIZES",
    "PretrainResult",
    "RunMismatch",
    "Size",
    "bootstrap_model",
    "build_model",
    "corpus_pairs",
    "fetch_model",
    "parameter_budget",
    "pretrain",
    "publish_model",
    "sample",
    "train_tokenizer",
    "with_edit_shares",
]
