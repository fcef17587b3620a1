"""The summary rows of ``kvtune run``'s policy step: ratios and verdicts on known episodes."""

from __future__ import annotations

from agents.evaluation import EpisodeResult
from experiments.quick import NO_DIFFERENCE, policy_rows


def episode(policy: str, hit: float, ttft_s: float) -> EpisodeResult:
    return EpisodeResult(policy, 0.0, 70, hit, ttft_s, ttft_s, 0)


def test_policy_rows_compare_each_policy_with_the_defaults() -> None:
    rows = policy_rows(
        [episode("default", 0.25, 0.020), episode("static-x", 0.25, 0.0205), episode("learned-y", 0.5, 0.015)]
    )
    assert [(r.subject, r.metric, r.subject_value, r.baseline_value, r.verdict) for r in rows] == [
        ("static-x", "mean TTFT ms", 20.5, 20.0, NO_DIFFERENCE),
        ("static-x", "hit ratio", 0.25, 0.25, "+0.000 hit ratio"),
        ("learned-y", "mean TTFT ms", 15.0, 20.0, "faster than defaults by 25%"),
        ("learned-y", "hit ratio", 0.5, 0.25, "+0.250 hit ratio"),
    ]
    assert rows[2].ratio == 0.75
