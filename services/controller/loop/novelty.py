"""The novelty step: a verdict for each valid answer against the run's namespace (and the
corpus namespace, consulted), recorded on its durable result."""

from __future__ import annotations

from collections.abc import Callable

import grpc

from nasloop import layout
from nasloop.records import NoveltyVerdict
from nasloop.store import ObjectStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import novelty_pb2
from services.controller.clients import NoveltyClient
from services.controller.loop import state as st
from services.controller.loop.runner import Context, CycleError, describe
from services.controller.runspec import RunSpec, namespace_params

NOVELTY_BATCH = 512

# Verdicts for candidates in order, given the run's namespace and those consulted; None where
# there is no verdict to record.
Verdicts = Callable[
    [Context, str, list[str], list[common.Candidate]], list[novelty_pb2.CheckResult | None]
]


def check_and_add(
    ctx: Context, own: str, consult: list[str], candidates: list[common.Candidate]
) -> list[novelty_pb2.CheckResult | None]:
    """A cycle's verdicts: the novel answers are added to the run's namespace."""
    return list(ctx.services.novelty.batch_check_and_add(own, consult, candidates))


def novelty(ctx: Context, progress: st.CycleProgress, verdicts: Verdicts) -> None:
    """Record ``verdicts`` of the cycle's valid answers on their durable results."""
    records = st.load_evaluated(ctx.store, ctx.run, ctx.cycle)
    params = namespace_params(ctx.spec)
    own = layout.run_namespace(ctx.run)
    consult = [ctx.spec.novelty.corpus_namespace] if ctx.spec.novelty.corpus_namespace else []
    valid = [records[i] for i in sorted(records) if records[i].valid]
    try:
        with ctx.calls.busy.call():
            seed_corpus_namespace(ctx.services.novelty, ctx.store, ctx.spec)
            ctx.services.novelty.ensure_namespace(own, params)
            found: list[novelty_pb2.CheckResult | None] = []
            for i in range(0, len(valid), NOVELTY_BATCH):
                chunk = valid[i : i + NOVELTY_BATCH]
                found += verdicts(ctx, own, consult, [r.candidate() for r in chunk])
    except grpc.RpcError as e:
        raise CycleError(describe("novelty", e)) from e
    for record, v in zip(valid, found, strict=True):
        if v is None:  # no verdict to record (a baseline without a check-only call)
            continue
        record.novelty = NoveltyVerdict(
            v.novel, v.added, v.max_similarity, v.nearest_id, v.nearest_namespace
        )
        st.save_evaluated(ctx.store, record)


def seed_corpus_namespace(novelty: NoveltyClient, store: ObjectStore, spec: RunSpec) -> None:
    """The corpus namespace holds the run's seed corpus (idempotent: ids already there are
    skipped, and a namespace holding as many entries as the corpus is only read, never written:
    with mutual TLS a cycle Job may not write to it, so in cluster mode the controller seeds it
    before it starts the Job)."""
    ns, corpus = spec.novelty.corpus_namespace, spec.corpus
    if not ns or not corpus:
        return
    from nasloop.corpus.records import CorpusNotFound, load_corpus

    try:
        records = load_corpus(store, corpus)
    except CorpusNotFound:
        raise CycleError(
            f"no corpus {corpus!r} in the store (nasloop corpus seed --name {corpus})"
        ) from None
    try:
        if novelty.get_namespace(ns).entries >= len(records):
            return
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
    novelty.ensure_namespace(ns, namespace_params(spec))
    candidates = [r.candidate() for r in records]
    for i in range(0, len(candidates), NOVELTY_BATCH):
        novelty.add(ns, candidates[i : i + NOVELTY_BATCH])
