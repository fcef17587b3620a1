"""The runtime controller on a real ``lsm`` store: each guard's known answer, the log, MLflow, threads."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.controller import Guards, MlflowTarget, RuntimeController
from agents.policies import DefaultPolicy, HeuristicPolicy, Policy, StaticPolicy
from agents.registry import make_policy
from env.actions import ActionMapper
from store import KVLayout, KVStore, StoreConfig, open_store
from store.config import MiB

LAYOUT = KVLayout(layers=2, kv_heads=1, head_dim=8, dtype=torch.float16)
PAGE = 4


class FunctionPolicy(Policy):
    name = "function"

    def __init__(self, decide: Callable[[np.ndarray, StoreConfig], StoreConfig]) -> None:
        self._decide = decide

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        return self._decide(observation, current)


class FixedClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KVStore]:
    opened = open_store(
        "lsm", tmp_path / "db", LAYOUT, page_size=PAGE, config=StoreConfig(writer_overflow="drop")
    )
    yield opened
    opened.close()


def controller(store: KVStore, policy: Policy, **guards: object) -> RuntimeController:
    return RuntimeController(store, policy, interval_s=1.0, guards=Guards(**guards), clock=FixedClock())  # type: ignore[arg-type]


def fixed(**knobs: object) -> Policy:
    return FunctionPolicy(lambda obs, current: current.replace(**knobs))


def test_clamp_moves_values_into_the_safe_range(store: KVStore) -> None:
    decision = controller(store, fixed(write_buffer_size=1024 * MiB, min_blob_size=64)).tick()
    assert decision.guards == ("clamp",)
    assert decision.proposed == {"write_buffer_size": 1024 * MiB, "min_blob_size": 64}
    assert decision.applied == {"write_buffer_size": 256 * MiB, "min_blob_size": 256}
    assert store.config.write_buffer_size == 256 * MiB and store.config.min_blob_size == 256


def test_hysteresis_holds_small_moves_and_passes_large_ones(store: KVStore) -> None:
    base = StoreConfig().write_buffer_size
    small = controller(store, fixed(write_buffer_size=base + MiB, writer_batch_size=32), min_change=0.05)
    decision = small.tick()
    # 64 -> 65 MiB is 0.3 % of the log range 1..256 MiB; 16 -> 32 batch is 12.5 % of log 1..256
    assert decision.guards == ("hysteresis",)
    assert decision.applied == {"writer_batch_size": 32}
    assert store.config.write_buffer_size == base


def test_reopen_knobs_wait_unless_allowed(store: KVStore) -> None:
    policy = fixed(block_cache_bytes=64 * MiB, writer_batch_size=64)
    decision = controller(store, policy).tick()
    assert decision.guards == ("reopen_blocked",)
    assert decision.applied == {"writer_batch_size": 64}
    assert store.config.block_cache_bytes == StoreConfig().block_cache_bytes
    allowed = controller(store, policy, allow_reopen=True).tick()
    assert allowed.guards == () and allowed.applied == {"block_cache_bytes": 64 * MiB}
    assert store.config.block_cache_bytes == 64 * MiB


def test_rate_limit_allows_n_changes_per_minute(store: KVStore) -> None:
    sizes = iter([2, 4, 8, 16, 32, 64])
    ctl = controller(store, FunctionPolicy(lambda o, c: c.replace(writer_batch_size=next(sizes))))
    ctl.guards = Guards(max_changes_per_minute=2, rollback_windows=1)
    clock = ctl._clock
    assert isinstance(clock, FixedClock)
    applied = []
    for step_s in (0.0, 10.0, 10.0, 39.0, 1.0):  # at t = 0, 10, 20, 59, 60 s
        clock.now += step_s
        decision = ctl.tick()
        applied.append((decision.applied, decision.guards))
    assert applied == [
        ({"writer_batch_size": 2}, ()),
        ({"writer_batch_size": 4}, ()),
        ({}, ("rate_limit",)),
        ({}, ("rate_limit",)),
        ({"writer_batch_size": 32}, ()),  # the first change is 60 s old: a slot frees up
    ]
    assert ctl.counts.as_dict()["rate_limit"] == 2


def test_bad_policy_output_is_counted_and_ignored(store: KVStore) -> None:
    learned_nan = FunctionPolicy(lambda o, c: ActionMapper().to_config(np.full(ActionMapper().dim, np.nan)))

    def raises(observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        raise RuntimeError("model crashed")

    outputs = [learned_nan, FunctionPolicy(raises), FunctionPolicy(lambda o, c: "fast please")]  # type: ignore[arg-type,return-value]
    before = store.config
    for policy in outputs:
        decision = controller(store, policy).tick()
        assert decision.guards == ("policy_error",) and decision.applied == {}
    ctl = controller(store, outputs[1])
    ctl.tick()
    ctl.tick()
    assert ctl.counts.as_dict() == {
        "policy_error": 2,
        "clamp": 0,
        "reopen_blocked": 0,
        "hysteresis": 0,
        "rate_limit": 0,
        "rollback": 0,
    }
    assert store.config == before


def flood(store: KVStore, prompts: int) -> None:
    """Offer ``prompts`` distinct one-page prompts to the background writer as fast as possible."""
    kv = torch.zeros(LAYOUT.page_shape(PAGE), dtype=LAYOUT.dtype)
    for i in range(prompts):
        store.put_async(np.arange(i * PAGE, (i + 1) * PAGE), kv)


def test_rollback_restores_the_last_good_config_when_drops_regress(store: KVStore) -> None:
    ctl = controller(store, fixed(writer_queue_depth=4), rollback_windows=2)
    first = ctl.tick()  # a calm window: no drops; the policy shrinks the writer queue
    assert first.applied == {"writer_queue_depth": 4} and store.config.writer_queue_depth == 4
    flood(store, 400)
    store.flush(durable=False)
    assert store.stats().dropped_pages > 0, "a queue of 4 must overflow under 400 back-to-back writes"
    second = ctl.tick()
    assert second.guards == ("rollback",)
    assert "dropped_fraction" in second.regressed
    assert second.applied == {"writer_queue_depth": 64}
    assert store.config == StoreConfig(writer_overflow="drop")
    assert ctl.counts.as_dict()["rollback"] == 1


def test_a_calm_watch_makes_the_change_the_last_good_config(store: KVStore) -> None:
    ctl = controller(store, fixed(writer_queue_depth=256), rollback_windows=2)
    assert ctl.tick().applied == {"writer_queue_depth": 256}
    assert ctl.tick().guards == () and ctl.tick().guards == ()
    assert ctl._last_good.writer_queue_depth == 256


def test_every_decision_is_one_structured_log_record(
    store: KVStore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="agents.controller"):
        controller(store, fixed(writer_batch_size=64)).tick()
    records = [r.getMessage() for r in caplog.records if r.getMessage().startswith("controller decision ")]
    assert len(records) == 1
    payload = json.loads(records[0].removeprefix("controller decision "))
    assert payload["window"] == 0 and payload["applied"] == {"writer_batch_size": 64}
    assert payload["guards"] == [] and set(payload["observation"]) >= {"stall_fraction", "page_reuse"}


def test_observation_counts_lookups_hits_and_reuse(store: KVStore) -> None:
    ctl = controller(store, DefaultPolicy())
    tokens = np.arange(3 * PAGE)
    store.put_batch(tokens, torch.zeros(LAYOUT.page_shape(3 * PAGE), dtype=LAYOUT.dtype))
    assert store.probe(tokens) == 3 and store.probe(np.arange(100, 100 + 2 * PAGE)) == 0
    ctl.record_lookup(list(store.plan(tokens).digests))
    ctl.record_lookup(list(store.plan(tokens).digests[:2]))
    ctl._clock.now += 2.0  # type: ignore[attr-defined]
    obs = ctl.tick().observation
    assert obs["store_hit_ratio"] == pytest.approx(3 / 5)
    assert obs["page_reuse"] == pytest.approx(2 / 5)
    assert obs["arrival_rate_rps"] == pytest.approx(np.log1p(1.0) / np.log1p(1000.0))


def test_named_policies_load_into_the_controller(store: KVStore, tmp_path: Path) -> None:
    static_file = StaticPolicy(StoreConfig(writer_batch_size=64)).save(tmp_path / "best.json")
    assert isinstance(make_policy("heuristic"), HeuristicPolicy)
    # the store runs writer_overflow="drop"; both policies name the whole config, so it goes back to block
    assert controller(store, make_policy("default")).tick().applied == {"writer_overflow": "block"}
    assert controller(store, make_policy(f"static:{static_file}")).tick().applied == {"writer_batch_size": 64}


def test_the_loop_runs_and_no_thread_outlives_close(store: KVStore) -> None:
    ctl = RuntimeController(store, DefaultPolicy(), interval_s=0.01).start()
    deadline = time.monotonic() + 30
    while len(ctl.decisions) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    ctl.close()
    assert len(ctl.decisions) >= 2
    assert not any(t.name == "kvtune-controller" for t in threading.enumerate())
    with pytest.raises(ValueError, match="interval_s must be positive"):
        RuntimeController(store, DefaultPolicy(), interval_s=0)


def test_decisions_become_mlflow_series(store: KVStore, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment("controller"))
    target = MlflowTarget(uri, run.info.run_id)
    ctl = RuntimeController(store, fixed(writer_batch_size=64), guards=Guards(), tracking=target)
    ctl.tick()
    ctl.tick()
    history = client.get_metric_history(run.info.run_id, "controller/knob/writer_batch_size")
    assert [(m.step, m.value) for m in history] == [(0, 64.0), (1, 64.0)]
    assert len(client.get_metric_history(run.info.run_id, "controller/tick_s")) == 2
