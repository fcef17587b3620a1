"""Learning, not just running: a short training run on a known-answer setup must beat ``default``.

The setup (``SETUP``) is a small staged workload, two windows of 12 requests, priced like an NVMe SSD,
in which the agent acts on two knobs only: ``disable_wal`` and ``write_admission_hits``. Mean TTFT of
every static config on the held-out seeds (``HELD_OUT_SEEDS``), relative to ``default`` (WAL on,
admission 0), as measured on the project's machine:

=================  ===========  ===========  ===========  ===========  ===========
admission hits          0            1            2            3            4
=================  ===========  ===========  ===========  ===========  ===========
WAL on (default)     0 %          +12 %        +10 %        +10 %        +10 %
WAL off            **-19 %**      +1 %         +5 %         +7 %         +9 %
=================  ===========  ===========  ===========  ===========  ===========

One corner is clearly better: without the WAL the device writes nothing at all (the 64 MiB memtable
never flushes in an episode), and admitting every page keeps the hits (0.60 of the prompt tokens
against 0.42-0.47 with any admission threshold). Everywhere else the saved writes and the lost hits
roughly cancel. The corner is not where an untrained policy sits: its deterministic action is about
0 in both dimensions, which maps onto admission 2, the middle of 0..4 (seed 0 gives (-0.02, 0.06): WAL
on, admission 2, +10 %); the corner needs admission's action below -0.75.

The margin: the trained policy's mean TTFT must be at least ``MARGIN`` = 10 % below ``default``'s and
10 % below the untrained policy's. No config but the corner comes within 10 % of ``default`` (the next
best is +1 %), so passing means the agent found the corner; the corner itself is about 19 % better,
which leaves room for the counters clock's run-to-run noise (RocksDB's background threads make the
counted file operations and WAL bytes vary a little: about 2-3 % on ``default``'s TTFT). Over seven runs
the trained policy came out 18-21 % below ``default`` (17-21 % with training seeds 1-3). The test also
checks the setup itself (the untrained policy is not within the margin) and that every learned
decision lies in the corner.

The run: SAC (off-policy, so each window is reused in many updates) for 192 windows, gamma 0.9 (the
admission a window chooses costs hits in the next one), and a reward of TTFT only in practice:
``ttft_scale_s`` = 0.2 ms makes a window's reward about -200, so the few milliseconds a knob is worth
outweigh SAC's entropy bonus and the actor commits to the corner instead of hovering near the middle
(with ``ttft_scale_s`` = 1 ms it often stopped at admission 1). Training runs inside a real MLflow run
on SQLite, as `kvtune train` does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.bundle import LearnedPolicy, PolicyCard, algorithm_class, load_policy_bundle
from agents.evaluation import run_episode
from agents.policies import DefaultPolicy, Policy
from agents.tracking import default_tracking_uri, tracked_run
from agents.training import TrainConfig, _algorithm_kwargs, train
from env import EnvConfig, KVCacheTuningEnv, RewardConfig
from env.actions import ActionMapper, select_knobs
from store import StoreConfig

SETUP = EnvConfig(
    workload="staged",
    workload_options={
        "phase_requests": 6,
        "targets": (0.3, 0.5, 0.7, 0.9),
        "chunk_tokens": 256,
        "chunks_per_prompt": 8,
        "pool_chunks": 1024,
    },
    requests_per_window=12,
    profile="llama-3.1-8b",
    profile_scale=2048,
    device="nvme-pcie4",
    memory_tier_bytes=256 * 1024,
    action_knobs=("disable_wal", "write_admission_hits"),
    reward=RewardConfig(ttft_scale_s=2e-4),
)
"""24 requests of 2048 tokens whose prefix reuse rises 0.3 -> 0.9; 4 KiB pages of 1/2048-size KV."""
TRAINING = TrainConfig(
    algo="sac",
    timesteps=192,
    n_envs=1,
    seed=0,
    eval_every=192,
    learning_rate=3e-3,
    n_steps=32,
    batch_size=32,
    gamma=0.9,
    env=SETUP,
)
"""96 episodes; the first 32 windows are random actions (SAC's learning_starts is n_steps here)."""
HELD_OUT_SEEDS = (4242, 7, 99)
MARGIN = 0.10


class RecordingPolicy(Policy):
    """Wraps a policy and keeps every config it chose."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.name = inner.name
        self.decisions: list[StoreConfig] = []

    def decide(self, observation: np.ndarray, current: StoreConfig) -> StoreConfig:
        config = self.inner.decide(observation, current)
        self.decisions.append(config)
        return config


def mean_ttft(policy: Policy) -> float:
    """Mean over the held-out seeds of each episode's mean TTFT."""
    return float(np.mean([run_episode(policy, SETUP, seed).mean_ttft_s for seed in HELD_OUT_SEEDS]))


def untrained_policy() -> LearnedPolicy:
    """The model ``train`` starts from: same algorithm, spaces, arguments and seed, no learning."""
    mapper = ActionMapper(select_knobs(SETUP.action_knobs))
    environment = KVCacheTuningEnv(SETUP)
    try:
        model = algorithm_class(TRAINING.algo)(
            "MlpPolicy", environment, verbose=0, device="cpu", **_algorithm_kwargs(TRAINING)
        )
    finally:
        environment.close()
    return LearnedPolicy(model, PolicyCard.for_mapper(TRAINING.algo, mapper, 0, {}), mapper)


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Small networks on a shared 2-core machine: more threads only contend (SAC's updates ran 10x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skip(
    reason="known answer of the old replay model (I/O in the GPU's queue): under issue 8's model the WAL's "
    "writes overlap compute, and (WAL off, admission 0) measured 0.0328-0.0329 s against default's "
    "0.0329-0.0354 s on the held-out seeds, within run-to-run noise; the setup needs recalibrating"
)
@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_short_sac_run_learns_the_known_better_knob_region(tmp_path: Path) -> None:
    default = mean_ttft(DefaultPolicy())
    untrained = mean_ttft(untrained_policy())
    assert untrained > (1 - MARGIN) * default, (
        f"the setup needs no learning: the untrained policy's mean TTFT {untrained:.4f} s is already "
        f"{MARGIN:.0%} below default's {default:.4f} s"
    )

    with tracked_run("test-learning", "sac", default_tracking_uri(tmp_path), {"train": TRAINING}):
        bundle = train(TRAINING, tmp_path / "run", progress_bar=False)
    trained = RecordingPolicy(load_policy_bundle(bundle))
    learned = mean_ttft(trained)

    summary = f"mean TTFT: default {default:.4f} s, untrained {untrained:.4f} s, trained {learned:.4f} s"
    assert learned <= (1 - MARGIN) * default, f"trained is not {MARGIN:.0%} below default; {summary}"
    assert learned <= (1 - MARGIN) * untrained, f"trained is not {MARGIN:.0%} below untrained; {summary}"
    chosen = {(config.disable_wal, config.write_admission_hits) for config in trained.decisions}
    assert chosen == {(True, 0)}, (
        f"learned (disable_wal, write_admission_hits) decisions {sorted(chosen)}, not only the better "
        f"corner (True, 0); {summary}"
    )
