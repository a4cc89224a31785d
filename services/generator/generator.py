"""The generator's logic, without gRPC: prompts in, candidates out, adapters on and off.

Runs on one asyncio event loop (``aio.LoopThread``); the servicer only converts messages.
A Generate call renders (a TaskSpec) or takes (a raw prompt: the controller's, rendered once
by RenderPrompt) its prompt, tokenizes it once, checks it against the context, then sends its n
answers to the backend as n requests with seeds seed, seed+1, … (so each answer streams back as
soon as it is done and a seed reproduces an answer on its own). Each answer is a
``GeneratedCandidate`` whose ``Candidate`` carries the id the request named, or one made here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from nasloop import artifacts
from nasloop.config import GeneratorConfig
from nasloop.prompts import TEMPLATES, encode_prompt, extract, render_prompt
from nasloop.rpc import InvalidArgument, ResourceExhausted, Unavailable
from nasloop.store import ObjectStore
from nasloop.v1 import common_pb2 as common
from nasloop.v1 import generator_pb2 as pb
from services.generator.adapters import AdapterRegistry
from services.generator.backend import Backend, Completion, EngineFailed, Request, Sampling

log = logging.getLogger("nasloop.generator")

EXTRACTION = {
    "python": pb.EXTRACTION_PYTHON_BLOCK,
    "fenced": pb.EXTRACTION_FENCED_BLOCK,
    "none": pb.EXTRACTION_NONE,
}
MAX_STOP_STRINGS = 16
MAX_SEED = 2**63 - 1
MIN_TEMPERATURE = 1e-5


class Generator:
    def __init__(self, cfg: GeneratorConfig, store: ObjectStore) -> None:
        self.cfg = cfg
        self.store = store
        self.cache = Path(cfg.cache_dir)
        self.base: artifacts.BaseModel | None = None
        self.backend: Backend | None = None
        self.adapters: AdapterRegistry | None = None
        self.tokenizer: Any = None
        self.max_context = 0
        self._calls = 0
        self.failed: EngineFailed | None = None
        self.on_failure: Callable[[], None] = lambda: None

    def engine_failed(self, error: EngineFailed) -> None:
        """The engine is gone: say so once (the server then stops with an error)."""
        if self.failed is None:
            self.failed = error
            log.error("engine failed", extra={"error": str(error)})
            self.on_failure()

    async def start(self) -> None:
        """Fetch the base model and start the backend (the service is NOT_SERVING until then)."""
        from services.generator.backends import make_backend

        base = await asyncio.to_thread(artifacts.resolve_base, self.store, self.cfg.model)
        model_dir = await asyncio.to_thread(artifacts.local_model_dir, self.store, base, self.cache)
        self.tokenizer = await asyncio.to_thread(_load_tokenizer, model_dir)
        backend = make_backend(self.cfg, model_dir)
        await backend.start()
        self.base, self.backend = base, backend
        self.max_context = backend.info.max_context
        self.adapters = AdapterRegistry(
            self.store,
            backend,
            base,
            self.cache / "adapters",
            self.cfg.max_lora_rank,
            self.cfg.max_cpu_loras,
            self.engine_failed,
        )
        log.info(
            "engine ready",
            extra={"backend": backend.info.backend, "model": base.ref, "context": self.max_context},
        )

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()

    # -- prompts ----------------------------------------------------------------------------------
    def render(self, spec: common.TaskSpec) -> tuple[str, str]:
        template = spec.template or self.cfg.prompt_template
        if template not in TEMPLATES:
            raise InvalidArgument(f"unknown template {template!r}; known: {', '.join(TEMPLATES)}")
        try:
            return render_prompt(spec, template, self.tokenizer), template
        except ValueError as e:  # e.g. a tokenizer without a chat template
            raise InvalidArgument(f"cannot render the {template} template: {e}") from None

    def render_prompt(self, request: pb.RenderPromptRequest) -> pb.RenderPromptResponse:
        text, template = self.render(request.spec)
        ids = encode_prompt(self.tokenizer, text)
        return pb.RenderPromptResponse(prompt=text, template=template, prompt_tokens=len(ids))

    # -- generation -------------------------------------------------------------------------------
    async def generate(
        self, request: pb.GenerateRequest, arrived: float | None = None
    ) -> AsyncIterator[pb.GeneratedCandidate]:
        """Candidates in the order they finish. Closing the iterator aborts the rest.

        ``arrived`` is the ``time.perf_counter()`` of the request's arrival (latency_s counts
        from it)."""
        arrived = time.perf_counter() if arrived is None else arrived
        if self.failed is not None:
            raise Unavailable(f"the engine failed: {self.failed}")
        if self._calls >= self.cfg.max_concurrent_calls:
            raise ResourceExhausted(
                f"{self._calls} Generate calls are running (generator.max_concurrent_calls)"
            )
        self._calls += 1
        try:
            async for candidate in self._generate(request, arrived):
                yield candidate
        finally:
            self._calls -= 1

    async def _generate(
        self, request: pb.GenerateRequest, arrived: float
    ) -> AsyncIterator[pb.GeneratedCandidate]:
        assert self.backend is not None and self.adapters is not None
        prompt, ids = await asyncio.to_thread(self._prompt, request)  # a long prompt takes time
        n = request.n or 1
        if n > self.cfg.max_n:
            raise InvalidArgument(f"n = {n} is above generator.max_n = {self.cfg.max_n}")
        samplings = self._samplings(request.sampling, len(ids), n)
        held = self.adapters.acquire(request.adapter)
        loaded, adapter_ref = (held[0], held[1].ref) if held else (None, common.AdapterRef())
        call_id = uuid.uuid4().hex[:12]
        candidate_ids = _candidate_ids(request, n, call_id)
        prompt_sha = hashlib.sha256(prompt.encode()).hexdigest()
        tasks = [
            asyncio.ensure_future(self._answer(i, Request(f"{call_id}-{i}", ids, s, loaded)))
            for i, s in enumerate(samplings)
        ]
        try:
            for next_done in asyncio.as_completed(tasks):
                try:
                    index, done = await next_done
                except EngineFailed as e:
                    self.engine_failed(e)
                    raise Unavailable(f"the engine failed: {e}") from None
                code, how = extract(done.text)
                created = Timestamp()
                created.GetCurrentTime()
                yield pb.GeneratedCandidate(
                    index=index,
                    candidate=common.Candidate(
                        id=candidate_ids[index],
                        code=code or "",
                        raw_text=done.text,
                        provenance=common.Provenance(
                            source="generated",
                            run=request.run,
                            cycle=request.cycle,
                            model=self.cfg.model,
                            adapter_name=request.adapter,
                            adapter_sha256=adapter_ref.sha256,
                            seed=samplings[index].seed,
                            prompt_sha256=prompt_sha,
                            created=created,
                        ),
                    ),
                    extraction=EXTRACTION[how],
                    prompt_tokens=len(ids),
                    completion_tokens=done.completion_tokens,
                    finish_reason=done.finish_reason,
                    latency_s=time.perf_counter() - arrived,
                )
        finally:
            for t in tasks:
                t.cancel()  # aborts answers still running inside the engine
            await asyncio.gather(*tasks, return_exceptions=True)
            if loaded is not None:
                await self.adapters.release(loaded)

    async def _answer(self, index: int, request: Request) -> tuple[int, Completion]:
        assert self.backend is not None
        return index, await self.backend.generate(request)

    def _prompt(self, request: pb.GenerateRequest) -> tuple[str, list[int]]:
        kind = request.WhichOneof("prompt")
        if kind == "spec":
            prompt, _ = self.render(request.spec)
        elif kind == "raw_prompt" and request.raw_prompt:
            prompt = request.raw_prompt
        else:
            raise InvalidArgument("the request needs a spec or a non-empty raw_prompt")
        ids = encode_prompt(self.tokenizer, prompt)
        if len(ids) >= self.max_context:
            raise InvalidArgument(
                f"the prompt is {len(ids)} tokens; the model's context is {self.max_context} "
                "tokens, which leaves no room for an answer"
            )
        return prompt, ids

    def _samplings(self, p: common.SamplingParams, prompt_tokens: int, n: int) -> list[Sampling]:
        d = self.cfg.sampling
        temperature = p.temperature if p.HasField("temperature") else d.temperature
        top_p = p.top_p if p.HasField("top_p") else d.top_p
        top_k = {0: d.top_k, -1: 0}.get(p.top_k, p.top_k)
        if not 0 <= temperature <= 2:
            raise InvalidArgument(f"temperature must be in [0, 2], got {temperature}")
        if temperature < MIN_TEMPERATURE:
            temperature = 0.0  # below this sampling is greedy anyway, and overflows
        if not 0 < top_p <= 1:
            raise InvalidArgument(f"top_p must be in (0, 1], got {top_p}")
        if top_k < 0:
            raise InvalidArgument(f"top_k must be ≥ -1, got {p.top_k}")
        if len(p.stop) > MAX_STOP_STRINGS or any(not s for s in p.stop):
            raise InvalidArgument(f"stop: at most {MAX_STOP_STRINGS} non-empty strings")
        room = self.max_context - prompt_tokens
        max_tokens = min(p.max_tokens or d.max_tokens or room, room)
        seed = p.seed if p.HasField("seed") else secrets.randbelow(2**31)
        if seed + n > MAX_SEED:
            raise InvalidArgument(f"seed must be below {MAX_SEED - n}")
        return [
            Sampling(temperature, top_p, top_k, max_tokens, seed + i, tuple(p.stop))
            for i in range(n)
        ]

    # -- adapters and info ------------------------------------------------------------------------
    def model_info(self) -> pb.ModelInfoResponse:
        assert self.backend is not None and self.adapters is not None and self.base is not None
        info = self.backend.info
        return pb.ModelInfoResponse(
            backend=info.backend,
            model=self.cfg.model,
            model_sha256=self.base.sha256 if self.base.store_prefix else "",
            max_context=info.max_context,
            max_lora_rank=self.cfg.max_lora_rank,
            max_loras=self.cfg.max_loras,
            dtype=info.dtype,
            device=info.device,
            prompt_template=self.cfg.prompt_template,
            adapters=self.adapters.list(),
        )


def _candidate_ids(request: pb.GenerateRequest, n: int, call_id: str) -> list[str]:
    """The ids of the request's n answers: the ones it names (the controller's, made once), or
    ``<id_prefix>-<index>`` (a prefix of its run, cycle and this call when it gives none)."""
    if request.ids:
        ids = list(request.ids)
        if len(ids) != n or len(set(ids)) != n or not all(ids):
            raise InvalidArgument(f"ids: {n} distinct non-empty ids, one per answer, or none")
        return ids
    prefix = request.id_prefix or f"{request.run or 'run'}-c{request.cycle}-{call_id}"
    return [f"{prefix}-{i}" for i in range(n)]


def _load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)
