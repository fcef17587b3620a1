"""``kvtune bench store``: every store kind side by side, with a raw-disk reference.

Method (what the numbers mean):

- **Kinds.** ``lsm``, ``file``, ``applog``, ``memory`` (those that import) and ``raw``: the same bytes
  written with ``os.write`` to one file, ``fsync``-ed, and read back with ``preadv`` into a tensor.
- **Isolation.** Every (kind, stored-page level) runs in its own worker process (forked from a
  forkserver), so its resident memory (``VmRSS``) belongs to that store alone. The orchestrator runs one
  worker at a time: the kinds never compete for the two cores or the disk.
- **Interleaving.** The disk drifts up to 2.5x within minutes, so each round measures one operation on
  every kind back to back (put on A B C ..., then probe on A B C ..., ...), the kind order rotating from
  round to round. A ratio is the median over rounds of the per-round ratio (:func:`median_pair_ratio`),
  never a ratio of medians taken in different minutes. The 100k-vs-1M comparison is paired the same way:
  a store per level, both measured in every round.
- **Put** is durable: the time of the ``put_batch`` calls plus ``flush()`` and ``os.sync()`` (an untimed
  ``os.sync()`` first, so only this put's bytes are synced). Raw: the writes plus ``fsync``. Background
  work a put leaves (RocksDB flushes/compactions) is waited for, untimed, before the next kind runs.
- **Probe** asks for a prompt of ``prompt_pages`` pages whose first ``h`` pages are stored, ``h`` uniform
  in ``0..prompt_pages``; every answer is checked. Probes and gets take the prompt's precomputed
  ``PagePlan`` (hashed once per request, untimed, as SGLang passes its page hashes); puts take tokens.
  Each kind uses its own implementation (the file kind its per-page existence checks).
- **Get** reads whole prompts with ``get_batch``. ``warm``: the prompts were read once, untimed, so they
  are in the page cache. ``cold``: the lsm store's memtables flushed to files (with the WAL on, a put's
  pages may still be in memory), then ``os.sync()`` and ``posix_fadvise(DONTNEED)`` on every file in the
  store directory (SST, blob, segment or page files); process-internal caches (RocksDB's block cache,
  the kinds' in-memory indexes) and the kernel's inode/dentry caches stay warm. One read per round is
  compared bit for bit with what was put.
- **Reopen**: ``close()`` (untimed) then the time to open the store again, ready to serve: ``cold``
  after dropping the store's files from the page cache (a restart after a reboot) and, if
  ``reopen_caches`` asks for it, ``warm`` right after (a process restart). Measured in the last
  ``reopen_rounds`` rounds only: the baselines rebuild in-memory indexes from every page, which takes
  minutes at a million pages (the file kind's warm reopen costs about as much as its cold one).
- **Fill.** Before the rounds each store is filled to its level with the same ``put_batch`` calls, all
  stores at once, each in chunks it asks for as soon as it is done (two cores; so fill times are
  indicative, not measurements). ``fill.csv`` and the report's fill table give each store's pages per
  second as it grows. ``fill_caps`` (``--fill-cap-seconds``) stop a kind's fill after that many seconds of
  its own fill time; a fill that is capped or fails with an ``OSError`` (no space, no inodes) is reported
  with the pages it reached, and that kind's later phases are skipped.
- **Pages.** Prompt tokens come from a counter hashed per token (deterministic, cheap). Each prompt's
  tensor is one of two random pool tensors with every page's first 8 bytes set to its page number in the
  store, so no two stored pages are alike: a get that returned another page fails the byte check.
"""

from __future__ import annotations

from experiments.bench_store.config import DISK_KINDS, KINDS, RAW, BenchConfig, Scenario
from experiments.bench_store.ratios import level_ratios, median_pair_ratio, pair_ratios
from experiments.bench_store.records import (
    FOOTPRINT_COLUMNS,
    MEASUREMENT_COLUMNS,
    RATIO_COLUMNS,
    BenchError,
    BenchResult,
    Footprint,
    Measurement,
    Ratio,
    TargetCheck,
)
from experiments.bench_store.report import ReportTable, report_tables, write_outputs
from experiments.bench_store.runner import ProgressCallback, run_bench

__all__ = [
    "DISK_KINDS",
    "FOOTPRINT_COLUMNS",
    "KINDS",
    "MEASUREMENT_COLUMNS",
    "RATIO_COLUMNS",
    "RAW",
    "BenchConfig",
    "BenchError",
    "BenchResult",
    "Footprint",
    "Measurement",
    "ProgressCallback",
    "Ratio",
    "ReportTable",
    "Scenario",
    "TargetCheck",
    "level_ratios",
    "median_pair_ratio",
    "pair_ratios",
    "report_tables",
    "run_bench",
    "write_outputs",
]
