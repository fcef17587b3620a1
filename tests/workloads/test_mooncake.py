"""The Mooncake-format loader: exact expansion, errors with line numbers, slicing, scaling, caps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workloads import BLOCK_TOKENS, block_tokens, load_mooncake, make_workload, read_mooncake

TRACE = Path(__file__).resolve().parents[3] / "shared" / "data" / "traces" / "mooncake_synthetic_trace.jsonl"

LINES = [
    {"timestamp": 1000, "input_length": 1100, "output_length": 7, "hash_ids": [10, 11, 12]},
    {"timestamp": 1500, "input_length": 600, "output_length": 3, "hash_ids": [10, 20]},
    {"timestamp": 3000, "input_length": 512, "output_length": 0, "hash_ids": [30]},
]


def write_trace(path: Path, objects: list[object], blank_after_first: bool = True) -> Path:
    lines = [json.dumps(o) if not isinstance(o, str) else o for o in objects]
    if blank_after_first:
        lines.insert(1, "")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return write_trace(tmp_path / "trace.jsonl", list(LINES))


def test_blocks_expand_exactly_and_the_last_block_is_cut(trace: Path) -> None:
    requests = load_mooncake(trace, vocab_size=1000)
    assert [r.prompt_tokens for r in requests] == [1100, 600, 512]
    assert [r.output_len for r in requests] == [7, 3, 0]
    expected = np.random.default_rng(10).integers(0, 1000, BLOCK_TOKENS, dtype=np.uint32)
    np.testing.assert_array_equal(requests[0].tokens[:BLOCK_TOKENS], expected)
    np.testing.assert_array_equal(block_tokens(10, 1000), expected)
    np.testing.assert_array_equal(requests[0].tokens[1024:], block_tokens(12, 1000)[: 1100 - 1024])
    # equal leading ids give equal tokens; the next block differs
    np.testing.assert_array_equal(requests[0].tokens[:512], requests[1].tokens[:512])
    assert not np.array_equal(requests[0].tokens[512:600], requests[1].tokens[512:600])
    assert requests[0].tokens.dtype == np.uint32 and int(requests[0].tokens.max()) < 1000
    assert [r.arrival_s for r in requests] == [0.0, 0.5, 2.0]


def test_slicing_scaling_and_caps(trace: Path) -> None:
    sliced = load_mooncake(trace, start=1, limit=1)
    assert len(sliced) == 1 and sliced[0].prompt_tokens == 600 and sliced[0].arrival_s == 0.0
    fast = load_mooncake(trace, time_scale=0.5)
    assert [r.arrival_s for r in fast] == [0.0, 0.25, 1.0]
    capped = load_mooncake(trace, max_input_tokens=700, max_output_tokens=5)
    assert [r.prompt_tokens for r in capped] == [700, 600, 512]
    assert [r.output_len for r in capped] == [5, 3, 0]
    np.testing.assert_array_equal(capped[0].tokens, load_mooncake(trace)[0].tokens[:700])
    assert [rec.line for rec in read_mooncake(trace, start=1)] == [3, 4]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ({"timestamp": 0, "input_length": 5, "hash_ids": [1]}, "missing key(s) output_length"),
        ({"timestamp": "x", "input_length": 5, "output_length": 1, "hash_ids": [1]}, "timestamp must be"),
        ({"timestamp": 0, "input_length": -1, "output_length": 1, "hash_ids": []}, "input_length must be"),
        ({"timestamp": 0, "input_length": 0, "output_length": 1, "hash_ids": []}, "input_length is 0"),
        ({"timestamp": 0, "input_length": 5, "output_length": 1.5, "hash_ids": [1]}, "output_length must be"),
        ({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": [-3]}, "list of ints >= 0"),
        (
            {"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]},
            "1 hash_ids for input_length",
        ),
    ],
)
def test_malformed_lines_name_their_line(tmp_path: Path, line: object, message: str) -> None:
    path = write_trace(tmp_path / "bad.jsonl", [LINES[0], LINES[1], line])
    with pytest.raises(ValueError, match=r"bad\.jsonl:4: ") as raised:
        load_mooncake(path)
    assert message in str(raised.value)


def test_bad_options_and_missing_files(trace: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        load_mooncake(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="time_scale"):
        load_mooncake(trace, time_scale=0)
    with pytest.raises(ValueError, match="no records"):
        load_mooncake(trace, start=10)
    with pytest.raises(ValueError, match="limit"):
        load_mooncake(trace, limit=0)


@pytest.mark.skipif(not TRACE.is_file(), reason="the shared Mooncake trace is not on this machine")
def test_the_shared_trace_slice_keeps_its_prefix_structure() -> None:
    requests = make_workload("mooncake", path=TRACE, limit=40, max_input_tokens=4096)
    records = list(read_mooncake(TRACE, limit=40))
    assert len(requests) == 40
    by_ids = {}
    for record, request in zip(records, requests, strict=True):
        assert request.prompt_tokens == min(record.input_length, 4096)
        by_ids.setdefault(record.hash_ids[0], request)
        np.testing.assert_array_equal(
            request.tokens[:BLOCK_TOKENS], by_ids[record.hash_ids[0]].tokens[:BLOCK_TOKENS]
        )
