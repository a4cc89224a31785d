"""The transformers + peft backend: the fallback where vLLM is not installed.

One decoding thread takes the queued answers that share an adapter (up to ``max_batch``),
decodes them together with a KV cache, and hands each answer back as it finishes. Every answer
samples from its own seeded generator, so a seed gives the same answer whatever it is batched
with (up to floating-point differences of batch shapes).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from services.generator.backend import (
    AdapterRejected,
    Completion,
    EngineInfo,
    LoadedAdapter,
    Request,
    Sampling,
)

log = logging.getLogger("nasloop.generator.hf")
_STOP_WINDOW = 16  # tokens decoded beyond the longest stop string when looking for it


@dataclass
class _Answer:
    request: Request
    future: asyncio.Future[Completion]
    loop: asyncio.AbstractEventLoop
    cancelled: threading.Event = field(default_factory=threading.Event)
    tokens: list[int] = field(default_factory=list)
    finish: str = ""
    stop_at: int = -1  # character offset of a stop string in the text

    def resolve(self, result: Completion | BaseException) -> None:
        def set_it() -> None:
            if self.future.done():
                return
            if isinstance(result, BaseException):
                self.future.set_exception(result)
            else:
                self.future.set_result(result)

        self.loop.call_soon_threadsafe(set_it)


class TransformersBackend:
    def __init__(
        self, model_dir: Path, device: str, dtype: str, max_context: int, max_batch: int
    ) -> None:
        self.model_dir = model_dir
        self.device = torch.device(device)
        self.dtype = dtype
        self.max_batch = max_batch
        self.info = EngineInfo("transformers", max_context, dtype, device)
        self.model: Any = None
        self.tokenizer: Any = None
        self.eos: set[int] = set()
        self._queue: collections.deque[_Answer] = collections.deque()
        self._wake = threading.Condition()
        self._model_lock = threading.Lock()  # decoding vs. adapter changes
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hf-decode", daemon=True)

    async def start(self) -> None:
        await asyncio.to_thread(self._load)
        self._thread.start()

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        dtype = getattr(torch, self.dtype)
        model: Any = AutoModelForCausalLM.from_pretrained(self.model_dir, dtype=dtype)
        self.model = model.to(self.device).eval()
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos = {int(e) for e in [*eos, self.tokenizer.eos_token_id] if e is not None}

    # -- adapters ---------------------------------------------------------------------------------
    async def add_adapter(self, adapter: LoadedAdapter) -> None:
        await asyncio.to_thread(self._add, adapter)

    def _add(self, adapter: LoadedAdapter) -> None:
        from peft import PeftModel

        with self._model_lock:
            try:
                if isinstance(self.model, PeftModel):
                    self.model.load_adapter(str(adapter.path), adapter_name=_key(adapter))
                else:
                    self.model = PeftModel.from_pretrained(
                        self.model, str(adapter.path), adapter_name=_key(adapter)
                    ).eval()
            except Exception as e:  # peft raises many types for bad files and shapes
                self._drop(_key(adapter))  # a half-added adapter would be served
                raise AdapterRejected(f"{type(e).__name__}: {e}") from None

    async def remove_adapter(self, adapter: LoadedAdapter) -> None:
        await asyncio.to_thread(self._remove, adapter)

    def _remove(self, adapter: LoadedAdapter) -> None:
        with self._model_lock:
            self._drop(_key(adapter))

    def _drop(self, key: str) -> None:
        """Remove adapter ``key`` from the model, if it is there (model lock held)."""
        loaded = list(getattr(self.model, "peft_config", {}))
        if key not in loaded:
            return
        if loaded == [key]:
            self.model = self.model.unload()  # the last one: back to the plain model
            return
        self.model.delete_adapter(key)
        if self.model.active_adapter not in self.model.peft_config:
            self.model.set_adapter(next(iter(self.model.peft_config)))

    # -- generation -------------------------------------------------------------------------------
    async def generate(self, request: Request) -> Completion:
        loop = asyncio.get_running_loop()
        answer = _Answer(request, loop.create_future(), loop)
        with self._wake:
            if self._closed:
                raise RuntimeError("the transformers backend is closed")
            self._queue.append(answer)
            self._wake.notify()
        try:
            return await answer.future
        except asyncio.CancelledError:
            answer.cancelled.set()
            raise

    def _take_batch(self) -> list[_Answer]:
        """The oldest queued answer and up to ``max_batch - 1`` more with the same adapter."""
        with self._wake:
            while not self._queue and not self._closed:
                self._wake.wait()
            if self._closed:
                return []
            first = self._queue.popleft()
            batch, rest = [first], collections.deque[_Answer]()
            while self._queue and len(batch) < self.max_batch:
                a = self._queue.popleft()
                (batch if a.request.adapter == first.request.adapter else rest).append(a)
            rest.extend(self._queue)
            self._queue = rest
            return [a for a in batch if not a.cancelled.is_set()]

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if self._closed:
                for a in batch:
                    a.resolve(RuntimeError("the transformers backend is closed"))
                return
            if not batch:
                continue
            try:
                with self._model_lock, torch.inference_mode():
                    self._decode(batch)
            except Exception as e:  # a failed batch fails its answers, not the thread
                log.exception("decoding failed")
                for a in batch:
                    a.resolve(e)

    def _decode(self, batch: list[_Answer]) -> None:
        model = self.model
        adapter = batch[0].request.adapter
        if adapter is not None:
            model.set_adapter(_key(adapter))
            context: Any = contextlib.nullcontext()
        elif hasattr(model, "disable_adapter"):
            context = model.disable_adapter()
        else:
            context = contextlib.nullcontext()
        pad = self.tokenizer.pad_token_id or 0
        prompts = [a.request.prompt_ids for a in batch]
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        ids, mask = ids.to(self.device), mask.to(self.device)
        generators = [torch.Generator().manual_seed(a.request.sampling.seed) for a in batch]
        steps = max(a.request.sampling.max_tokens for a in batch)
        live = list(range(len(batch)))
        past = None
        cur = ids
        with context:
            for _ in range(steps):
                positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -cur.shape[1] :]
                out = model(
                    input_ids=cur,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float().cpu()
                nxt = torch.full((len(batch), 1), pad, dtype=torch.long)
                for i in list(live):
                    a = batch[i]
                    if a.cancelled.is_set() or self._closed:
                        a.finish = "abort"
                    else:
                        try:
                            token = _sample(logits[i], a.request.sampling, generators[i])
                        except RuntimeError as e:  # e.g. NaN logits: this answer fails alone
                            live.remove(i)
                            a.resolve(e)
                            continue
                        a.tokens.append(token)
                        nxt[i, 0] = token
                        if token in self.eos or self._hit_stop(a):
                            a.finish = "stop"
                        elif len(a.tokens) >= a.request.sampling.max_tokens:
                            a.finish = "length"
                    if a.finish:
                        live.remove(i)
                        a.resolve(self._completion(a))
                if not live:
                    return
                cur = nxt.to(self.device)
                mask = torch.cat([mask, torch.ones_like(cur)], dim=1)

    def _hit_stop(self, a: _Answer) -> bool:
        if not a.request.sampling.stop:
            return False
        window = max(len(s) for s in a.request.sampling.stop) + _STOP_WINDOW
        tail = self.tokenizer.decode(a.tokens[-window:], skip_special_tokens=True)
        return any(s in tail for s in a.request.sampling.stop)

    def _completion(self, a: _Answer) -> Completion:
        text = self.tokenizer.decode(a.tokens, skip_special_tokens=True)
        if a.finish == "stop" and a.request.sampling.stop:
            cuts = [text.find(s) for s in a.request.sampling.stop if s in text]
            if cuts:
                text = text[: min(cuts)]  # the stop string is not part of the answer (as vLLM)
        return Completion(text, len(a.tokens), a.finish)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            pending = list(self._queue)
            self._queue.clear()
            self._wake.notify_all()
        for a in pending:
            a.resolve(RuntimeError("the transformers backend is closed"))
        if self._thread.is_alive():
            self._thread.join(timeout=10)


def _key(adapter: LoadedAdapter) -> str:
    return f"slot{adapter.slot}"


def _sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator) -> int:
    if s.temperature == 0:
        return int(logits.argmax())
    logits = logits / s.temperature
    if s.top_k > 0:
        kth = torch.topk(logits, min(s.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if s.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > s.top_p  # keep the first token past p
        logits = logits.scatter(0, order[drop], float("-inf"))
    probs = logits.softmax(-1)
    return int(torch.multinomial(probs, 1, generator=generator))
