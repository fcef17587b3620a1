"""The Gymnasium environment: the store, under a workload, as something an agent learns to tune.

Importing this package registers ``kvtune/KVCacheTuning-v0``.
"""

import gymnasium

from env.actions import ACTION_SCHEMA_VERSION, DEFAULT_ACTION_KNOBS, ActionKnob, ActionMapper
from env.config import EnvConfig, RewardConfig
from env.observation import FEATURES, OBSERVATION_SCHEMA_VERSION, WindowFeatures, encode_observation
from env.step_info import StepInfo, step_info
from env.tuning_env import KVCacheTuningEnv, build_requests
from env.wrappers import DiscreteKnobActions

ENV_ID = "kvtune/KVCacheTuning-v0"

# The store's background flushes and compactions, and the writer thread's batching, make transitions
# vary slightly between same-seed runs (the workload itself is fixed by the seed): hence nondeterministic.
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="env.tuning_env:KVCacheTuningEnv", nondeterministic=True)

__all__ = [
    "ACTION_SCHEMA_VERSION",
    "DEFAULT_ACTION_KNOBS",
    "ENV_ID",
    "FEATURES",
    "OBSERVATION_SCHEMA_VERSION",
    "ActionKnob",
    "ActionMapper",
    "DiscreteKnobActions",
    "EnvConfig",
    "KVCacheTuningEnv",
    "RewardConfig",
    "StepInfo",
    "WindowFeatures",
    "build_requests",
    "encode_observation",
    "step_info",
]
