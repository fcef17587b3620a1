"""Typed, range-checked tuning knobs of a store (:class:`StoreConfig`) and their specs.

Every knob has a :class:`KnobSpec`: its valid range (or choices), the scale a tuner should search it on,
and whether a live store can take a new value (``live``) or must be reopened. RocksDB knobs are mutable
column-family options (``DB::SetOptions``); the rest belong to kvtune's runtime services.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

Scale = Literal["log", "linear", "choice"]


@dataclass(frozen=True)
class KnobSpec:
    """What one knob accepts and how it behaves."""

    name: str
    kind: type
    scale: Scale
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()
    live: bool = True
    rocksdb_option: str | None = None
    doc: str = ""

    def valid_range(self) -> str:
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        return f"[{_exact(self.low)}, {_exact(self.high)}]"

    def check(self, value: Any) -> Any:
        """Return ``value`` coerced to the knob's type, or raise ``ValueError`` naming the knob."""
        if self.choices:
            if value not in self.choices:
                raise ValueError(
                    f"knob {self.name}={value!r} is invalid: valid values are {self.valid_range()}"
                )
            return value
        if self.kind is int:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()))
            ):
                raise ValueError(f"knob {self.name}={value!r} must be an integer in {self.valid_range()}")
            value = int(value)
        elif self.kind is float:
            if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(float(value)):
                raise ValueError(f"knob {self.name}={value!r} must be a number in {self.valid_range()}")
            value = float(value)
        if self.low is None or self.high is None or not self.low <= value <= self.high:
            raise ValueError(
                f"knob {self.name}={value!r} is out of range: valid range is {self.valid_range()}"
            )
        return value


def _exact(bound: float | None) -> str:
    """A range bound as written: 1048576, not 1.04858e+06."""
    if bound is None:
        return "?"
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


class _NamedKnobs(type):
    """Makes ``StoreConfig(unknown=...)`` a ``ValueError`` that lists the valid knobs (not a TypeError)."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise ValueError(f"unknown knob(s) {', '.join(unknown)}; valid knobs: {', '.join(sorted(known))}")
        return super().__call__(*args, **kwargs)


def _knob(default: Any, spec: KnobSpec) -> Any:
    return field(default=default, metadata={"spec": spec})


@dataclass(frozen=True)
class StoreConfig(metaclass=_NamedKnobs):
    """The tunable knobs of a store. Defaults are RocksDB's own, with the tensors in 32 MiB blob files and
    the write-ahead log off (a KV cache's lost page is a miss; ``flush()`` is the durability point).

    Construct with keywords; any out-of-range or unknown knob raises ``ValueError``.
    """

    write_buffer_size: int = _knob(
        64 * MiB,
        KnobSpec(
            "write_buffer_size",
            int,
            "log",
            1 * MiB,
            1 * GiB,
            rocksdb_option="write_buffer_size",
            doc="bytes of one memtable",
        ),
    )
    max_write_buffer_number: int = _knob(
        2,
        KnobSpec(
            "max_write_buffer_number",
            int,
            "linear",
            2,
            16,
            rocksdb_option="max_write_buffer_number",
            doc="memtables (active + immutable) before writes stall",
        ),
    )
    level0_file_num_compaction_trigger: int = _knob(
        4,
        KnobSpec(
            "level0_file_num_compaction_trigger",
            int,
            "log",
            1,
            64,
            rocksdb_option="level0_file_num_compaction_trigger",
            doc="L0 files that start an L0->L1 compaction",
        ),
    )
    level0_slowdown_writes_trigger: int = _knob(
        20,
        KnobSpec(
            "level0_slowdown_writes_trigger",
            int,
            "log",
            1,
            256,
            rocksdb_option="level0_slowdown_writes_trigger",
            doc="L0 files that slow writes down",
        ),
    )
    level0_stop_writes_trigger: int = _knob(
        36,
        KnobSpec(
            "level0_stop_writes_trigger",
            int,
            "log",
            1,
            512,
            rocksdb_option="level0_stop_writes_trigger",
            doc="L0 files that stop writes",
        ),
    )
    target_file_size_base: int = _knob(
        64 * MiB,
        KnobSpec(
            "target_file_size_base",
            int,
            "log",
            1 * MiB,
            1 * GiB,
            rocksdb_option="target_file_size_base",
            doc="bytes of one L1 SST file",
        ),
    )
    max_bytes_for_level_base: int = _knob(
        256 * MiB,
        KnobSpec(
            "max_bytes_for_level_base",
            int,
            "log",
            4 * MiB,
            8 * GiB,
            rocksdb_option="max_bytes_for_level_base",
            doc="bytes of L1 before it compacts into L2",
        ),
    )
    max_bytes_for_level_multiplier: float = _knob(
        10.0,
        KnobSpec(
            "max_bytes_for_level_multiplier",
            float,
            "linear",
            2.0,
            20.0,
            rocksdb_option="max_bytes_for_level_multiplier",
            doc="size ratio of adjacent levels",
        ),
    )
    enable_blob_files: bool = _knob(
        True,
        KnobSpec(
            "enable_blob_files",
            bool,
            "choice",
            choices=(False, True),
            rocksdb_option="enable_blob_files",
            doc="separate values of at least min_blob_size into blob files",
        ),
    )
    min_blob_size: int = _knob(
        4 * KiB,
        KnobSpec(
            "min_blob_size",
            int,
            "log",
            64,
            64 * MiB,
            rocksdb_option="min_blob_size",
            doc="smallest value stored in a blob file; smaller values stay inline in SSTs",
        ),
    )
    blob_file_size: int = _knob(
        32 * MiB,
        KnobSpec(
            "blob_file_size",
            int,
            "log",
            1 * MiB,
            4 * GiB,
            rocksdb_option="blob_file_size",
            doc="bytes of one blob file (RocksDB's default: 256 MiB; smaller files let a budgeted store "
            "free space file by file)",
        ),
    )
    blob_compression_type: str = _knob(
        "none",
        KnobSpec(
            "blob_compression_type",
            str,
            "choice",
            choices=("none", "lz4", "zstd"),
            rocksdb_option="blob_compression_type",
            doc="compression of blob files",
        ),
    )
    enable_blob_garbage_collection: bool = _knob(
        False,
        KnobSpec(
            "enable_blob_garbage_collection",
            bool,
            "choice",
            choices=(False, True),
            rocksdb_option="enable_blob_garbage_collection",
            doc="relocate live blobs out of old blob files",
        ),
    )
    blob_garbage_collection_age_cutoff: float = _knob(
        0.25,
        KnobSpec(
            "blob_garbage_collection_age_cutoff",
            float,
            "linear",
            0.0,
            1.0,
            rocksdb_option="blob_garbage_collection_age_cutoff",
            doc="oldest fraction of blob files GC touches",
        ),
    )
    blob_garbage_collection_force_threshold: float = _knob(
        1.0,
        KnobSpec(
            "blob_garbage_collection_force_threshold",
            float,
            "linear",
            0.0,
            1.0,
            rocksdb_option="blob_garbage_collection_force_threshold",
            doc="garbage ratio of the oldest blob files that forces a compaction",
        ),
    )
    disable_wal: bool = _knob(
        True,
        KnobSpec(
            "disable_wal",
            bool,
            "choice",
            choices=(False, True),
            doc="skip the write-ahead log: unflushed pages are lost on a crash (never returned wrong)",
        ),
    )
    writer_batch_size: int = _knob(
        16,
        KnobSpec(
            "writer_batch_size",
            int,
            "log",
            1,
            1024,
            doc="put requests the async writer merges into one write",
        ),
    )
    writer_queue_depth: int = _knob(
        64,
        KnobSpec(
            "writer_queue_depth",
            int,
            "log",
            1,
            4096,
            doc="put requests the async writer queues before its overflow policy applies",
        ),
    )
    writer_overflow: str = _knob(
        "block",
        KnobSpec(
            "writer_overflow",
            str,
            "choice",
            choices=("block", "drop"),
            doc="what a full writer queue does: block the caller, or drop the request (counted)",
        ),
    )
    eviction_order: str = _knob(
        "lru",
        KnobSpec(
            "eviction_order",
            str,
            "choice",
            choices=("lru", "fifo"),
            doc="capacity manager: least-recently-used leaves first, or oldest-written subtrees first",
        ),
    )
    reclaim: str = _knob(
        "relocate",
        KnobSpec(
            "reclaim",
            str,
            "choice",
            choices=("relocate", "blob_age", "generations"),
            doc="how the lsm store frees disk under a budget: 'relocate' evicts in eviction_order, then "
            "blob GC copies live pages out of partly-freed blob files; 'blob_age' evicts in write order "
            "(so whole blob files become garbage and are deleted, nothing is copied) and re-writes a hit "
            "page that is about to be evicted (eviction_order does not apply); 'generations' does the "
            "same with values in one column family per 1/8 of the budget written, dropped whole "
            "(no compaction; its atomic flush and shared memtable cap apply from the next reopen)",
        ),
    )
    key_scheme: str = _knob(
        "prefix",
        KnobSpec(
            "key_scheme",
            str,
            "choice",
            choices=("prefix", "flat"),
            live=False,
            doc="how the lsm store keys a page, fixed when its directory is created: 'prefix' (one short "
            "digest per page of the prefix, so a prompt's pages and every continuation are one key range) "
            "or 'flat' (the page's own chained digest only, as SGLang names pages); a store refuses a "
            "reopen with the other scheme",
        ),
    )
    write_admission_hits: int = _knob(
        0,
        KnobSpec(
            "write_admission_hits",
            int,
            "linear",
            0,
            8,
            doc="hits a page needs in the memory tier before it is written to disk (0: write-through)",
        ),
    )
    block_cache_bytes: int = _knob(
        32 * MiB,
        KnobSpec(
            "block_cache_bytes",
            int,
            "log",
            1 * MiB,
            4 * GiB,
            live=False,
            doc="RocksDB block cache (SST blocks: keys and metadata records)",
        ),
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["spec"].check(getattr(self, f.name)))
        if self.level0_slowdown_writes_trigger > self.level0_stop_writes_trigger:
            raise ValueError(
                "knob level0_slowdown_writes_trigger="
                f"{self.level0_slowdown_writes_trigger} must not exceed level0_stop_writes_trigger="
                f"{self.level0_stop_writes_trigger}: raise the stop trigger or lower the slowdown trigger"
            )

    @classmethod
    def specs(cls) -> dict[str, KnobSpec]:
        return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: StoreConfig | None = None) -> StoreConfig:
        """Build a config from ``values`` over ``base`` (defaults); unknown knobs raise ``ValueError``."""
        specs = cls.specs()
        unknown = sorted(set(values) - set(specs))
        if unknown:
            raise ValueError(f"unknown knob(s) {', '.join(unknown)}; valid knobs: {', '.join(specs)}")
        return dataclasses.replace(base or cls(), **dict(values))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> StoreConfig:
        return StoreConfig.from_dict(changes, base=self)

    def changed(self, other: StoreConfig) -> dict[str, Any]:
        """Knobs whose value in ``other`` differs from this config's, with ``other``'s values."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {name: value for name, value in theirs.items() if mine[name] != value}

    def needs_reopen(self, other: StoreConfig) -> list[str]:
        specs = self.specs()
        return [name for name in self.changed(other) if not specs[name].live]

    def rocksdb_options(self) -> dict[str, str]:
        """The RocksDB knobs as ``DB::SetOptions`` strings."""
        result: dict[str, str] = {}
        for name, spec in self.specs().items():
            if spec.rocksdb_option is None:
                continue
            value = getattr(self, name)
            if name == "blob_compression_type":
                text = {"none": "kNoCompression", "lz4": "kLZ4Compression", "zstd": "kZSTD"}[value]
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            result[spec.rocksdb_option] = text
        return result
