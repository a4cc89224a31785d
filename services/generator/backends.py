"""Choosing and building the backend the configuration asks for."""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from nasloop.config import GeneratorConfig
from services.generator.backend import Backend

log = logging.getLogger("nasloop.generator")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def model_context(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("max_position_embeddings") or 2048)


def make_backend(cfg: GeneratorConfig, model_dir: Path) -> Backend:
    import torch

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = cfg.dtype if cfg.dtype != "auto" else ("float32" if device == "cpu" else "bfloat16")
    context = min(cfg.max_model_len or model_context(model_dir), model_context(model_dir))
    backend = cfg.backend
    if backend == "auto":
        backend = "vllm" if vllm_installed() else "transformers"
        if backend == "transformers":
            log.warning("vLLM is not installed; serving with the transformers backend")
    if backend == "vllm":
        from services.generator.vllm_backend import VllmBackend

        return VllmBackend(model_dir, cfg, device, dtype, context)
    from services.generator.hf_backend import TransformersBackend

    return TransformersBackend(model_dir, device, dtype, context, cfg.max_batch)
