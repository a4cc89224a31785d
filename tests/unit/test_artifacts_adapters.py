"""AdapterMeta, the one shape of an adapter: its manifest meta, its AdapterRef, and
verify_adapter, the check the generator and the trainer share; the LoRA settings' one home."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from nasloop.artifacts import ADAPTER_FILES, AdapterMeta, BaseModel, job_adapter, verify_adapter
from nasloop.lora import DEFAULT_TARGETS, LoraSettings, check_rank, check_targets
from nasloop.rpc import DataLoss, FailedPrecondition, NotFound
from nasloop.store import LocalStore
from nasloop.v1 import common_pb2, trainer_pb2

BASE = BaseModel("models/tiny", "models/tiny", "", "b" * 64)
META = AdapterMeta(
    base_model="models/tiny", base_model_sha256="b" * 64,
    lora=LoraSettings(8, 16.0, 0.05, ("q_proj", "v_proj")), job_id="r-c1-train",
    data_sha256="d" * 64, run="r", cycle=1,
)  # fmt: skip


def published(tmp_path: Path, meta: AdapterMeta = META) -> tuple[LocalStore, str]:
    store = LocalStore(tmp_path)
    store.put_artifact("adapters/r/1", {f: b"{}" for f in ADAPTER_FILES}, meta.to_meta())
    return store, store.manifest_sha256("adapters/r/1") or ""


def test_the_meta_holds_no_place_and_the_ref_no_training() -> None:
    placed = replace(META, name="r-c1", prefix="adapters/r/1", sha256="a" * 64)
    assert placed.to_meta() == META.to_meta()
    assert not {"name", "prefix", "sha256", "rank"} & set(META.to_meta())
    assert META.rank == 8  # from its LoRA settings
    ref = placed.to_ref()
    assert (ref.name, ref.prefix, ref.rank, ref.run, ref.cycle) == (
        "r-c1",
        "adapters/r/1",
        8,
        "r",
        1,
    )
    back = AdapterMeta.from_ref(ref)
    assert back.to_ref() == ref and back.lora is None and back.job_id == ""


def test_verify_adapter_reads_it_once_and_places_it(tmp_path: Path) -> None:
    store, sha = published(tmp_path)
    meta, manifest = verify_adapter(store, "adapters/r/1", BASE, sha)
    assert meta == replace(META, prefix="adapters/r/1", sha256=sha)
    assert set(manifest["files"]) == set(ADAPTER_FILES)


def test_verify_adapter_refuses_another_adapter(tmp_path: Path) -> None:
    store, _ = published(tmp_path)
    with pytest.raises(NotFound, match="no parent adapter at adapters/r/2/"):
        verify_adapter(store, "adapters/r/2", BASE, what="parent adapter")
    with pytest.raises(FailedPrecondition, match="not the requested"):
        verify_adapter(store, "adapters/r/1", BASE, "f" * 64)
    with pytest.raises(FailedPrecondition, match="trained on base model 'models/tiny'"):
        verify_adapter(store, "adapters/r/1", replace(BASE, sha256="c" * 64))


def test_verify_adapter_refuses_what_is_not_an_adapter(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_artifact("adapters/r/1", {"weights.bin": b"x"}, {"kind": "bootstrap-lm"})
    with pytest.raises(FailedPrecondition, match="is not a servable LoRA adapter"):
        verify_adapter(store, "adapters/r/1", BASE)
    store.put_bytes("adapters/r/2/manifest.json", b"not json")
    with pytest.raises(DataLoss):
        verify_adapter(store, "adapters/r/2", BASE)


def test_a_jobs_adapter_is_read_from_the_job() -> None:
    placed = replace(META, name="r-c1", prefix="adapters/r/1", sha256="a" * 64)
    job = trainer_pb2.Job(id="r-c1-train", data_sha256="d" * 64, adapter=placed.to_ref())
    job.spec.training_pairs.key = "runs/r/cycles/1/training-set.jsonl"
    meta = job_adapter(job)
    assert (meta.name, meta.sha256, meta.job_id, meta.data_sha256) == (
        "r-c1", "a" * 64, "r-c1-train", "d" * 64,
    )  # fmt: skip
    assert meta.to_ref() == placed.to_ref()


def test_lora_settings_from_a_message_take_the_defaults() -> None:
    assert LoraSettings.from_proto(common_pb2.LoraConfig()) == LoraSettings(
        32, 32.0, 0.05, DEFAULT_TARGETS
    )
    msg = common_pb2.LoraConfig(r=8, alpha=16, dropout=0.0, target_modules=["q_proj"])
    settings = LoraSettings.from_proto(msg)
    assert settings == LoraSettings(8, 16.0, 0.0, ("q_proj",))
    assert settings.to_proto() == msg


def test_unservable_ranks_and_targets_are_refused() -> None:
    assert check_rank(16) == 16
    with pytest.raises(ValueError, match=r"must be one of 1, 8, .*rank 7 is not servable"):
        check_rank(7)
    with pytest.raises(ValueError, match="lm_head, embed_tokens: embedding and output-head"):
        check_targets(["q_proj", "lm_head", "embed_tokens"])
    with pytest.raises(ValueError, match="not servable"):
        LoraSettings.from_proto(common_pb2.LoraConfig(r=7))
