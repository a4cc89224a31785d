"""Building corpora into the store and seeding the novelty service's corpus namespace."""

from __future__ import annotations

import types
from collections.abc import Sequence

from nasloop.corpus.records import CorpusRecord, make_record

# The shapes seed networks are built for when their parameters are counted (digits/CIFAR).
IN_SHAPE = (16, 3, 32, 32)
OUT_SHAPE = (10,)
NOVELTY_BATCH = 512


def count_parameters(code: str, trainable_only: bool = False) -> int:
    """Parameters of a *trusted* network (the project's own grammar), built on the meta device
    so that nothing is allocated; 0 if it cannot be built. Untrusted code goes through the
    evaluator instead."""
    import torch

    module = types.ModuleType("seed")
    try:
        exec(compile(code, "<seed>", "exec"), module.__dict__)
        prm = {"lr": 0.01, "momentum": 0.9, "dropout": 0.2, "batch": IN_SHAPE[0]}
        with torch.device("meta"):
            net = module.Net(IN_SHAPE, OUT_SHAPE, prm, torch.device("meta"))
        return int(
            sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)
        )
    except Exception:
        return 0


def seed_corpus(count: int, seed: int = 0) -> list[CorpusRecord]:
    """The grammar's first ``count`` networks as corpus records (source "seed")."""
    from nasloop.corpus.grammar import generate

    return [
        make_record(net.code, "seed", id=net.id, parameter_count=count_parameters(net.code))
        for net in generate(count, seed=seed)
    ]


def seed_novelty(records: Sequence[CorpusRecord], address: str, namespace: str = "corpus") -> int:
    """Add the records to the novelty service's ``namespace`` (created if missing); records
    already there are skipped, so re-seeding is safe. Returns how many were added."""
    import grpc

    from nasloop.rpc import connect
    from nasloop.v1 import novelty_pb2 as pb
    from nasloop.v1 import novelty_pb2_grpc as pb_grpc

    added = 0
    with connect(address) as channel:
        stub = pb_grpc.NoveltyStub(channel)
        try:
            stub.CreateNamespace(pb.CreateNamespaceRequest(name=namespace))
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        for i in range(0, len(records), NOVELTY_BATCH):
            batch = [
                pb.BatchCheckAndAddRequest.Item(id=r.id, code=r.code)
                for r in records[i : i + NOVELTY_BATCH]
            ]
            reply = stub.Add(
                pb.AddRequest(namespace=namespace, items=batch, skip_existing=True), timeout=300
            )
            added += reply.added
    return added
