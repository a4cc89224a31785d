"""The bootstrap code LM (tiny size): trains, resumes, publishes to S3, loads back, samples."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from nasloop.bootstrap import (
    SIZES,
    RunMismatch,
    bootstrap_model,
    fetch_model,
    parameter_budget,
    pretrain,
    sample,
    with_edit_shares,
)
from nasloop.corpus.grammar import generate
from nasloop.prompts import render_prompt
from nasloop.store import IntegrityError, LocalStore, ObjectNotFound
from nasloop.v1 import common_pb2
from services.cli import main

STEPS = 30
SPEC = common_pb2.TaskSpec(
    task="img-classification",
    dataset="digits",
    in_shape=[16, 3, 32, 32],
    out_shape=[10],
    parameter_budget=200_000,
)


@pytest.fixture(scope="module")
def codes() -> list[str]:
    return [net.code for net in generate(24, seed=0)]


@pytest.fixture(scope="module")
def resumed(codes: list[str], tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A run stopped at step 12 (checkpoint) and then resumed to the end."""
    work = tmp_path_factory.mktemp("resumed")
    first = pretrain(codes, work, "tiny", steps=STEPS, seed=3, stop_at=12, progress=False)
    stopped_without_model = not first.model_dir.exists()  # the same path once resumed
    second = pretrain(codes, work, "tiny", steps=STEPS, seed=3, progress=False)
    return work, first, second, stopped_without_model


def test_budget_rounds_the_parameter_count_up(codes: list[str]) -> None:
    budget = parameter_budget(codes[0])
    assert budget > 0 and str(budget).rstrip("0") in ("1", "2", "5")
    assert parameter_budget("this is not python") == 0


def test_tiny_trains_and_resumes_where_it_stopped(codes, resumed, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    work, first, second, stopped_without_model = resumed
    assert len(first.losses) == 12 and stopped_without_model
    assert torch.load(work / "checkpoint.pt", weights_only=False)["step"] == STEPS
    assert second.resumed_from == 12 and len(second.losses) == STEPS
    assert second.losses[:12] == first.losses
    assert (second.model_dir / "model.safetensors").exists()
    # The loss goes down.
    assert sum(second.losses[-5:]) / 5 < 0.75 * sum(second.losses[:5]) / 5
    # An uninterrupted run with the same seed is the same run.
    whole = pretrain(codes, tmp_path, "tiny", steps=STEPS, seed=3, progress=False)
    assert whole.resumed_from == 0
    assert whole.losses == pytest.approx(second.losses, rel=1e-4)
    # A finished run is not trained again.
    again = pretrain(codes, work, "tiny", steps=STEPS, seed=3, progress=False)
    assert again.resumed_from == STEPS and again.tokens == 0
    with pytest.raises(RunMismatch, match="other settings"):
        pretrain(codes, work, "tiny", steps=STEPS + 1, seed=3, progress=False)


def test_publish_fetch_load_and_sample(codes, resumed, s3_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    work, _, _, _ = resumed
    result, manifest = bootstrap_model(
        s3_store, "tiny-test", "tiny", steps=STEPS, seed=3, work_dir=work, codes=codes
    )
    assert result.resumed_from == STEPS  # reused, not retrained
    names = set(manifest["files"])
    assert {"config.json", "generation_config.json", "model.safetensors"} <= names
    assert {"tokenizer.json", "tokenizer_config.json"} <= names
    assert manifest["meta"]["size"] == "tiny" and manifest["meta"]["parameters"] > 0

    dest = fetch_model(s3_store, "tiny-test", tmp_path / "fetched")
    assert json.loads((dest / "manifest.json").read_text())["files"] == manifest["files"]
    tok = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert tok.bos_token and tok.eos_token and tok.pad_token
    instruct = render_prompt(SPEC, "instruct", tok)  # the chat template travels with the model
    assert instruct.startswith(tok.bos_token) and "digits" in instruct
    local = AutoModelForCausalLM.from_pretrained(result.model_dir)
    for (name, a), (_, b) in zip(
        model.state_dict().items(), local.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    modules = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} <= modules

    texts = sample(dest, [SPEC], 2, seed=5, max_new_tokens=24)
    assert len(texts) == 2 and all(isinstance(t, str) and t for t in texts)
    assert sample(dest, [SPEC], 2, seed=5, max_new_tokens=24) == texts

    # A tampered file is refused; a missing model is named.
    s3_store.put_bytes("models/tiny-test/config.json", b"{}")
    with pytest.raises(IntegrityError):
        fetch_model(s3_store, "tiny-test", tmp_path / "again")
    with pytest.raises(ObjectNotFound, match="no model 'nope'"):
        fetch_model(s3_store, "nope", tmp_path / "nope")


def test_cli_bootstrap_model(tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("NASLOOP_STORE__URL", f"file://{tmp_path / 'store'}")
    argv = ["bootstrap-model", "--size", "tiny", "--name", "cli-test", "--networks", "6"]
    argv += ["--steps", "4", "--seed", "1", "--work-dir", str(tmp_path / "work")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "models/cli-test/" in out
    store = LocalStore(tmp_path / "store")
    assert store.get_manifest("models/cli-test")["meta"]["steps"] == 4
    assert main([*argv[:-4], "--steps", "5", *argv[-2:]]) == 2  # other settings, same work dir
    assert "other settings" in capsys.readouterr().err
    assert main([*argv, "--edit-shares", "0.6", "0.5"]) == 2  # refused before any work
    assert "together below 1" in capsys.readouterr().err


def test_tiny_with_edit_pairs(codes: list[str], tmp_path: Path) -> None:
    # tiny's 384-token vocabulary makes a prompt with a parent and its answer longer than its
    # max_length (such edit pairs are left out): a larger vocabulary and max_length here
    size = dataclasses.replace(
        SIZES["tiny"], vocab_size=1024, max_length=2048, edit_full_share=0.25, edit_diff_share=0.25
    )
    result = pretrain(codes[:6], tmp_path, size, steps=4, seed=2, progress=False)
    assert result.edit_pairs == 6 and result.examples == 12 and result.truncated == 0
    assert sum(t[1] for t in result.mutations.values()) == 6
    assert len(result.losses) == 4 and (result.model_dir / "model.safetensors").exists()
    assert SIZES["tiny"].edit_full_share == SIZES["tiny"].edit_diff_share == 0.0  # tests' size
    assert with_edit_shares(size, 0.4, 0.0).edit_full_share == 0.4
    with pytest.raises(ValueError, match="each at least 0"):
        with_edit_shares(size, -0.1, 0.2)


def test_the_cli_offers_every_size(capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI names the sizes without importing torch; it must name each of SIZES."""
    from services import cli

    with pytest.raises(SystemExit):
        cli.main(["bootstrap-model", "--help"])
    usage = capsys.readouterr().out
    for name in SIZES:
        assert name in usage.split("--size {")[1].split("}")[0].split(","), name
