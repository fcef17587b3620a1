"""Seeded synthetic workloads. All randomness comes from one ``numpy.random.Generator`` per call.

- :func:`staged`: the SGLANG-LSM paper's workload — prompts of 32 chunks of 256 tokens drawn from a pool,
  in phases whose requests share a controlled fraction of their prefix with earlier prompts.
- :func:`chat`: multi-turn sessions whose prompt grows turn by turn (history + new message).
- :func:`rag`: a shared system prompt, then documents drawn by Zipf popularity, then a question.
- :func:`mixed`: segments of the above back to back, so the regime changes mid-run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from workloads.mooncake import DEFAULT_VOCAB
from workloads.requests import Request

PAPER_TARGETS = (0.1, 0.3, 0.5, 0.7, 0.5, 0.3, 0.1)


def _tokens(rng: np.random.Generator, n: int, vocab_size: int) -> np.ndarray:
    return rng.integers(0, vocab_size, n, dtype=np.uint32)


def _frozen(parts: Sequence[np.ndarray]) -> np.ndarray:
    array = np.concatenate(parts)
    array.flags.writeable = False
    return array


def _arrivals(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    """``n`` Poisson arrival times at ``rate`` requests per second, starting at 0."""
    if not rate > 0:
        raise ValueError(f"rate must be > 0 requests per second, got {rate!r}")
    gaps = rng.exponential(1.0 / rate, n)
    gaps[0] = 0.0
    return np.cumsum(gaps)


def _range(name: str, value: tuple[int, int], low: int = 1) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1]:
        raise ValueError(f"{name} must be a (min, max) pair with {low} <= min <= max, got {value!r}")


def staged(
    seed: int = 0,
    *,
    phase_requests: int = 100,
    targets: Sequence[float] = PAPER_TARGETS,
    chunk_tokens: int = 256,
    chunks_per_prompt: int = 32,
    pool_chunks: int = 4096,
    rate: float = 4.0,
    output_len: int = 128,
    vocab_size: int = DEFAULT_VOCAB,
) -> list[Request]:
    """Phases of ``phase_requests`` requests; in the phase at target ``h`` each prompt copies the first
    ``k`` chunks of a uniformly drawn earlier prompt, ``k`` being ``h * chunks_per_prompt`` rounded up or
    down at random so its mean is exact, and continues with pool chunks that no earlier prompt had after
    that prefix. A prompt therefore shares exactly ``k`` chunks with what came before, and each phase's
    ideal prefix-hit rate is its target (the very first prompt has nothing to share).
    """
    if phase_requests < 1 or chunks_per_prompt < 1 or chunk_tokens < 1 or pool_chunks < 2:
        raise ValueError("phase_requests, chunks_per_prompt and chunk_tokens must be >= 1, pool_chunks >= 2")
    if not targets or not all(0.0 <= t <= 1.0 for t in targets):
        raise ValueError(f"targets must be hit rates in [0, 1], got {targets!r}")
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, vocab_size, (pool_chunks, chunk_tokens), dtype=np.uint32)
    arrivals = _arrivals(rng, phase_requests * len(targets), rate)
    prompts: list[tuple[int, ...]] = []
    seen: set[tuple[int, ...]] = set()
    requests: list[Request] = []
    for phase, target in enumerate(targets):
        label = f"{phase}:{target:g}"
        exact = target * chunks_per_prompt
        for _ in range(phase_requests):
            shared = int(exact) + int(rng.random() < exact - int(exact))
            chunks = list(prompts[rng.integers(len(prompts))][:shared]) if prompts else []
            attempts = 0
            while len(chunks) < chunks_per_prompt:
                candidate = int(rng.integers(pool_chunks))
                if len(chunks) == shared and (*chunks, candidate) in seen:
                    attempts += 1
                    if attempts > 8 * pool_chunks:
                        raise ValueError(
                            f"pool_chunks={pool_chunks} is too small: no unused chunk follows a "
                            "shared prefix any more; raise pool_chunks"
                        )
                    continue
                chunks.append(candidate)
            prompt = tuple(chunks)
            seen.update(prompt[: k + 1] for k in range(len(prompt)))
            prompts.append(prompt)
            index = len(requests)
            requests.append(
                Request(
                    float(arrivals[index]),
                    _frozen(list(pool[list(prompt)])),
                    output_len,
                    session=f"staged-{index}",
                    phase=label,
                )
            )
    return requests


def chat(
    seed: int = 0,
    *,
    sessions: int = 32,
    turns: tuple[int, int] = (2, 8),
    system_tokens: int = 512,
    user_tokens: tuple[int, int] = (32, 256),
    output_tokens: tuple[int, int] = (32, 256),
    session_rate: float = 0.5,
    think_time_s: float = 5.0,
    vocab_size: int = DEFAULT_VOCAB,
) -> list[Request]:
    """Multi-turn chat: sessions start as a Poisson process at ``session_rate``; each turn's prompt is the
    previous prompt, the assistant's answer (pseudo tokens of the previous turn's output length) and a new
    user message, so sessions grow turn by turn. Every session opens with one shared system prompt.
    Turns are ``think_time_s`` (exponential mean) apart.
    """
    _range("turns", turns)
    _range("user_tokens", user_tokens)
    _range("output_tokens", output_tokens, low=0)
    if sessions < 1 or system_tokens < 0 or think_time_s < 0:
        raise ValueError("sessions must be >= 1, system_tokens and think_time_s >= 0")
    rng = np.random.default_rng(seed)
    system = _tokens(rng, system_tokens, vocab_size)
    starts = _arrivals(rng, sessions, session_rate)
    requests = []
    for session in range(sessions):
        history = [system]
        arrival = float(starts[session])
        for turn in range(int(rng.integers(turns[0], turns[1] + 1))):
            history.append(_tokens(rng, int(rng.integers(user_tokens[0], user_tokens[1] + 1)), vocab_size))
            answer = int(rng.integers(output_tokens[0], output_tokens[1] + 1))
            requests.append(
                Request(arrival, _frozen(history), answer, session=f"chat-{session}", phase=f"turn-{turn}")
            )
            history.append(_tokens(rng, answer, vocab_size))
            arrival += float(rng.exponential(think_time_s))
    requests.sort(key=lambda r: r.arrival_s)
    return requests


def rag(
    seed: int = 0,
    *,
    requests: int = 200,
    documents: int = 100,
    doc_tokens: int = 1024,
    docs_per_request: int = 3,
    zipf_a: float = 1.1,
    system_tokens: int = 256,
    question_tokens: tuple[int, int] = (16, 64),
    rate: float = 4.0,
    output_len: int = 128,
    vocab_size: int = DEFAULT_VOCAB,
) -> list[Request]:
    """Retrieval-augmented prompts: a shared system prompt, ``docs_per_request`` distinct documents drawn
    with Zipf popularity (``p(rank r) ~ r ** -zipf_a``) in retrieval order, then a question. Only a
    shared leading run of documents is a shared prefix, as in real prefix caches.
    """
    _range("question_tokens", question_tokens)
    if not 1 <= docs_per_request <= documents or requests < 1 or doc_tokens < 1 or zipf_a <= 0:
        raise ValueError(
            "need requests >= 1, doc_tokens >= 1, zipf_a > 0, 1 <= docs_per_request <= documents"
        )
    rng = np.random.default_rng(seed)
    system = _tokens(rng, system_tokens, vocab_size)
    corpus = rng.integers(0, vocab_size, (documents, doc_tokens), dtype=np.uint32)
    popularity = np.arange(1, documents + 1, dtype=float) ** -zipf_a
    popularity /= popularity.sum()
    arrivals = _arrivals(rng, requests, rate)
    result = []
    for index in range(requests):
        chosen = rng.choice(documents, size=docs_per_request, replace=False, p=popularity)
        question = _tokens(rng, int(rng.integers(question_tokens[0], question_tokens[1] + 1)), vocab_size)
        tokens = _frozen([system, *corpus[chosen], question])
        result.append(
            Request(float(arrivals[index]), tokens, output_len, session=f"rag-{index}", phase="rag")
        )
    return result


GENERATORS: dict[str, Callable[..., list[Request]]] = {"staged": staged, "chat": chat, "rag": rag}

DEFAULT_SEGMENTS: tuple[tuple[str, Mapping[str, Any]], ...] = (
    ("chat", {"sessions": 24}),
    ("rag", {"requests": 150}),
    ("staged", {"phase_requests": 30, "targets": (0.7, 0.1)}),
)


def mixed(
    seed: int = 0,
    *,
    segments: Sequence[tuple[str, Mapping[str, Any]]] = DEFAULT_SEGMENTS,
    gap_s: float = 1.0,
) -> list[Request]:
    """The ``segments`` (generator name, its options) back to back, ``gap_s`` apart: the regime shifts
    mid-run. Each segment draws from its own seed taken from this call's generator; phases are labelled
    ``"<segment>:<name>/<inner phase>"``.
    """
    if not segments:
        raise ValueError(
            f"segments is empty; pass (name, options) pairs with names from {', '.join(GENERATORS)}"
        )
    rng = np.random.default_rng(seed)
    result: list[Request] = []
    offset = 0.0
    for number, (name, options) in enumerate(segments):
        if name not in GENERATORS:
            raise ValueError(f"unknown segment generator {name!r}; valid names: {', '.join(GENERATORS)}")
        part = GENERATORS[name](seed=int(rng.integers(2**63)), **options)
        for request in part:
            result.append(
                Request(
                    request.arrival_s + offset,
                    request.tokens,
                    request.output_len,
                    session=f"{number}:{request.session}",
                    tenant=request.tenant,
                    phase=f"{number}:{name}/{request.phase}",
                )
            )
        offset = result[-1].arrival_s + gap_s
    return result
