"""Attacks on the reward (issue 18): each class of the issue's "Why" must gain nothing through
the real evaluator service (strict sandbox, real torch, real gRPC).

The honest level is the good network's accuracy in the same request (``quick`` protocol on
digits, one seed); an attack gains nothing when it is refused with one of its statuses, or runs
and scores at most that plus :data:`MARGIN`. Every attack here raises the score well past the
margin where its hole is open (docs/benchmarks.md, issue 18).
"""

from __future__ import annotations

import pytest
from servers import Server

from adversarial import replay, reward
from nasloop.rpc import connect
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import evaluator_pb2 as pb
from nasloop.v1 import evaluator_pb2_grpc as pb_grpc

PROTOCOL = common.EvaluationProtocol(name="quick", dataset="digits", time_limit_s=60, seed=7)
# Above the honest network's accuracy that still counts as no gain (one seed, same data).
MARGIN = 0.10
RAN = ("STATUS_OK", "STATUS_LOW_ACCURACY")
HONEST = "honest_small_cnn"

# name -> (code, statuses that refuse it, words the refusal's message must contain)
Attacks = dict[str, tuple[str, tuple[str, ...], str]]
ATTACKS: Attacks = {
    "replay_through_copied_layers": (
        reward.REPLAY_THROUGH_COPIED_LAYERS, ("STATUS_PROTOCOL_VIOLATION",), ""
    ),
    "meter_off_through_global_hooks": (
        reward.METER_OFF_THROUGH_GLOBAL_HOOKS, ("STATUS_PROTOCOL_VIOLATION",), ""
    ),
    "train_in_setup_from_file": (
        reward.TRAIN_IN_SETUP_FROM_FILE, ("STATUS_PROTOCOL_VIOLATION",), ""
    ),
    "nearest_neighbour_over_file": (reward.NEAREST_NEIGHBOUR_OVER_FILE, (), ""),
    "literal_label_table": (
        reward.literal_label_table(), ("STATUS_FORBIDDEN_CONSTRUCT",), "literal data"
    ),
    "rebuild_from_package_file": (reward.REBUILD_FROM_PACKAGE_FILE, (), ""),
    "hidden_state_in_a_list": (
        reward.HIDDEN_STATE_IN_A_LIST, ("STATUS_PARAMETER_LIMIT",), "parameters"
    ),
}  # fmt: skip


def evaluate(server: Server, candidates: dict[str, str]) -> dict[str, pb.EvaluationResult]:
    with connect(server.address) as ch:
        stub = pb_grpc.EvaluatorStub(ch)
        request = pb.EvaluateRequest(
            candidates=[common.Candidate(id=k, code=v) for k, v in candidates.items()],
            protocol=PROTOCOL,
        )
        return {r.candidate_id: r for r in stub.Evaluate(request, timeout=900)}


def gained(r: pb.EvaluationResult, honest: float, refused: tuple[str, ...], words: str) -> str:
    """Why ``r`` gained something ("" when it did not)."""
    status = common.Status.Name(r.result.status)
    if status in refused:
        return "" if words in r.result.message else f"refused without {words!r}: {r.result.message}"
    if status not in RAN:
        return f"ended {status} ({r.result.message}), neither refused nor scored"
    if r.result.metrics.accuracy > honest + MARGIN:
        return f"scored {r.result.metrics.accuracy:.3f} against the honest {honest:.3f}"
    return ""


def with_honest(server: Server, attacks: Attacks) -> dict[str, pb.EvaluationResult]:
    """The attacks and the honest network, in one request."""
    return evaluate(server, {HONEST: reward.HONEST, **{k: v[0] for k, v in attacks.items()}})


def check(name: str, attacks: Attacks, results: dict[str, pb.EvaluationResult]) -> None:
    honest = results[HONEST]
    assert common.Status.Name(honest.result.status) in RAN, honest.result.message
    _, refused, words = attacks[name]
    r = results[name]
    why = gained(r, honest.result.metrics.accuracy, refused, words)
    assert not why, f"{name}: {why}; output: {r.output_tail[-800:]!r}"


@pytest.fixture(scope="module")
def honest_and_attacks(evaluator_server: Server) -> dict[str, pb.EvaluationResult]:
    return with_honest(evaluator_server, ATTACKS)


def test_the_honest_network_scores(honest_and_attacks) -> None:  # type: ignore[no-untyped-def]
    r = honest_and_attacks[HONEST]
    assert common.Status.Name(r.result.status) in RAN, r.result.message


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_the_attack_gains_nothing(name: str, honest_and_attacks) -> None:  # type: ignore[no-untyped-def]
    check(name, ATTACKS, honest_and_attacks)


def test_nothing_carries_from_one_candidate_to_the_next(evaluator_server: Server) -> None:
    """Two candidates leave a file in /dev/shm and /tmp (one on each worker: two idle workers
    take one each), then two more look for them on the same workers."""
    writers = evaluate(evaluator_server, {f"writer{i}": reward.carry_writer() for i in (1, 2)})
    for r in writers.values():  # /tmp is the candidate's to write: there is something to carry
        assert f"left {reward.CARRY_PATHS[1]}" in r.output_tail, r.output_tail
    readers = evaluate(evaluator_server, {f"reader{i}": reward.carry_reader() for i in (1, 2)})
    for name, r in readers.items():
        assert "nothing at" in r.output_tail or "found" in r.output_tail, r.output_tail
        assert reward.CARRY_VALUE not in r.output_tail, f"{name} read what a writer left"


# Replays spread evenly over the epoch (issue 18, item 2), the meter switched off first: each
# must be refused by the outside epoch check's reference budget (services/evaluator/epoch.py),
# not merely score low. The default protocol (90 batches): quick's 32 leave the fixed
# allowances a larger share (docs/benchmarks.md gives both).
REPLAY_PROTOCOL = common.EvaluationProtocol(dataset="digits", time_limit_s=120, seed=7)
REFERENCE_REFUSAL = "per training step of this architecture"
REPLAYS = {
    "each_batch_stepped_on_three_times": replay.echo(3),
    "two_earlier_batches_again_with_each_new_one": replay.interleaved(2),
    "replay_hidden_in_forward": replay.replay_in_forward(3),
    "replay_with_a_slow_eval_mode_forward": replay.slow_eval_forward(3, 4),
}
# What the reference step invites: a forward() that burns CPU time outside learn(), where the
# reference is timed, lends itself the budget for an even replay. Not closed (README).
INVITED = replay.burn_outside_learn(3, 4)


@pytest.fixture(scope="module")
def replays(evaluator_server: Server) -> dict[str, pb.EvaluationResult]:
    with connect(evaluator_server.address) as ch:
        stub = pb_grpc.EvaluatorStub(ch)
        nets = {"one_pass": replay.one_pass(), "invited": INVITED, **REPLAYS}
        request = pb.EvaluateRequest(
            candidates=[common.Candidate(id=k, code=v) for k, v in nets.items()],
            protocol=REPLAY_PROTOCOL,
        )
        return {r.candidate_id: r for r in stub.Evaluate(request, timeout=900)}


def test_one_pass_with_the_meter_switched_off_passes(replays) -> None:  # type: ignore[no-untyped-def]
    r = replays["one_pass"].result
    assert common.Status.Name(r.status) in RAN, r.message


@pytest.mark.parametrize("name", sorted(REPLAYS))
def test_the_even_replay_is_refused(name: str, replays) -> None:  # type: ignore[no-untyped-def]
    r = replays[name].result
    assert common.Status.Name(r.status) == "STATUS_PROTOCOL_VIOLATION", (name, r.message)
    assert REFERENCE_REFUSAL in r.message, r.message


@pytest.mark.xfail(
    strict=True,
    reason="a network that burns CPU time outside learn() inflates "
    "the reference step it is measured by (README: what remains possible)",
)
def test_a_forward_slow_outside_learn_does_not_lend_itself_a_budget(replays) -> None:  # type: ignore[no-untyped-def]
    r = replays["invited"].result
    assert common.Status.Name(r.status) == "STATUS_PROTOCOL_VIOLATION", r.message
