"""The generator service over real gRPC: the real vLLM CPU engine (started once for this module)
and the transformers backend, the tiny bootstrap model and LoRA adapters in a real S3 store."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from generator_world import SPEC, World, adapter_files, adapter_meta, build_world, publish_adapter
from servers import GRPCURL, Server, grpcurl, json_stream, service_server

from nasloop.rpc import connect
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import generator_pb2 as pb
from nasloop.v1 import generator_pb2_grpc as pb_grpc
from services.generator.backends import vllm_installed

TOKENS = 40


@pytest.fixture(scope="module")
def world(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(s3_endpoint, tmp_path_factory.mktemp("generator"))


def _server(world: World, backend: str, log) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    env = {**world.env, "NASLOOP_GENERATOR__BACKEND": backend}
    with service_server("generator", env, log, timeout_s=240) as server:
        yield server
        assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module", params=["vllm", "transformers"])
def server(request, world: World, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """One generator per backend; the vLLM one needs vllm installed (``make setup`` does)."""
    if request.param == "vllm" and not vllm_installed():
        pytest.fail("vLLM is not installed: run make setup")
    log = tmp_path_factory.mktemp(f"gen-{request.param}") / "server.log"
    yield from _server(world, request.param, log)


@pytest.fixture
def stub(server: Server) -> Iterator[pb_grpc.GeneratorStub]:
    with connect(server.address) as channel:
        yield pb_grpc.GeneratorStub(channel)


def generate(
    stub, seed: int = 7, n: int = 3, adapter: str = "", **kw
) -> list[pb.GeneratedCandidate]:  # type: ignore[no-untyped-def]
    sampling = common.SamplingParams(temperature=0.8, max_tokens=TOKENS, seed=seed)
    request = pb.GenerateRequest(spec=SPEC, n=n, sampling=sampling, adapter=adapter, **kw)
    return list(stub.Generate(request, timeout=120))


def texts(candidates: list[pb.GeneratedCandidate]) -> list[str]:
    return [c.candidate.raw_text for c in sorted(candidates, key=lambda c: c.index)]


def rpc_error(call, *args, **kw) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kw)
        if not isinstance(result, pb.AdapterInfo | pb.UnloadAdapterResponse):
            list(result)
    return info.value


def test_model_info_and_render_prompt(stub, server, request) -> None:  # type: ignore[no-untyped-def]
    info = stub.ModelInfo(pb.ModelInfoRequest())
    assert info.backend == request.node.callspec.params["server"]
    assert info.model == "models/tiny" and len(info.model_sha256) == 64
    assert info.max_context == 2048 and info.max_lora_rank == 8 and info.prompt_template == "plain"
    rendered = stub.RenderPrompt(pb.RenderPromptRequest(spec=SPEC))
    assert rendered.template == "plain" and "digits" in rendered.prompt
    assert 0 < rendered.prompt_tokens < 2048


def test_generate_streams_candidates_with_provenance(stub) -> None:  # type: ignore[no-untyped-def]
    rendered = stub.RenderPrompt(pb.RenderPromptRequest(spec=SPEC))
    out = generate(stub, seed=11, n=4, run="r1", cycle=2, id_prefix="r1-c2-x")
    assert sorted(c.index for c in out) == [0, 1, 2, 3]
    for c in out:
        p = c.candidate.provenance
        assert c.candidate.id == f"r1-c2-x-{c.index}"
        assert p.source == "generated" and p.run == "r1" and p.cycle == 2
        assert p.seed == 11 + c.index and p.model == "models/tiny" and p.adapter_name == ""
        assert p.prompt_sha256 == hashlib.sha256(rendered.prompt.encode()).hexdigest()
        assert c.prompt_tokens == rendered.prompt_tokens
        assert 0 < c.completion_tokens <= TOKENS and c.finish_reason in ("stop", "length")
        assert c.latency_s > 0 and c.candidate.raw_text
        assert (c.extraction == pb.EXTRACTION_NONE) == (c.candidate.code == "")
    # Default ids are unique per call.
    a, b = generate(stub, n=1), generate(stub, n=1)
    assert a[0].candidate.id != b[0].candidate.id


def test_the_rendered_prompt_sent_raw_gives_the_same_answers_under_the_ids_asked_for(
    stub,
) -> None:  # type: ignore[no-untyped-def]
    """The controller renders a cycle's prompt once and sends that text; the answers are the
    spec's, under exactly the ids it names."""
    rendered = stub.RenderPrompt(pb.RenderPromptRequest(spec=SPEC)).prompt
    sampling = common.SamplingParams(temperature=0.8, max_tokens=TOKENS, seed=5)
    ids = ["r1-c2-5", "r1-c2-6"]
    request = pb.GenerateRequest(raw_prompt=rendered, n=2, sampling=sampling, ids=ids)
    raw = sorted(stub.Generate(request, timeout=120), key=lambda c: c.index)
    assert [c.candidate.id for c in raw] == ids
    assert texts(raw) == texts(generate(stub, seed=5, n=2))
    sha = hashlib.sha256(rendered.encode()).hexdigest()
    assert {c.candidate.provenance.prompt_sha256 for c in raw} == {sha}
    for bad in (["a"], ["a", "a"], ["a", ""]):
        request = pb.GenerateRequest(raw_prompt=rendered, n=2, sampling=sampling, ids=bad)
        assert rpc_error(stub.Generate, request).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_same_seed_same_answers(stub) -> None:  # type: ignore[no-untyped-def]
    first = texts(generate(stub, seed=5))
    assert texts(generate(stub, seed=5)) == first
    assert texts(generate(stub, seed=6)) != first
    # Answer i is seeded seed + i: it is reproduced on its own.
    assert texts(generate(stub, seed=6, n=1)) == first[1:2]


def test_hot_loaded_adapter_changes_outputs_while_another_client_generates(
    stub, server, world
) -> None:  # type: ignore[no-untyped-def]
    results: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def other_client() -> None:
        with connect(server.address) as ch:
            other = pb_grpc.GeneratorStub(ch)
            while not stop.is_set():
                try:
                    results.append(len(generate(other, seed=99, n=2)))
                except BaseException as e:
                    errors.append(e)
                    return

    base = texts(generate(stub, seed=21))
    thread = threading.Thread(target=other_client)
    thread.start()
    try:
        info = stub.LoadAdapter(pb.LoadAdapterRequest(name="hot", prefix="adapters/a1"))
        assert info.ref.rank == 8 and info.ref.base_model_sha256 == world.base_sha256
        assert info.ref.sha256 == world.store.manifest_sha256("adapters/a1")
        assert info.load_seconds > 0
        tuned = generate(stub, seed=21, adapter="hot")
        assert texts(tuned) != base
        assert all(c.candidate.provenance.adapter_sha256 == info.ref.sha256 for c in tuned)
        assert texts(generate(stub, seed=21)) == base  # the base model is unchanged
        assert texts(generate(stub, seed=21, adapter="hot")) == texts(tuned)

        # A retried load is answered with the adapter already there; another one is refused.
        again = stub.LoadAdapter(pb.LoadAdapterRequest(name="hot", prefix="adapters/a1"))
        assert again.ref.sha256 == info.ref.sha256 and again.loaded_at == info.loaded_at
        dup = rpc_error(stub.LoadAdapter, pb.LoadAdapterRequest(name="hot", prefix="adapters/a2"))
        assert dup.code() == grpc.StatusCode.ALREADY_EXISTS
        stub.LoadAdapter(pb.LoadAdapterRequest(name="hot", prefix="adapters/a2", replace=True))
        swapped = texts(generate(stub, seed=21, adapter="hot"))
        assert swapped not in (base, texts(tuned))

        # Two adapters side by side.
        stub.LoadAdapter(pb.LoadAdapterRequest(name="prev", prefix="adapters/a1"))
        assert texts(generate(stub, seed=21, adapter="prev")) == texts(tuned)
        listed = stub.ListAdapters(pb.ListAdaptersRequest()).adapters
        assert [a.name for a in listed] == ["hot", "prev"]

        stub.UnloadAdapter(pb.UnloadAdapterRequest(name="prev"))
        stub.UnloadAdapter(pb.UnloadAdapterRequest(name="hot"))
        assert stub.ListAdapters(pb.ListAdaptersRequest()).adapters == []
        gone = rpc_error(generate, stub, adapter="hot")
        assert gone.code() == grpc.StatusCode.NOT_FOUND
    finally:
        stop.set()
        thread.join(timeout=120)
    assert not errors, errors
    assert results and all(r == 2 for r in results)


def test_bad_adapters_are_refused_and_the_engine_keeps_serving(stub, world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = world.store
    # Another base model's adapter.
    publish_adapter(store, world.model_dir, "adapters/other-base", 8, 4, "0" * 64)
    # Garbage weights listed correctly in the manifest; a file changed after publishing.
    files = adapter_files(world.model_dir, 8, 5, tmp_path / "a")
    files["adapter_model.safetensors"].write_bytes(b"not safetensors" * 100)
    store.put_artifact("adapters/garbage", files, adapter_meta(world.base_sha256))
    files = adapter_files(world.model_dir, 8, 6, tmp_path / "b")
    store.put_artifact("adapters/tampered", files, adapter_meta(world.base_sha256))
    store.put_bytes("adapters/tampered/adapter_model.safetensors", b"tampered")
    cases = [
        ("adapters/missing", "", grpc.StatusCode.NOT_FOUND, "no adapter"),
        ("adapters/r16", "", grpc.StatusCode.FAILED_PRECONDITION, "max_lora_rank 8"),
        ("adapters/other-base", "", grpc.StatusCode.FAILED_PRECONDITION, "base model"),
        ("adapters/garbage", "", grpc.StatusCode.DATA_LOSS, "safetensors"),
        ("adapters/tampered", "", grpc.StatusCode.DATA_LOSS, "corrupt"),
        ("adapters/a1", "f" * 64, grpc.StatusCode.FAILED_PRECONDITION, "not the requested"),
        ("../etc", "", grpc.StatusCode.INVALID_ARGUMENT, "prefix"),
    ]
    for prefix, sha, code, words in cases:
        e = rpc_error(stub.LoadAdapter, pb.LoadAdapterRequest(name="x", prefix=prefix, sha256=sha))
        assert (e.code(), prefix) == (code, prefix) and words in e.details(), e.details()
    e = rpc_error(stub.LoadAdapter, pb.LoadAdapterRequest(name="bad name!", prefix="adapters/a1"))
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
    e = rpc_error(stub.UnloadAdapter, pb.UnloadAdapterRequest(name="never"))
    assert e.code() == grpc.StatusCode.NOT_FOUND
    assert stub.ListAdapters(pb.ListAdaptersRequest()).adapters == []
    assert len(generate(stub, n=2)) == 2


def test_bad_generate_requests(stub) -> None:  # type: ignore[no-untyped-def]
    long_prompt = "layer " * 5000
    cases = [
        (pb.GenerateRequest(raw_prompt=long_prompt), "context"),
        (pb.GenerateRequest(), "spec or a non-empty raw_prompt"),
        (pb.GenerateRequest(spec=SPEC, n=17), "max_n"),
        (
            pb.GenerateRequest(spec=SPEC, sampling=common.SamplingParams(temperature=5)),
            "temperature",
        ),
        (pb.GenerateRequest(spec=SPEC, sampling=common.SamplingParams(top_p=0)), "top_p"),
        (pb.GenerateRequest(spec=SPEC, sampling=common.SamplingParams(top_k=-2)), "top_k"),
        (pb.GenerateRequest(spec=common.TaskSpec(template="nope")), "template"),
    ]
    for request, words in cases:
        e = rpc_error(stub.Generate, request, timeout=30)
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and words in e.details(), e.details()
    e = rpc_error(stub.Generate, pb.GenerateRequest(spec=SPEC, adapter="nobody"), timeout=30)
    assert e.code() == grpc.StatusCode.NOT_FOUND
    raw = pb.GenerateRequest(
        raw_prompt="### Task", n=1, sampling=common.SamplingParams(max_tokens=5, seed=1)
    )
    (only,) = stub.Generate(raw, timeout=60)
    assert only.completion_tokens <= 5


def test_cancel_and_deadline_abort_the_call_not_the_server(stub) -> None:  # type: ignore[no-untyped-def]
    sampling = common.SamplingParams(max_tokens=1500, seed=3, temperature=1.0)
    call = stub.Generate(pb.GenerateRequest(spec=SPEC, n=8, sampling=sampling), timeout=300)
    started = time.perf_counter()
    call.cancel()
    with pytest.raises(grpc.RpcError) as info:
        list(call)
    assert info.value.code() == grpc.StatusCode.CANCELLED
    # 8 answers of up to 1,500 tokens cannot all be written within 0.1 s (0.5 s was once
    # enough for them on a quiet machine, and the call ended before its deadline)
    slow = pb.GenerateRequest(spec=SPEC, n=8, sampling=sampling)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(slow, timeout=0.1))
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(generate(stub, n=2)) == 2  # the aborted answers freed the engine
    assert time.perf_counter() - started < 120


def test_replace_lets_running_requests_finish_on_the_old_adapter(stub) -> None:  # type: ignore[no-untyped-def]
    """A Generate running when its adapter's name is replaced ends on the adapter it began with."""
    stub.LoadAdapter(pb.LoadAdapterRequest(name="live", prefix="adapters/a1"))
    sampling = common.SamplingParams(temperature=1.0, max_tokens=600, seed=31)
    request = pb.GenerateRequest(spec=SPEC, n=3, sampling=sampling, adapter="live")
    running = stub.Generate(request, timeout=300)
    first = next(running)  # the call is under way on a1
    stub.LoadAdapter(pb.LoadAdapterRequest(name="live", prefix="adapters/a2", replace=True))
    during = texts([first, *running])
    stub.LoadAdapter(pb.LoadAdapterRequest(name="old", prefix="adapters/a1"))
    assert texts(list(stub.Generate(request, timeout=300))) != during  # "live" is a2 now
    request.adapter = "old"
    assert texts(list(stub.Generate(request, timeout=300))) == during
    for name in ("live", "old"):
        stub.UnloadAdapter(pb.UnloadAdapterRequest(name=name))


def test_batched_prompts_of_different_lengths_answer_as_alone(stub) -> None:  # type: ignore[no-untyped-def]
    """Greedy answers do not depend on what else is in the batch (padding, positions)."""
    greedy = common.SamplingParams(temperature=0, max_tokens=24, seed=1)
    prompts = ["### Task\nclassify digits", "### Task\n" + "a much longer prompt, " * 20]

    def one(p: str) -> str:
        (answer,) = stub.Generate(pb.GenerateRequest(raw_prompt=p, sampling=greedy), timeout=60)
        return answer.candidate.raw_text

    alone = [one(p) for p in prompts]

    with ThreadPoolExecutor(2) as pool:
        together = list(pool.map(one, prompts * 3))
    assert together == alone * 3


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl not installed (the dev extra ships it)")
def test_readme_grpcurl_commands(server: Server) -> None:
    """The README's grpcurl calls, through server reflection only."""
    info = json.loads(grpcurl(server, "nasloop.v1.Generator/ModelInfo"))
    assert info["model"] == "models/tiny" and info["max_context"] == 2048
    spec = {"task": "img-classification", "dataset": "digits", "in_shape": [16, 3, 32, 32],
            "out_shape": [10], "parameter_budget": 200000}  # fmt: skip
    request = {"spec": spec, "n": 4, "sampling": {"temperature": 0.8, "seed": 7, "max_tokens": 16}}
    answers = json_stream(grpcurl(server, "nasloop.v1.Generator/Generate", data=request))
    assert sorted(a.get("index", 0) for a in answers) == [0, 1, 2, 3]
    loaded = grpcurl(
        server, "nasloop.v1.Generator/LoadAdapter", data={"name": "r1-c3", "prefix": "adapters/a1"}
    )
    assert json.loads(loaded)["ref"]["rank"] == 8
    raw = {"raw_prompt": "### Task ...", "n": 2, "adapter": "r1-c3", "sampling": {"max_tokens": 8}}
    assert len(json_stream(grpcurl(server, "nasloop.v1.Generator/Generate", data=raw))) == 2
    grpcurl(server, "nasloop.v1.Generator/UnloadAdapter", data={"name": "r1-c3"})


def test_stop_strings_end_answers(stub) -> None:  # type: ignore[no-untyped-def]
    sampling = common.SamplingParams(temperature=0.8, max_tokens=TOKENS, seed=2, stop=["\n"])
    answers = list(stub.Generate(pb.GenerateRequest(spec=SPEC, n=4, sampling=sampling)))
    assert all("\n" not in a.candidate.raw_text for a in answers)
    # The model writes code: some answer meets a newline well before the token limit.
    assert any(a.finish_reason == "stop" and a.completion_tokens < TOKENS for a in answers)


def test_adapter_slots_are_limited(stub) -> None:  # type: ignore[no-untyped-def]
    names = [f"slot{i}" for i in range(3)]  # max_cpu_loras is 3 in this world
    for name in names:
        stub.LoadAdapter(pb.LoadAdapterRequest(name=name, prefix="adapters/a1"))
    e = rpc_error(stub.LoadAdapter, pb.LoadAdapterRequest(name="one-more", prefix="adapters/a2"))
    assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "unload one" in e.details()
    stub.UnloadAdapter(pb.UnloadAdapterRequest(name=names[0]))
    stub.LoadAdapter(pb.LoadAdapterRequest(name="one-more", prefix="adapters/a2"))
    for name in [*names[1:], "one-more"]:
        stub.UnloadAdapter(pb.UnloadAdapterRequest(name=name))


def test_a_missing_base_model_stops_the_service_with_a_clear_message(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "NASLOOP_STORE__URL": f"file://{tmp_path / 'store'}"}
    out = subprocess.run(
        [sys.executable, "-m", "services.cli", "serve", "generator", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    assert "no manifest at models/bootstrap-default/" in out.stderr
    assert "nasloop bootstrap-model" in out.stderr and "Traceback" not in out.stderr


def test_calls_beyond_the_limit_are_refused_then_served(stub) -> None:  # type: ignore[no-untyped-def]
    """max_concurrent_calls is 3 in this world: a fourth call is refused at once."""
    long = pb.GenerateRequest(
        spec=SPEC, n=16, sampling=common.SamplingParams(max_tokens=1500, seed=4, temperature=1.0)
    )
    probe = pb.GenerateRequest(spec=SPEC, n=1, sampling=common.SamplingParams(max_tokens=1))
    calls: list = []  # type: ignore[type-arg]

    def start_long_call():  # type: ignore[no-untyped-def]
        """A long call whose answers are read as they come: unread, they would fill the flow
        control window and keep the call open after the server has stopped counting it."""
        call = stub.Generate(long, timeout=300)

        def drain() -> None:
            try:
                for _ in call:
                    pass
            except grpc.RpcError:
                pass  # refused, or cancelled below

        threading.Thread(target=drain, daemon=True).start()
        return call

    def refused() -> bool:
        """Probe again and again while the long calls run: the time in which all three are
        running may be short on a fast machine (a probe that gets in is answered at once)."""
        while not all(c.done() for c in calls):
            try:
                list(stub.Generate(probe, timeout=5))
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "max_concurrent_calls" in e.details()
                    return True
                assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
        return False

    try:
        deadline = time.monotonic() + 120
        while True:
            # Three long calls in flight: one that ended (all its answers stopped) or was
            # refused while an earlier test's cancelled calls still held their places is
            # replaced, so the probes meet a full server however fast this machine is.
            calls = [c for c in calls if not c.done()]
            calls += [start_long_call() for _ in range(3 - len(calls))]
            if refused():
                break
            assert time.monotonic() < deadline, "the limit was never reached"
    finally:
        for call in calls:
            call.cancel()
    deadline = time.monotonic() + 60
    while True:  # cancelled calls give their places back
        try:
            assert len(list(stub.Generate(probe, timeout=10))) == 1
            break
        except grpc.RpcError as e:
            retry = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert e.code() in retry
            assert time.monotonic() < deadline, e
            time.sleep(0.2)


def test_many_long_seeded_prompts_at_once(stub) -> None:  # type: ignore[no-untyped-def]
    """More prompt tokens at once than one engine step takes (vLLM's default is 2,048): the
    engine must not split a seeded prompt across steps (vLLM 0.32 on CPU dies when it does)."""
    sampling = common.SamplingParams(temperature=0.8, max_tokens=4, seed=8)
    prompts = [f"### Task {i}\n" + f"layer{i}, " * 300 for i in range(3)]  # distinct: no cache

    def answers(prompt: str) -> list[str]:
        request = pb.GenerateRequest(raw_prompt=prompt, n=2, sampling=sampling)
        return texts(list(stub.Generate(request, timeout=300)))

    with ThreadPoolExecutor(3) as pool:  # max_concurrent_calls is 3 in this world
        together = list(pool.map(answers, prompts))
    assert [len(a) for a in together] == [2] * 3
    assert len(generate(stub, n=2)) == 2
