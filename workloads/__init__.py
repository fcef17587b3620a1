"""Workloads: requests, trace loaders, synthetic generators, model profiles and the replay engine."""

from workloads.clocks import CLOCKS, IOCounters
from workloads.generators import GENERATORS, PAPER_TARGETS, chat, mixed, rag, staged
from workloads.memory_tier import HostMemoryTier
from workloads.metrics import RequestRecord, WindowMetrics
from workloads.mooncake import BLOCK_TOKENS, block_tokens, load_mooncake, read_mooncake
from workloads.profiles import (
    DEVICE_PROFILES,
    MODEL_PROFILES,
    THIS_MACHINE,
    Accelerator,
    DeviceProfile,
    ModelProfile,
    get_device_profile,
    get_profile,
)
from workloads.registry import WORKLOADS, make_workload, workload_options
from workloads.replay import (
    PREFETCH_POLICIES,
    WRITE_POLICIES,
    ReplayConfig,
    ReplayResult,
    ReplaySession,
    replay,
)
from workloads.requests import Request

__all__ = [
    "BLOCK_TOKENS",
    "CLOCKS",
    "DEVICE_PROFILES",
    "GENERATORS",
    "MODEL_PROFILES",
    "PAPER_TARGETS",
    "PREFETCH_POLICIES",
    "THIS_MACHINE",
    "WORKLOADS",
    "WRITE_POLICIES",
    "Accelerator",
    "DeviceProfile",
    "HostMemoryTier",
    "IOCounters",
    "ModelProfile",
    "ReplayConfig",
    "ReplayResult",
    "ReplaySession",
    "Request",
    "RequestRecord",
    "WindowMetrics",
    "block_tokens",
    "chat",
    "get_device_profile",
    "get_profile",
    "load_mooncake",
    "make_workload",
    "mixed",
    "rag",
    "read_mooncake",
    "replay",
    "staged",
    "workload_options",
]
