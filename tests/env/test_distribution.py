"""Training distributions: seeded draws, disjoint from evaluation seeds, sized relative to the data."""

from __future__ import annotations

import numpy as np
import pytest

from env import EnvConfig, KVCacheTuningEnv
from env.distribution import (
    DISTRIBUTIONS,
    EVALUATION_SEED_BASE,
    WorkloadDistribution,
    WorkloadDraw,
    get_distribution,
    unique_page_count,
)
from workloads.profiles import get_profile
from workloads.requests import Request


def test_unique_page_count_counts_prefix_chained_pages() -> None:
    shared = np.arange(8)
    requests = [
        Request(0.0, np.concatenate([shared, [100, 101, 102, 103]]), 1),
        Request(1.0, np.concatenate([shared, [200, 201, 202]]), 1),  # last page incomplete
        Request(2.0, np.concatenate([[9, 9, 9, 9], shared[4:]]), 1),  # same tokens, other prefix
    ]
    assert unique_page_count(requests, page_size=4) == 2 + 1 + 2


def test_draws_are_seeded_and_within_their_ranges() -> None:
    distribution = get_distribution("serving-mix")
    first = [distribution.draw(np.random.default_rng(3)).describe() for _ in range(2)]
    assert first[0] == first[1]
    draws = [distribution.draw(np.random.default_rng(seed)) for seed in range(200)]
    assert {d.workload for d in draws} == {"staged", "chat", "rag", "mixed"}
    for draw in draws:
        assert 0 <= draw.seed < EVALUATION_SEED_BASE
        assert 0.03 <= draw.memory_tier_fraction <= 0.3
        assert draw.budget_fraction is None or 0.2 <= draw.budget_fraction <= 1.2
    assert 0 < sum(d.budget_fraction is None for d in draws) < 100


def test_a_drawn_workload_builds_its_requests() -> None:
    draw = get_distribution("staged-only").draw(np.random.default_rng(0))
    requests = draw.requests()
    targets = draw.options["targets"]
    assert draw.workload == "staged"
    assert len(requests) == draw.options["phase_requests"] * len(targets)
    assert {len(r.tokens) for r in requests} == {64 * draw.options["chunks_per_prompt"]}


def test_bad_distributions_and_names_are_refused() -> None:
    with pytest.raises(ValueError, match=r"unknown workload distribution 'nope'; valid: serving-mix"):
        get_distribution("nope")
    with pytest.raises(ValueError, match="kinds must be a non-empty subset"):
        WorkloadDistribution("bad", kinds=("trace",))
    with pytest.raises(ValueError, match="training seeds must stay below"):
        WorkloadDistribution("bad", seeds=(0, EVALUATION_SEED_BASE))
    assert set(DISTRIBUTIONS) == {"serving-mix", "staged-only"}


def test_env_draws_each_episode_and_sizes_budget_and_tier_from_the_data() -> None:
    env = KVCacheTuningEnv(EnvConfig(distribution="staged-only"))
    try:
        _, first = env.reset(seed=5)
        _, again = env.reset(seed=5)
        _, other = env.reset(seed=6)
        assert first["workload"] == again["workload"] != other["workload"]
        draw = WorkloadDraw(**first["workload"])
        page_bytes = get_profile("tiny").kv_layout().page_bytes(64)
        data_bytes = unique_page_count(draw.requests(), 64) * page_bytes
        assert first["requests"] == len(draw.requests())
        assert first["memory_tier_bytes"] == int(draw.memory_tier_fraction * data_bytes)
        budget = None if draw.budget_fraction is None else int(draw.budget_fraction * data_bytes)
        assert first["budget_bytes"] == budget
        _, _, terminated, _, _ = env.step(env.action_space.sample())
        assert not terminated
    finally:
        env.close()
