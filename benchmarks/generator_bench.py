"""Generator benchmark (issue targets, on 2 CPU cores):

1. generated tokens/s through gRPC ÷ calling the vLLM engine directly on the same prompts and
   seeds (target ≥ 0.9);
2. vLLM ÷ the transformers backend, tokens/s at batch 32 through gRPC (reported);
3. seconds from ``LoadAdapter`` to the first answer served with that adapter (target ≤ 2 s for a
   bootstrap-model adapter, r 32, all projections).

The model is the bootstrap model in ``--model-dir`` (a Hugging Face directory; default: the tiny
one trained here in seconds, so the numbers are a floor for small models). It is published to a
local store in a temporary directory; each figure is measured on the same machine in one run.

Usage: python benchmarks/generator_bench.py [--model-dir DIR] [--prompts 32] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def _specs(count: int):  # type: ignore[no-untyped-def]
    from nasloop.v1 import common_pb2 as common

    budgets = (100_000, 200_000, 500_000, 1_000_000)
    datasets = ("digits", "cifar10")
    return [
        common.TaskSpec(
            task="img-classification",
            dataset=datasets[i % 2],
            in_shape=(16, 3, 32, 32),
            out_shape=(10,),
            parameter_budget=budgets[(i // 2) % 4],
        )
        for i in range(count)
    ]


def direct(model_dir: Path, cfg, prompts: list[list[int]], tokens: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The engine alone: all prompts at once, as the service sends them."""
    from services.generator.backend import Sampling
    from services.generator.backends import make_backend

    async def run() -> tuple[float, int]:
        backend = make_backend(cfg, model_dir)
        await backend.start()
        try:
            await _direct_round(backend, prompts[:4], tokens, Sampling)  # warm-up
            t0 = time.perf_counter()
            done = await _direct_round(backend, prompts, tokens, Sampling)
            return time.perf_counter() - t0, done
        finally:
            backend.close()

    return asyncio.run(run())


async def _direct_round(backend, prompts, tokens, sampling_cls) -> int:  # type: ignore[no-untyped-def]
    jobs = [
        backend.generate(
            f"d{i}-{time.monotonic_ns()}", ids, sampling_cls(0.8, 1.0, 0, tokens, 1000 + i), None
        )
        for i, ids in enumerate(prompts)
    ]
    return sum(c.completion_tokens for c in await asyncio.gather(*jobs))


def through_grpc(address: str, specs, tokens: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The same prompts and seeds as separate concurrent Generate calls (n = 1 each)."""
    from nasloop.rpc import connect
    from nasloop.v1 import common_pb2 as common
    from nasloop.v1 import generator_pb2 as pb
    from nasloop.v1 import generator_pb2_grpc as pb_grpc

    with connect(address) as ch:
        stub = pb_grpc.GeneratorStub(ch)

        def one(i: int) -> int:
            sampling = common.SamplingParams(temperature=0.8, max_tokens=tokens, seed=1000 + i)
            reply = stub.Generate(pb.GenerateRequest(spec=specs[i], n=1, sampling=sampling))
            return sum(c.completion_tokens for c in reply)

        with ThreadPoolExecutor(len(specs)) as pool:
            list(pool.map(one, range(4)))  # warm-up
            t0 = time.perf_counter()
            done = sum(pool.map(one, range(len(specs))))
            return time.perf_counter() - t0, done


def batch(address: str, spec, n: int, tokens: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    from nasloop.rpc import connect
    from nasloop.v1 import common_pb2 as common
    from nasloop.v1 import generator_pb2 as pb
    from nasloop.v1 import generator_pb2_grpc as pb_grpc

    with connect(address) as ch:
        stub = pb_grpc.GeneratorStub(ch)
        sampling = common.SamplingParams(temperature=0.8, max_tokens=tokens, seed=5)
        list(stub.Generate(pb.GenerateRequest(spec=spec, n=4, sampling=sampling)))  # warm-up
        t0 = time.perf_counter()
        done = sum(
            c.completion_tokens
            for c in stub.Generate(pb.GenerateRequest(spec=spec, n=n, sampling=sampling))
        )
        return time.perf_counter() - t0, done


def adapter_latency(address: str, spec, names: list[str]) -> list[float]:  # type: ignore[no-untyped-def]
    """LoadAdapter, then one Generate with it: seconds until its first answer arrives."""
    from nasloop.rpc import connect
    from nasloop.v1 import common_pb2 as common
    from nasloop.v1 import generator_pb2 as pb
    from nasloop.v1 import generator_pb2_grpc as pb_grpc

    out = []
    with connect(address) as ch:
        stub = pb_grpc.GeneratorStub(ch)
        for i, prefix in enumerate(names):
            t0 = time.perf_counter()
            stub.LoadAdapter(pb.LoadAdapterRequest(name=f"bench{i}", prefix=prefix))
            sampling = common.SamplingParams(max_tokens=1, seed=1)
            request = pb.GenerateRequest(spec=spec, n=1, sampling=sampling, adapter=f"bench{i}")
            next(iter(stub.Generate(request)))
            out.append(time.perf_counter() - t0)
            stub.UnloadAdapter(pb.UnloadAdapterRequest(name=f"bench{i}"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", help="a bootstrap model directory (default: train a tiny one)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--adapters", type=int, default=5)
    args = ap.parse_args()

    from generator_world import adapter_files, adapter_meta
    from servers import service_server
    from transformers import AutoTokenizer

    from nasloop.bootstrap import pretrain, publish_model
    from nasloop.config import GeneratorConfig
    from nasloop.corpus.grammar import generate
    from nasloop.prompts import encode_prompt, render_prompt
    from nasloop.store import LocalStore

    print(f"machine: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="nasloop-genbench-") as tmp:
        root = Path(tmp)
        if args.model_dir:
            model_dir = Path(args.model_dir)
        else:
            codes = [net.code for net in generate(24, seed=0)]
            model_dir = pretrain(codes, root / "boot", "tiny", steps=30, progress=False).model_dir
        store = LocalStore(root / "store")
        local = root / "model"
        shutil.copytree(model_dir, local, ignore=shutil.ignore_patterns("manifest.json"))
        publish_model(store, "bench", local)
        base_sha = store.manifest_sha256("models/bench") or ""
        prefixes = []
        for i in range(args.adapters):
            files = adapter_files(local, 32, i, root / f"adapter{i}")
            store.put_artifact(f"adapters/bench{i}", files, adapter_meta(base_sha))
            prefixes.append(f"adapters/bench{i}")

        specs = _specs(args.prompts)
        tok = AutoTokenizer.from_pretrained(local)
        prompts = [encode_prompt(tok, render_prompt(s, "plain")) for s in specs]
        cfg = GeneratorConfig(model=str(local), backend="vllm", max_lora_rank=32, kv_cache_gib=1)
        t_direct, n_direct = direct(local, cfg, prompts, args.tokens)
        env = {
            "NASLOOP_STORE__URL": f"file://{root / 'store'}",
            "NASLOOP_SERVER__HOST": "127.0.0.1",
            "NASLOOP_SERVER__LOG_LEVEL": "WARNING",
            "NASLOOP_GENERATOR__MODEL": "models/bench",
            "NASLOOP_GENERATOR__CACHE_DIR": str(root / "cache"),
            "NASLOOP_GENERATOR__MAX_LORA_RANK": "32",
            "NASLOOP_GENERATOR__KV_CACHE_GIB": "1",
        }
        rates = {}
        for backend in ("vllm", "transformers"):
            log = root / f"{backend}.log"
            benv = {**env, "NASLOOP_GENERATOR__BACKEND": backend}
            with service_server("generator", benv, log, timeout_s=300) as server:
                if backend == "vllm":
                    t_grpc, n_grpc = through_grpc(server.address, specs, args.tokens)
                    latencies = adapter_latency(server.address, specs[0], prefixes)
                t_batch, n_batch = batch(server.address, specs[0], 32, args.tokens)
                rates[backend] = n_batch / t_batch
                server.stop()
        direct_rate, grpc_rate = n_direct / t_direct, n_grpc / t_grpc
        print(
            f"vLLM direct: {n_direct} tokens in {t_direct:.2f} s = {direct_rate:,.0f} tokens/s; "
            f"through gRPC: {n_grpc} tokens in {t_grpc:.2f} s = {grpc_rate:,.0f} tokens/s; "
            f"ratio {grpc_rate / direct_rate:.3f}  [target ≥ 0.9]"
        )
        print(
            f"batch 32 through gRPC: vLLM {rates['vllm']:,.0f} tokens/s, transformers "
            f"{rates['transformers']:,.0f} tokens/s; "
            f"ratio {rates['vllm'] / rates['transformers']:.2f}"
        )
        print(
            "LoadAdapter → first answer with it (r 32, all projections): "
            + ", ".join(f"{x:.2f}" for x in latencies)
            + f" s; median {statistics.median(latencies):.2f} s  [target ≤ 2 s]"
        )


if __name__ == "__main__":
    main()
