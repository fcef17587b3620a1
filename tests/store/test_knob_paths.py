"""Every knob reaches what its declaration says sets it, by both paths: the options a store opens with,
and a live (or reopening) :meth:`KVStore.apply`. RocksDB column-family options are read back from the
``OPTIONS-*`` file RocksDB writes, the block cache from RocksDB's ``rocksdb.block-cache-capacity``
property and the WAL switch from the write-ahead log's growth."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from store import KVStore, StoreConfig
from store.config import MiB
from tests.store.conftest import PAGE_SIZE, make_kv, make_tokens, open_kind

SPECS = StoreConfig.specs()
ROCKSDB_KNOBS = [name for name, spec in SPECS.items() if spec.rocksdb_option is not None]
_OPTIONS_FILE = re.compile(r"^OPTIONS-\d+$")


def _other_value(name: str) -> object:
    """A valid value of knob ``name`` other than its default (a range end, or another choice)."""
    spec, default = SPECS[name], getattr(StoreConfig(), name)
    if spec.choices:
        return next(choice for choice in spec.choices if choice != default)
    assert spec.low is not None and spec.high is not None
    return spec.kind(spec.low if default != spec.low else spec.high)


OTHER = StoreConfig(**{name: _other_value(name) for name in ROCKSDB_KNOBS})


def _column_family_options(path: Path) -> dict[str, str]:
    """The default column family's options in the newest ``OPTIONS-*`` file of the database at ``path``."""
    newest = max(
        (entry for entry in path.iterdir() if _OPTIONS_FILE.match(entry.name)),
        key=lambda entry: int(entry.name.removeprefix("OPTIONS-")),
    )
    section, options = "", {}
    for line in map(str.strip, newest.read_text().splitlines()):
        if line.startswith("["):
            section = line
        elif section == '[CFOptions "default"]' and "=" in line:
            key, value = line.split("=", 1)
            options[key.strip()] = value.strip()
    return options


@pytest.fixture(scope="module")
def read_back(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """RocksDB's options after opening with :data:`OTHER`, and after applying it live to a default store."""
    root = tmp_path_factory.mktemp("knobs")
    with open_kind("lsm", root / "at-open", config=OTHER):
        pass
    with open_kind("lsm", root / "live") as store:
        assert store.apply(OTHER) == []
    return {"open": _column_family_options(root / "at-open"), "live": _column_family_options(root / "live")}


def _as_value(text: str, kind: type) -> object:
    return {"true": True, "false": False}[text] if kind is bool else text if kind is str else float(text)


@pytest.mark.parametrize("name", ROCKSDB_KNOBS)
@pytest.mark.parametrize("path", ["open", "live"])
def test_every_rocksdb_knob_reaches_rocksdb(
    read_back: dict[str, dict[str, str]], path: str, name: str
) -> None:
    spec = SPECS[name]
    assert spec.rocksdb_option is not None
    expected = OTHER.rocksdb_options()[spec.rocksdb_option]
    kind = spec.kind if spec.kind in (bool, str) else float
    assert _as_value(read_back[path][spec.rocksdb_option], kind) == _as_value(expected, kind)
    assert _as_value(expected, kind) != _as_value(StoreConfig().rocksdb_options()[spec.rocksdb_option], kind)


def test_live_apply_sets_only_the_changed_rocksdb_options() -> None:
    changed = StoreConfig().changed(OTHER)
    assert set(OTHER.rocksdb_options(changed)) == {SPECS[name].rocksdb_option for name in ROCKSDB_KNOBS}
    assert OTHER.rocksdb_options(["write_buffer_size", "disable_wal"]) == {
        "write_buffer_size": OTHER.rocksdb_options()["write_buffer_size"]
    }


def _block_cache_bytes(store: KVStore) -> int:
    capacity = store._db.property_int_value("rocksdb.block-cache-capacity")  # type: ignore[attr-defined]
    assert isinstance(capacity, int)
    return capacity


def test_block_cache_reaches_rocksdb_at_open_and_on_reopen(tmp_path: Path) -> None:
    with open_kind("lsm", tmp_path / "open", config=StoreConfig(block_cache_bytes=8 * MiB)) as store:
        assert _block_cache_bytes(store) == 8 * MiB
    with open_kind("lsm", tmp_path / "apply") as store:
        assert _block_cache_bytes(store) == StoreConfig().block_cache_bytes
        assert store.apply(StoreConfig(block_cache_bytes=4 * MiB)) == ["block_cache_bytes"]
        assert _block_cache_bytes(store) == 4 * MiB


def _wal_growth(store: KVStore, path: Path, seed: int) -> int:
    """Bytes the write-ahead log files grew by while one 4-page prompt was put."""

    def wal_bytes() -> int:
        return sum(entry.stat().st_size for entry in path.glob("*.log"))

    before = wal_bytes()
    store.put_batch(make_tokens(seed, 4 * PAGE_SIZE), make_kv(seed, 4 * PAGE_SIZE))
    return wal_bytes() - before


def test_disable_wal_reaches_every_write_at_open_and_live(tmp_path: Path) -> None:
    page_bytes = make_kv(0, PAGE_SIZE).numel() * make_kv(0, PAGE_SIZE).element_size()
    unlogged = StoreConfig(disable_wal=True, wal_max_page_bytes=page_bytes - 1)
    with open_kind("lsm", tmp_path / "off", config=unlogged) as store:
        assert _wal_growth(store, tmp_path / "off", 1) == 0
    with open_kind("lsm", tmp_path / "live", config=StoreConfig(disable_wal=False)) as store:
        assert _wal_growth(store, tmp_path / "live", 2) >= 4 * page_bytes
        store.apply(unlogged)
        assert _wal_growth(store, tmp_path / "live", 3) == 0


def test_every_knob_says_how_it_is_set() -> None:
    for name, spec in SPECS.items():
        assert spec.name == name
        assert spec.how_set(), f"knob {name} declares neither a RocksDB option nor set_by"
        assert (spec.rocksdb_option is None) == bool(spec.set_by), name
    assert SPECS["write_admission_hits"].how_set().startswith("serving knob, not RocksDB's")
    assert (
        "Options.set_level_zero_stop_writes_trigger at open" in SPECS["level0_stop_writes_trigger"].how_set()
    )
