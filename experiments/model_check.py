"""End-to-end proof with a real model: KV loaded from a store gives the same logits as a recompute.

A Llama-architecture model is built from a config with random weights (nothing is downloaded). Prompt A
is prefilled and its KV pages stored; prompt B shares A's first tokens, loads that prefix from the store,
and prefills only the rest. Its logits must equal a full prefill of B, which shows the store returns the
right tensors in the right order. The same run times TTFT on this CPU with and without the stored prefix.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from store import KVLayout, open_store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A Llama-architecture config; the defaults make a ~20 M-parameter model that runs fast on a CPU."""

    vocab_size: int = 32000
    hidden_size: int = 256
    intermediate_size: int = 688
    layers: int = 4
    attention_heads: int = 8
    kv_heads: int = 2
    max_positions: int = 8192

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.attention_heads

    def kv_layout(self) -> KVLayout:
        return KVLayout(
            layers=self.layers, kv_heads=self.kv_heads, head_dim=self.head_dim, dtype=torch.float32
        )


@dataclass(frozen=True)
class ModelCheckResult:
    kind: str
    prompt_tokens: int
    reused_tokens: int
    logits_match: bool
    max_abs_diff: float
    ttft_full_s: float
    ttft_cached_s: float
    load_s: float


def build_model(spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.attention_heads,
        num_key_value_heads=spec.kv_heads,
        max_position_embeddings=spec.max_positions,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def kv_from_cache(cache: object) -> torch.Tensor:
    """A transformers cache (batch 1) as the store's ``[layers, 2, n, kv_heads, head_dim]`` tensor."""
    layers = cache.layers  # type: ignore[attr-defined]
    return torch.stack(
        [torch.stack([layer.keys[0].transpose(0, 1), layer.values[0].transpose(0, 1)]) for layer in layers]
    ).contiguous()


def cache_from_kv(kv: torch.Tensor, model: torch.nn.Module) -> object:
    from transformers import DynamicCache

    cache = DynamicCache(config=cast(Any, model).config)
    for index in range(kv.shape[0]):
        keys = kv[index, 0].transpose(0, 1).unsqueeze(0)
        values = kv[index, 1].transpose(0, 1).unsqueeze(0)
        cache.update(keys, values, index)
    return cache


def check_prefix_reuse(
    kind: str,
    path: Path,
    spec: ModelSpec,
    prompt_tokens: int = 512,
    shared_tokens: int = 384,
    page_size: int = 64,
    seed: int = 0,
) -> ModelCheckResult:
    """Store prompt A's KV in a ``kind`` store, then prefill prompt B from the stored shared prefix."""
    if not 0 < shared_tokens <= prompt_tokens:
        raise ValueError(f"shared_tokens must be in (0, prompt_tokens={prompt_tokens}], got {shared_tokens}")
    model = build_model(spec, seed)
    generator = torch.Generator().manual_seed(seed)
    prompt_a = torch.randint(0, spec.vocab_size, (prompt_tokens,), generator=generator)
    prompt_b = prompt_a.clone()
    prompt_b[shared_tokens:] = torch.randint(
        0, spec.vocab_size, (prompt_tokens - shared_tokens,), generator=generator
    )

    with torch.inference_mode():
        cache_a = model(prompt_a.unsqueeze(0), use_cache=True).past_key_values
        started = time.perf_counter()
        full_logits = model(prompt_b.unsqueeze(0), use_cache=True).logits
        ttft_full = time.perf_counter() - started

    with open_store(
        kind, path, layout=spec.kv_layout(), page_size=page_size, namespace="model-check"
    ) as store:
        store.put_batch(prompt_a, kv_from_cache(cache_a))
        started = time.perf_counter()
        reused_pages = store.probe(prompt_b)
        prefix_kv = store.get_batch(prompt_b, reused_pages)
        load_s = time.perf_counter() - started
        reused = reused_pages * page_size
        with torch.inference_mode():
            cache_b = cache_from_kv(prefix_kv, model)
            rest_logits = model(
                prompt_b[reused:].unsqueeze(0), past_key_values=cache_b, use_cache=True
            ).logits
        ttft_cached = time.perf_counter() - started

    expected = full_logits[:, reused:]
    diff = float((rest_logits - expected).abs().max()) if rest_logits.numel() else 0.0
    result = ModelCheckResult(
        kind=kind,
        prompt_tokens=prompt_tokens,
        reused_tokens=reused,
        logits_match=bool(torch.allclose(rest_logits, expected)),
        max_abs_diff=diff,
        ttft_full_s=ttft_full,
        ttft_cached_s=ttft_cached,
        load_s=load_s,
    )
    logger.info("model check %s", result)
    return result
