"""Synthetic workloads: seeded determinism, the staged phases' hit rates, growing chats, RAG, mixtures."""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest

from tests.workloads.helpers import ideal_hit_tokens
from workloads import PAPER_TARGETS, Request, chat, make_workload, mixed, rag, staged, workload_options

SMALL = {
    "staged": {"phase_requests": 12, "chunk_tokens": 32, "chunks_per_prompt": 8, "pool_chunks": 64},
    "chat": {
        "sessions": 6,
        "turns": (2, 4),
        "system_tokens": 64,
        "user_tokens": (8, 32),
        "output_tokens": (8, 32),
    },
    "rag": {"requests": 30, "documents": 12, "doc_tokens": 64, "system_tokens": 32},
    "mixed": {"segments": (("chat", {"sessions": 3}), ("rag", {"requests": 10, "doc_tokens": 64}))},
}


def same(a: list[Request], b: list[Request]) -> bool:
    return len(a) == len(b) and all(
        x.arrival_s == y.arrival_s
        and x.output_len == y.output_len
        and x.phase == y.phase
        and np.array_equal(x.tokens, y.tokens)
        for x, y in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("name", sorted(SMALL))
def test_generators_are_seeded(name: str) -> None:
    first = make_workload(name, seed=3, **SMALL[name])
    assert same(first, make_workload(name, seed=3, **SMALL[name]))
    assert not same(first, make_workload(name, seed=4, **SMALL[name]))
    arrivals = [r.arrival_s for r in first]
    assert arrivals == sorted(arrivals) and arrivals[0] == 0.0
    assert all(r.tokens.dtype == np.uint32 and not r.tokens.flags.writeable for r in first)


def test_staged_phases_hit_their_targets() -> None:
    requests = staged(seed=0, phase_requests=60)
    assert len(requests) == 60 * len(PAPER_TARGETS)
    assert {r.prompt_tokens for r in requests} == {8192}
    hits = ideal_hit_tokens(requests, 256)
    labels = list(dict.fromkeys(r.phase for r in requests))
    assert labels == [f"{i}:{t:g}" for i, t in enumerate(PAPER_TARGETS)]
    for label, target in zip(labels, PAPER_TARGETS, strict=True):
        rows = [i for i, r in enumerate(requests) if r.phase == label]
        ratio = hits[rows].sum() / (8192 * len(rows))
        assert abs(ratio - target) <= 0.05, (label, ratio)
    assert hits.max() % 256 == 0


def test_staged_targets_are_configurable() -> None:
    requests = staged(seed=1, phase_requests=40, targets=(0.0, 0.9), chunk_tokens=16, chunks_per_prompt=20)
    hits = ideal_hit_tokens(requests, 16)
    assert hits[:40].sum() == 0
    assert abs(hits[40:].sum() / (320 * 40) - 0.9) <= 0.05


def test_staged_rejects_a_pool_too_small_to_continue() -> None:
    with pytest.raises(ValueError, match="pool_chunks"):
        staged(seed=0, phase_requests=50, targets=(0.5,), chunk_tokens=4, chunks_per_prompt=2, pool_chunks=2)


def test_chat_sessions_grow_turn_by_turn() -> None:
    requests = chat(seed=2, **SMALL["chat"])
    sessions: dict[str, list[Request]] = defaultdict(list)
    for request in requests:
        sessions[request.session].append(request)
    assert len(sessions) == 6
    system = requests[0].tokens[:64]
    for turns in sessions.values():
        assert 2 <= len(turns) <= 4
        assert [t.phase for t in turns] == [f"turn-{k}" for k in range(len(turns))]
        for before, after in itertools.pairwise(turns):
            grown = after.tokens.size - before.tokens.size
            assert grown >= before.output_len + 8
            np.testing.assert_array_equal(after.tokens[: before.tokens.size], before.tokens)
        np.testing.assert_array_equal(turns[0].tokens[:64], system)


def test_rag_prompts_share_documents() -> None:
    requests = rag(seed=5, **SMALL["rag"])
    assert all(32 + 3 * 64 + 16 <= r.prompt_tokens <= 32 + 3 * 64 + 64 for r in requests)
    leading_docs = {r.tokens[32:96].tobytes() for r in requests}
    assert len(leading_docs) < 12  # popular documents lead many prompts
    assert ideal_hit_tokens(requests, 32).sum() > 0


def test_mixed_shifts_regime_mid_run() -> None:
    requests = mixed(seed=0, **SMALL["mixed"])
    segments = [r.phase.split("/")[0] for r in requests]
    first_rag = segments.index("1:rag")
    assert set(segments[:first_rag]) == {"0:chat"} and set(segments[first_rag:]) == {"1:rag"}
    assert requests[first_rag].arrival_s >= requests[first_rag - 1].arrival_s + 1.0


def test_registry_errors_list_what_is_valid() -> None:
    with pytest.raises(ValueError, match="valid workloads: staged, chat, rag, mixed, mooncake"):
        make_workload("nope")
    with pytest.raises(ValueError, match=r"no option.*colour.*valid options: phase_requests"):
        make_workload("staged", colour="blue")
    with pytest.raises(ValueError, match="needs path="):
        make_workload("mooncake")
    with pytest.raises(ValueError, match="unknown segment generator"):
        mixed(segments=(("mooncake", {}),))
    assert "path" in workload_options("mooncake") and "seed" not in workload_options("chat")
