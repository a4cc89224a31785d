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


async def direct_round(backend, prompts: list[list[int]], tokens: int) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    """The engine alone: all prompts at once, as the service sends them (same seeds)."""
    from services.generator.backend import Request, Sampling

    t0 = time.perf_counter()
    jobs = [
        backend.generate(
            Request(f"d{i}-{time.monotonic_ns()}", ids, Sampling(0.8, 1.0, 0, tokens, 1000 + i))
        )
        for i, ids in enumerate(prompts)
    ]
    done = sum(c.completion_tokens for c in await asyncio.gather(*jobs))
    return time.perf_counter() - t0, done


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


IDLE_S = 2.0  # a vLLM engine busy-polls for about 1 s after its last request


async def _close(engine) -> None:  # type: ignore[no-untyped-def]
    engine.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", help="a bootstrap model directory (default: train a tiny one)")
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--adapters", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    from generator_world import adapter_files, adapter_meta
    from servers import service_server
    from transformers import AutoTokenizer

    from nasloop.bootstrap import pretrain, publish_model
    from nasloop.config import GeneratorConfig
    from nasloop.corpus.grammar import generate
    from nasloop.prompts import encode_prompt, render_prompt
    from nasloop.store import LocalStore
    from services.generator.aio import LoopThread
    from services.generator.backends import make_backend

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
        env = {
            "NASLOOP_STORE__URL": f"file://{root / 'store'}",
            "NASLOOP_SERVER__HOST": "127.0.0.1",
            "NASLOOP_SERVER__LOG_LEVEL": "WARNING",
            "NASLOOP_GENERATOR__MODEL": "models/bench",
            "NASLOOP_GENERATOR__CACHE_DIR": str(root / "cache"),
            "NASLOOP_GENERATOR__MAX_LORA_RANK": "32",
            "NASLOOP_GENERATOR__KV_CACHE_GIB": "1",
            # one streaming call per prompt, each holding a server thread
            "NASLOOP_SERVER__MAX_WORKERS": str(args.prompts + 8),
            "NASLOOP_GENERATOR__MAX_CONCURRENT_CALLS": str(args.prompts),
        }
        # The direct engine and the service's engine are both up; rounds alternate between them
        # (idle engines sleep), so both see the same machine.
        loop = LoopThread()
        cfg = GeneratorConfig(model=str(local), backend="vllm", max_lora_rank=32, kv_cache_gib=1)
        engine = make_backend(cfg, local)
        loop.run(engine.start())
        rates: dict[str, list[float]] = {"direct": [], "grpc": [], "vllm": [], "transformers": []}
        try:
            benv = {**env, "NASLOOP_GENERATOR__BACKEND": "vllm"}
            with service_server("generator", benv, root / "vllm.log", timeout_s=300) as server:
                loop.run(direct_round(engine, prompts[:4], args.tokens))  # warm-up
                through_grpc(server.address, specs[:4], args.tokens)
                for _ in range(args.rounds):
                    for kind in ("direct", "grpc"):
                        time.sleep(IDLE_S)
                        if kind == "direct":
                            t, n = loop.run(direct_round(engine, prompts, args.tokens))
                        else:
                            t, n = through_grpc(server.address, specs, args.tokens)
                        rates[kind].append(n / t)
                time.sleep(IDLE_S)
                latencies = adapter_latency(server.address, specs[0], prefixes)
                for _ in range(args.rounds):
                    time.sleep(IDLE_S)
                    t, n = batch(server.address, specs[0], 32, args.tokens)
                    rates["vllm"].append(n / t)
                server.stop()
        finally:
            loop.run(_close(engine))
            loop.close()
        benv = {**env, "NASLOOP_GENERATOR__BACKEND": "transformers"}
        with service_server("generator", benv, root / "hf.log", timeout_s=300) as server:
            for _ in range(args.rounds):
                t, n = batch(server.address, specs[0], 32, args.tokens)
                rates["transformers"].append(n / t)
            server.stop()
        ratios = [g / d for g, d in zip(rates["grpc"], rates["direct"], strict=True)]
        med = {k: statistics.median(v) for k, v in rates.items()}
        print(
            f"{args.prompts} prompts x {args.tokens} tokens, {args.rounds} alternating rounds: "
            f"vLLM direct {med['direct']:,.0f} tokens/s, through gRPC {med['grpc']:,.0f} "
            f"tokens/s; ratio per round "
            + ", ".join(f"{r:.3f}" for r in ratios)
            + f"; median {statistics.median(ratios):.3f}  [target ≥ 0.9]"
        )
        rates = med
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
