"""The typed record an environment step reports in ``info["step"]``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store import StoreConfig
from workloads.metrics import WindowMetrics

STEP_INFO_KEY = "step"


@dataclass(frozen=True)
class StepInfo:
    """One control window as the environment served it.

    ``window``: the replay's window metrics; ``hit_tokens`` / ``prompt_tokens``: token totals of its
    requests; ``ttft_s``: each request's TTFT; ``applied``: the store config in force (a proposal that
    did not fit the host-RAM budget is clamped); ``changed_knobs``: what the step changed; ``baseline``:
    the same window replayed with kvtune's defaults (with a reward relative to them; else ``None``).
    """

    window: WindowMetrics
    hit_tokens: int
    prompt_tokens: int
    ttft_s: list[float]
    applied: StoreConfig
    changed_knobs: dict[str, Any]
    baseline: WindowMetrics | None = None

    def metrics(self) -> dict[str, float]:
        """The window's numeric metrics and token totals, for logging."""
        values = {k: float(v) for k, v in self.window.to_dict().items() if isinstance(v, int | float)}
        return {**values, "hit_tokens": float(self.hit_tokens), "prompt_tokens": float(self.prompt_tokens)}


def step_info(info: dict[str, Any]) -> StepInfo:
    """The :class:`StepInfo` of a step's ``info`` dict; ``ValueError`` if it holds none."""
    record = info.get(STEP_INFO_KEY)
    if not isinstance(record, StepInfo):
        raise ValueError(
            f"info has no StepInfo under {STEP_INFO_KEY!r} (keys: {', '.join(info)}): pass the info "
            "returned by KVCacheTuningEnv.step"
        )
    return record
