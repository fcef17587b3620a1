"""``kvtune deploy``'s engine: a replay with the controller deciding after every window."""

from __future__ import annotations

import json
from pathlib import Path

from agents.controller import GUARD_NAMES, Guards
from env.config import EnvConfig
from experiments.deploy import deploy


def test_a_static_policy_is_applied_after_the_first_window_and_kept(tmp_path: Path) -> None:
    static = tmp_path / "best.json"
    static.write_text(json.dumps({"knobs": {"writer_batch_size": 64}}))
    setup = EnvConfig(workload="staged", requests_per_window=16)
    seen: list[int] = []
    # read latency on a shared machine is noise: floors no window reaches keep rollback out of this test
    calm = Guards(stall_floor=1.0, drop_floor=1.0, read_p99_floor_s=60.0)
    result = deploy(
        f"static:{static}",
        setup,
        seed=3,
        path=tmp_path / "store",
        guards=calm,
        on_window=lambda w: seen.append(w.index),
    )
    assert seen == list(range(7)), "112 small staged requests in windows of 16"
    assert result.windows[0].applied == {"writer_batch_size": 64}
    assert all(w.applied == {} for w in result.windows[1:])
    assert [w.writer_batch_size for w in result.windows] == [64] * 7
    assert set(result.guard_counts) == set(GUARD_NAMES) and sum(result.guard_counts.values()) == 0
    assert 0.0 < result.hit_token_ratio <= 1.0 and result.mean_ttft_s > 0
