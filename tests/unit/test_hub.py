"""Base models by Hugging Face id: resolved through the cache in HF_HOME, offline here.

The tiny model is laid into a Hugging Face cache layout and loaded by its id in a fresh process
with HF_HUB_OFFLINE=1 (huggingface_hub reads HF_HOME and the offline switch at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_lm import build_tiny_lm, lay_into_hf_cache

from nasloop import hub

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("deepseek-ai/deepseek-coder-7b-instruct-v1.5", True),
        ("gpt2", True),
        ("org/name@v1.0", True),
        ("org/name@0123abc", True),
        ("models/bootstrap-default", False),  # the store's namespace
        ("/abs/path", False),
        ("./rel", False),
        ("~/m", False),
        ("a/b/c", False),
        ("org/../x", False),
        ("org/name@", False),
        ("", False),
    ],
)
def test_which_refs_are_hub_ids(ref: str, expected: bool) -> None:
    assert hub.is_hub_id(ref) is expected


RESOLVE = """
import json, sys
from nasloop.artifacts import resolve_base, local_model_dir
from nasloop.rpc.errors import ServiceError
from nasloop.store.local import LocalStore
store = LocalStore(sys.argv[2])
try:
    base = resolve_base(store, sys.argv[1])
except ServiceError as e:
    print(json.dumps({"error": type(e).__name__, "message": str(e)}))
    raise SystemExit(0)
path = local_model_dir(store, base, None)
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(path)
tok = AutoTokenizer.from_pretrained(path)
print(json.dumps({"path": str(path), "sha256": base.sha256, "ref": base.ref,
                  "params": sum(p.numel() for p in model.parameters()), "vocab": len(tok)}))
"""


def resolve_offline(ref: str, hf_home: Path, store: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NASLOOP_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", RESOLVE, ref, str(store)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf")
    model = build_tiny_lm(root / "model")
    lay_into_hf_cache(model, root / "home", "nasloop-test/tiny-lm")
    lay_into_hf_cache(model, root / "home", "nasloop-test/tiny-lm", revision="v1")
    return root / "home"


def test_a_cached_model_loads_by_its_id_offline(hf_home: Path, tmp_path: Path) -> None:
    got = resolve_offline("nasloop-test/tiny-lm", hf_home, tmp_path / "store")
    snapshots = hf_home / "hub" / "models--nasloop-test--tiny-lm" / "snapshots"
    (commit,) = [p.name for p in snapshots.iterdir()]
    assert got["path"] == str(snapshots / commit)
    assert got["params"] > 0 and got["vocab"] > 0
    # Identity: the commit the id resolved to, stable across processes and revisions.
    again = resolve_offline("nasloop-test/tiny-lm@v1", hf_home, tmp_path / "store")
    assert again["path"] == got["path"] and again["sha256"] == got["sha256"]


def test_an_uncached_id_offline_is_not_found(hf_home: Path, tmp_path: Path) -> None:
    got = resolve_offline("nasloop-test/absent", hf_home, tmp_path / "store")
    assert got["error"] == "NotFound" and "not in the cache" in got["message"]


def test_an_unknown_revision_offline_is_not_found(hf_home: Path, tmp_path: Path) -> None:
    got = resolve_offline("nasloop-test/tiny-lm@nope", hf_home, tmp_path / "store")
    assert got["error"] == "NotFound"


def test_a_store_ref_never_goes_to_the_hub(hf_home: Path, tmp_path: Path) -> None:
    got = resolve_offline("models/absent", hf_home, tmp_path / "store")
    assert got["error"] == "NotFound" and "models/absent/" in got["message"]
