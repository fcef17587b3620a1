"""``kvtune knobs`` prints one row per knob, read from the knob's declaration."""

from __future__ import annotations

from typer.testing import CliRunner

from experiments.cli import app
from store import StoreConfig


def test_knobs_prints_every_declaration() -> None:
    result = CliRunner().invoke(app, ["knobs"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("| knob | default | valid range |")
    assert [line.split(" | ")[0].strip("|` ") for line in lines[2:]] == list(StoreConfig.specs())
    assert (
        "| `write_buffer_size` | 67108864 | [1048576, 1073741824] | log | live | [1048576, 268435456] | "
        "RocksDB option write_buffer_size: Options.set_write_buffer_size at open, DB::SetOptions live | "
        "bytes of one memtable; under a budget at most 1/8 of it (store.knob_bounds) |"
    ) in lines
    admission = next(line for line in lines if line.startswith("| `write_admission_hits`"))
    assert "| [0, 4] | serving knob, not RocksDB's" in admission
    stop = next(line for line in lines if line.startswith("| `level0_stop_writes_trigger`"))
    assert "| derived from level0_slowdown_writes_trigger |" in stop
    assert "| reopen |" in next(line for line in lines if line.startswith("| `block_cache_bytes`"))
