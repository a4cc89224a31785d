"""The trainer service over loopback gRPC: real peft LoRA training on a tiny Llama model, adapters
published to a real S3 endpoint (moto), and loaded back with transformers + peft."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from candidates import GOOD_NET
from s3server import store_env
from servers import service_server
from tiny_lm import publish_tiny_lm

from nasloop.rpc import connect
from nasloop.store import S3Store
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import trainer_pb2 as pb
from nasloop.v1 import trainer_pb2_grpc as pb_grpc

CREDS = {"access_key": "testing", "secret_key": "testing", "region": "us-east-1"}


@pytest.fixture(scope="module")
def world(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A bucket with a tiny base model and training pairs, and a trainer serving from it."""
    root = tmp_path_factory.mktemp("trainer")
    bucket = f"trainer-{uuid.uuid4().hex[:10]}"
    store = S3Store(s3_endpoint, bucket, **CREDS)
    base = publish_tiny_lm(store, "tiny", root / "models")
    other = publish_tiny_lm(store, "tiny-other", root / "models", seed=1)
    pairs = [
        {"prompt": f"Task {i}: classify digits.\n", "completion": f"```python\n{code}\n```"}
        for i, code in enumerate(GOOD_NET.replace("16", str(8 + 4 * i)) for i in range(8))
    ]
    store.put_bytes("data/pairs.jsonl", "\n".join(json.dumps(p) for p in pairs).encode())
    store.put_bytes("data/empty.jsonl", b"\n")
    store.put_bytes("data/bad.jsonl", b'{"prompt": "x"}\n')
    env = {
        **store_env(s3_endpoint, f"s3://{bucket}"),
        "NASLOOP_TRAINER__CACHE_DIR": str(root / "cache"),
        "NASLOOP_TRAINER__LOG_EVERY_STEPS": "1",
    }
    with service_server("trainer", env, root / "server.log", timeout_s=120) as server:
        yield {"store": store, "base": base, "other": other, "server": server, "env": env,
               "root": root}  # fmt: skip


@pytest.fixture
def stub(world: dict) -> Iterator[pb_grpc.TrainerStub]:
    with connect(world["server"].address) as ch:
        yield pb_grpc.TrainerStub(ch)


def request(world: dict, prefix: str, **kw: object) -> pb.StartJobRequest:
    fields: dict = dict(
        base_model=world["base"],
        training_pairs=common.ObjectRef(key="data/pairs.jsonl"),
        lora=common.LoraConfig(r=8, alpha=16, dropout=0.0),
        lr=1e-2, epochs=3, batch_size=2, grad_accum=2, seed=1,
        output_prefix=prefix, run="r1", cycle=1,
    )  # fmt: skip
    fields.update(kw)
    return pb.StartJobRequest(**fields)


def run_to_end(stub: pb_grpc.TrainerStub, req: pb.StartJobRequest) -> tuple[pb.Job, list]:
    job = stub.StartJob(req)
    progress = list(stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300))
    return stub.GetJob(pb.GetJobRequest(job_id=job.id)), progress


def test_job_trains_publishes_and_the_adapter_loads(stub, world, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    job, progress = run_to_end(stub, request(world, "adapters/r1/1"))
    assert job.state == common.JOB_STATE_SUCCEEDED, job.error
    assert progress[-1].state == common.JOB_STATE_SUCCEEDED
    steps = [p.step for p in progress if p.state == common.JOB_STATE_RUNNING and p.step]
    assert steps and steps == sorted(steps) and progress[-2].total_steps == 6
    assert any(p.tokens_per_second > 0 for p in progress)
    m = job.metrics
    assert m.final_loss < m.initial_loss and m.examples == 8 and m.steps == 6
    store = world["store"]
    manifest = store.get_manifest("adapters/r1/1")
    assert set(manifest["files"]) == {"adapter_model.safetensors", "adapter_config.json"}
    meta = manifest["meta"]
    assert meta["base_model_sha256"] == store.manifest_sha256(world["base"])
    assert meta["data_sha256"] == job.data_sha256 and meta["parent_sha256"] == ""
    a = job.adapter
    assert (a.prefix, a.rank, a.name, a.run, a.cycle) == ("adapters/r1/1", 8, "r1-c1", "r1", 1)
    assert a.sha256 == store.manifest_sha256("adapters/r1/1")
    cfg = json.loads(store.get_artifact_file("adapters/r1/1", "adapter_config.json"))
    assert cfg["r"] == 8 and "lm_head" not in cfg["target_modules"]

    # The published adapter loads in transformers + peft and changes the model's outputs.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    for prefix, dest in ((world["base"], base_dir), ("adapters/r1/1", adapter_dir)):
        for name in store.get_manifest(prefix)["files"]:
            dest.mkdir(exist_ok=True)
            (dest / name).write_bytes(store.get_artifact_file(prefix, name))
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        before = base(ids).logits.clone()
        tuned = PeftModel.from_pretrained(base, adapter_dir)
        after = tuned(ids).logits
    assert not torch.allclose(before, after)


def test_continue_from_a_parent_adapter(stub, world) -> None:  # type: ignore[no-untyped-def]
    first, _ = run_to_end(stub, request(world, "adapters/r2/1", run="r2"))
    assert first.state == common.JOB_STATE_SUCCEEDED, first.error
    second, _ = run_to_end(
        stub, request(world, "adapters/r2/2", run="r2", cycle=2, parent=first.adapter)
    )
    assert second.state == common.JOB_STATE_SUCCEEDED, second.error
    assert second.adapter.parent_sha256 == first.adapter.sha256
    meta = world["store"].get_manifest("adapters/r2/2")["meta"]
    assert meta["parent_sha256"] == first.adapter.sha256
    # It continued: it starts from the parent's lower loss, not from scratch.
    assert second.metrics.initial_loss < first.metrics.initial_loss


def test_start_is_idempotent_and_jobs_are_listed(stub, world) -> None:  # type: ignore[no-untyped-def]
    req = request(world, "adapters/r3/1", job_id="same-id", epochs=1)
    a = stub.StartJob(req)
    b = stub.StartJob(req)
    assert a.id == b.id == "same-id"
    with pytest.raises(grpc.RpcError) as e:
        stub.StartJob(request(world, "adapters/r3/1", job_id="same-id", epochs=2))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS
    list(stub.WatchJob(pb.WatchJobRequest(job_id="same-id"), timeout=300))
    ids = [j.id for j in stub.ListJobs(pb.ListJobsRequest()).jobs]
    assert "same-id" in ids
    done = stub.ListJobs(pb.ListJobsRequest(states=[common.JOB_STATE_SUCCEEDED])).jobs
    assert all(j.state == common.JOB_STATE_SUCCEEDED for j in done)


def test_cancel_publishes_nothing(stub, world) -> None:  # type: ignore[no-untyped-def]
    job = stub.StartJob(request(world, "adapters/r4/1", epochs=100))
    for p in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300):
        if p.state == common.JOB_STATE_RUNNING and p.step >= 1:
            stub.CancelJob(pb.CancelJobRequest(job_id=job.id))
    final = stub.GetJob(pb.GetJobRequest(job_id=job.id))
    assert final.state == common.JOB_STATE_CANCELLED
    assert world["store"].get_manifest("adapters/r4/1") is None
    # Cancelling an ended job returns it unchanged.
    assert stub.CancelJob(pb.CancelJobRequest(job_id=job.id)).state == common.JOB_STATE_CANCELLED


@pytest.mark.parametrize(
    ("overrides", "code", "fragment"),
    [
        ({"base_model": "models/missing"}, "NOT_FOUND", "base model"),
        ({"training_pairs": common.ObjectRef(key="data/none.jsonl")}, "NOT_FOUND", "no object"),
        ({"training_pairs": common.ObjectRef(key="data/empty.jsonl")}, "INVALID_ARGUMENT",
         "empty"),
        ({"training_pairs": common.ObjectRef(key="data/bad.jsonl")}, "INVALID_ARGUMENT",
         "line 1"),
        ({"training_pairs": common.ObjectRef(key="data/pairs.jsonl", sha256="0" * 64)},
         "FAILED_PRECONDITION", "sha256"),
        ({"lora": common.LoraConfig(r=7)}, "INVALID_ARGUMENT", "not servable"),
        ({"lora": common.LoraConfig(r=8, target_modules=["q_proj", "lm_head"])},
         "INVALID_ARGUMENT", "lm_head"),
        ({"lora": common.LoraConfig(r=8, target_modules=["embed_tokens"])}, "INVALID_ARGUMENT",
         "embed"),
        ({"lr": -1.0}, "INVALID_ARGUMENT", "lr"),
        ({"output_prefix": ""}, "INVALID_ARGUMENT", "output_prefix"),
        ({"job_id": "bad id!"}, "INVALID_ARGUMENT", "job_id"),
        ({"parent": common.AdapterRef(prefix="adapters/none/1")}, "NOT_FOUND", "parent"),
    ],
)  # fmt: skip
def test_bad_requests(stub, world, overrides, code, fragment) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as e:
        stub.StartJob(request(world, "adapters/bad/1", **overrides))
    assert e.value.code().name == code
    assert fragment in e.value.details()


def test_parent_for_another_base_and_existing_output(stub, world) -> None:  # type: ignore[no-untyped-def]
    first, _ = run_to_end(stub, request(world, "adapters/r5/1", epochs=1))
    assert first.state == common.JOB_STATE_SUCCEEDED, first.error
    with pytest.raises(grpc.RpcError) as e:
        stub.StartJob(request(world, "adapters/r5/2", base_model=world["other"],
                              parent=first.adapter))  # fmt: skip
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "trained on base model" in e.value.details()
    with pytest.raises(grpc.RpcError) as e:
        stub.StartJob(request(world, "adapters/r5/1"))
    assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS


def test_unknown_job(stub) -> None:  # type: ignore[no-untyped-def]
    for call in (
        lambda: stub.GetJob(pb.GetJobRequest(job_id="nope")),
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id="nope")),
        lambda: list(stub.WatchJob(pb.WatchJobRequest(job_id="nope"))),
    ):
        with pytest.raises(grpc.RpcError) as e:
            call()
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_crash_mid_training_leaves_no_adapter(world) -> None:  # type: ignore[no-untyped-def]
    root: Path = world["root"]
    with service_server("trainer", world["env"], root / "crash.log", timeout_s=120) as server:
        with connect(server.address) as ch:
            stub = pb_grpc.TrainerStub(ch)
            job = stub.StartJob(request(world, "adapters/r6/1", epochs=100))
            for p in stub.WatchJob(pb.WatchJobRequest(job_id=job.id), timeout=300):
                if p.state == common.JOB_STATE_RUNNING and p.step >= 2:
                    break
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    time.sleep(0.5)
    store = world["store"]
    assert store.get_manifest("adapters/r6/1") is None
    assert store.manifest_sha256("adapters/r6/1") is None
