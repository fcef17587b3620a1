"""Crash rounds: a child process writing pages is SIGKILLed at a random moment, then the store is reopened.

The harness behind ``kvtune bench crash`` and ``tests/store/test_crash.py``. Each store directory gets
``rounds_per_store`` consecutive crashes in one of three modes:

- ``plain``: the child only writes;
- ``knobs``: the child also applies a live knob change (``store.apply``) before every prompt, so many
  kills land inside one;
- ``reclaim``: the same under a byte budget small enough that eviction and compaction run on most writes.

After every kill the store is reopened and checked: every prompt whose ``put_batch`` returned before the
kill (``flush()`` with the write-ahead log off) must be whole, and every page ``get_batch`` returns must be
bit-exact. Under a budget, eviction may legitimately take an acknowledged page, so ``reclaim`` stores count
wrong tensors and page-count mismatches but not lost pages. After a store's last round, every prompt ever
attempted is probed and ``stats().pages_stored`` must equal the distinct pages present.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import random
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from experiments.stress import KNOB_CONFIGS, LAYOUT, PAGE_SIZE, deterministic_kv
from store import KVStore, StoreConfig, open_store

logger = logging.getLogger(__name__)

MODES = ("plain", "knobs", "reclaim")
RECLAIM_BUDGET_BYTES = 1 << 20
"""32 pages of :data:`~experiments.stress.LAYOUT`: a few prompts, so most writes trigger a reclaim."""
N_STEMS = 5
FLUSH_EVERY_WITHOUT_WAL = 2
SAMPLE_EARLIER = 20
SAMPLE_FINAL = 200
START_TIMEOUT_S = 60.0
NAMESPACE = "crash"


@dataclass(frozen=True)
class CrashConfig:
    kind: str
    path: Path
    rounds: int
    disable_wal: bool = False
    wal_max_page_bytes: int = StoreConfig().wal_max_page_bytes
    """With ``disable_wal``, pages of at most this many bytes still go through the WAL (the store's knob)."""
    seed: int = 0
    kill_after_s: tuple[float, float] = (0.05, 0.25)
    rounds_per_store: int = 5
    """Consecutive crashes on one directory; a fresh one now and then keeps the reopen scans short."""

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.rounds_per_store < 1:
            raise ValueError(
                f"rounds and rounds_per_store must be >= 1, got {self.rounds}, {self.rounds_per_store}"
            )
        low, high = self.kill_after_s
        if not 0 < low <= high:
            raise ValueError(
                f"kill_after_s must be (low, high) with 0 < low <= high, got {self.kill_after_s}"
            )
        if self.disable_wal and self.kind != "lsm":
            raise ValueError(f"only lsm has a write-ahead log to turn off, got kind {self.kind!r}")

    def store_config(self) -> StoreConfig:
        return StoreConfig(disable_wal=self.disable_wal, wal_max_page_bytes=self.wal_max_page_bytes)


@dataclass
class CrashReport:
    """What the rounds found; :attr:`ok` when nothing was wrong or lost."""

    kind: str
    disable_wal: bool
    rounds: int = 0
    rounds_by_mode: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))
    prompts_acknowledged: int = 0
    durable_prompts_checked: int = 0
    pages_read_back: int = 0
    kills_during_apply: int = 0
    wrong_tensors: int = 0
    lost_durable_pages: int = 0
    page_count_mismatches: int = 0

    @property
    def ok(self) -> bool:
        return self.wrong_tensors == 0 and self.lost_durable_pages == 0 and self.page_count_mismatches == 0


def crash_prompt(index: int) -> torch.Tensor:
    """Prompt ``index``: 0-3 pages of one of five shared stems, then 3 pages and 1 token of its own."""
    stem = _tokens(90_000 + index % N_STEMS, 3 * PAGE_SIZE)[: PAGE_SIZE * (index % 4)]
    return torch.cat([stem, _tokens(1_000_000 + index, 3 * PAGE_SIZE + 1)])


def _tokens(seed: int, n_tokens: int) -> torch.Tensor:
    return torch.randint(
        0, 50_000, (n_tokens,), generator=torch.Generator().manual_seed(seed), dtype=torch.int64
    )


def _open(kind: str, path: Path, mode: str, config: StoreConfig) -> KVStore:
    budget = RECLAIM_BUDGET_BYTES if mode == "reclaim" else None
    return open_store(kind, path, LAYOUT, PAGE_SIZE, budget, config, namespace=NAMESPACE)


def write_until_killed(
    *, kind: str, path: str, mode: str, store_config: StoreConfig, first: int, conn: Connection
) -> None:
    """The child: put prompts ``first, first+1, ...`` until killed.

    Messages, each one write of a few bytes to a pipe (which a SIGKILL cannot tear): ``ready`` once open;
    ``P<i>`` after ``put_batch`` of prompt i returned; with the WAL off, ``F<i>`` after every
    ``FLUSH_EVERY_WITHOUT_WAL`` prompts were flushed (every prompt up to i must survive); outside ``plain``
    mode ``A`` before and ``a`` after each knob change.
    """
    store = _open(kind, Path(path), mode, store_config)
    conn.send_bytes(b"ready")
    index = first
    while True:
        if mode != "plain":
            conn.send_bytes(b"A")
            store.apply(store.config.replace(**KNOB_CONFIGS[index % len(KNOB_CONFIGS)]))
            conn.send_bytes(b"a")
        tokens = crash_prompt(index)
        store.put_batch(tokens, deterministic_kv(tokens))
        conn.send_bytes(b"P%d" % index)
        if store_config.disable_wal and (index - first + 1) % FLUSH_EVERY_WITHOUT_WAL == 0:
            store.flush()
            conn.send_bytes(b"F%d" % index)
        index += 1


def forkserver_context() -> Any:
    """A ``forkserver`` context that imported torch and the store once: a fresh interpreter needs seconds
    just to import torch, too slow for hundreds of rounds."""
    context = multiprocessing.get_context("forkserver")
    # "__main__" too, or every child re-imports it before it starts
    context.set_forkserver_preload(["__main__", "torch", "store", "store.lsm", "experiments.crash"])
    return context


def _drain(reader: Connection) -> list[bytes]:
    messages = []
    while reader.poll(0):
        try:
            messages.append(reader.recv_bytes())
        except EOFError:
            break
    return messages


def _run_and_kill(context: Any, delay: float, **child: Any) -> list[bytes]:
    """Start the writer, let it write for ``delay`` seconds, SIGKILL it; return what it reported."""
    reader, writer = context.Pipe(duplex=False)
    process = context.Process(target=write_until_killed, kwargs={**child, "conn": writer})
    process.start()
    writer.close()
    try:
        started = reader.poll(START_TIMEOUT_S) and reader.recv_bytes() == b"ready"
        if not started:
            raise RuntimeError(
                f"the crash writer did not open {child['path']} (exit code {process.exitcode})"
            )
        time.sleep(delay)  # the crash timer
        if not process.is_alive():
            raise RuntimeError(f"the crash writer died on its own with exit code {process.exitcode}")
        process.kill()
    finally:
        process.kill()  # a no-op once it is dead; the child must never outlive its round
        process.join(30)
    messages = _drain(reader)
    reader.close()
    return messages


@functools.lru_cache(maxsize=4096)
def _expected(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = crash_prompt(index)
    return tokens, deterministic_kv(tokens)


class _Checker:
    def __init__(self, report: CrashReport) -> None:
        self.report = report

    def check(self, store: KVStore, index: int, required: bool, read: bool = True) -> int:
        """Probe prompt ``index`` and read back what is there; returns the pages present."""
        tokens, kv = _expected(index)
        n_pages = len(tokens) // PAGE_SIZE
        present = store.probe(tokens)
        if required:
            self.report.durable_prompts_checked += 1
            if present < n_pages:
                self.report.lost_durable_pages += n_pages - present
                logger.error(
                    "prompt %d was acknowledged durable but %d/%d pages survived", index, present, n_pages
                )
        if read and present:
            got = store.get_batch(tokens, present)
            self.report.pages_read_back += present
            expected = kv[:, :, : present * PAGE_SIZE]
            if not torch.equal(got.contiguous().view(torch.int16), expected.contiguous().view(torch.int16)):
                self.report.wrong_tensors += 1
                logger.error("prompt %d: get_batch returned a wrong tensor (%d pages)", index, present)
        return present


def _crash_one_store(
    context: Any,
    config: CrashConfig,
    path: Path,
    mode: str,
    rounds: int,
    rng: random.Random,
    report: CrashReport,
) -> None:
    checker = _Checker(report)
    counts_loss = mode != "reclaim"
    durable: list[int] = []
    attempted: set[int] = set()
    for round_index in range(rounds):
        first = 100_000 * (round_index + 1)
        messages = _run_and_kill(
            context,
            rng.uniform(*config.kill_after_s),
            kind=config.kind,
            path=str(path),
            mode=mode,
            store_config=config.store_config(),
            first=first,
        )
        put_done = [int(m[1:]) for m in messages if m.startswith(b"P")]
        flushed = [int(m[1:]) for m in messages if m.startswith(b"F")]
        if put_done != list(range(first, first + len(put_done))):
            raise RuntimeError(f"the crash writer reported prompts out of order: {put_done[:10]}...")
        report.rounds += 1
        report.prompts_acknowledged += len(put_done)
        report.kills_during_apply += bool(messages) and messages[-1] == b"A"
        if config.disable_wal:
            last_durable = max(flushed) if flushed else first - 1
        else:
            last_durable = first + len(put_done) - 1
        new_durable = list(range(first, last_durable + 1))
        # the prompt the kill interrupted, and one more if its last message was lost with the process
        maybe = list(range(last_durable + 1, first + len(put_done) + 2))
        with _open(config.kind, path, mode, config.store_config()) as store:
            for index in new_durable:
                checker.check(store, index, required=counts_loss)
            for index in maybe:
                checker.check(store, index, required=False)
            for index in rng.sample(durable, min(SAMPLE_EARLIER, len(durable))):
                checker.check(store, index, required=counts_loss)
        durable += new_durable
        attempted.update(new_durable + maybe)

    pages: set[tuple[int, ...]] = set()
    read_back = set(rng.sample(durable, min(SAMPLE_FINAL, len(durable))))
    durable_set = set(durable)
    with _open(config.kind, path, mode, config.store_config()) as store:
        for index in sorted(attempted):
            required = counts_loss and index in durable_set
            present = checker.check(store, index, required, read=not required or index in read_back)
            tokens = _expected(index)[0].tolist()
            pages.update(tuple(tokens[: (k + 1) * PAGE_SIZE]) for k in range(present))
        stored = store.stats().pages_stored
    if stored != len(pages):
        report.page_count_mismatches += 1
        logger.error("%s: stats() counts %d pages, %d distinct pages are present", path, stored, len(pages))


def run_crash_rounds(config: CrashConfig, context: Any | None = None) -> CrashReport:
    """``config.rounds`` kill-and-reopen rounds, the modes taking turns per store directory."""
    context = context or forkserver_context()
    rng = random.Random(config.seed)
    report = CrashReport(kind=config.kind, disable_wal=config.disable_wal)
    for store_index, first_round in enumerate(range(0, config.rounds, config.rounds_per_store)):
        mode = MODES[store_index % len(MODES)]
        rounds = min(config.rounds_per_store, config.rounds - first_round)
        _crash_one_store(context, config, config.path / f"{mode}-{store_index}", mode, rounds, rng, report)
        report.rounds_by_mode[mode] += rounds
        logger.info("crash %s: %d/%d rounds, %s", config.kind, report.rounds, config.rounds, report)
    return report
