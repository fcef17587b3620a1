"""Hostile and broken input, table-driven (issue 13): every case is refused with an error that says what
to fix, and a canary store's pages are intact afterwards."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from typer.testing import CliRunner

from agents.bundle import CARD_FILE, MODEL_FILE, load_policy_bundle
from experiments.cli import app
from store import IncompatibleStoreError, KVStore, StoreBusyError, StoreConfig, open_store
from tests.store.conftest import LAYOUT, PAGE_SIZE, assert_bit_exact, make_tokens, open_kind, prefix_kv
from workloads.mooncake import read_mooncake

CANARY = make_tokens(7, 3 * PAGE_SIZE)
TOKENS = make_tokens(8, 2 * PAGE_SIZE)
GOOD_LINE = {"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}


class Case(NamedTuple):
    name: str
    call: Callable[[KVStore, Path], Any]
    error: type[BaseException]
    message: str


def _trace(tmp: Path, *lines: str) -> list[Any]:
    path = tmp / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return list(read_mooncake(path))


def _line(**changes: Any) -> str:
    return json.dumps({**GOOD_LINE, **changes})


def _bundle(tmp: Path, card: str | None, model: bytes | None) -> Any:
    directory = tmp / "bundle"
    directory.mkdir(exist_ok=True)
    if card is not None:
        (directory / CARD_FILE).write_text(card)
    if model is not None:
        (directory / MODEL_FILE).write_bytes(model)
    return load_policy_bundle(directory)


def _kv(n_positions: int = 2 * PAGE_SIZE) -> torch.Tensor:
    return prefix_kv(TOKENS)[:, :, :n_positions]


def _reopen_other_page_size(_: KVStore, tmp: Path) -> None:
    open_kind("lsm", tmp / "other", page_size=PAGE_SIZE).close()
    open_kind("lsm", tmp / "other", page_size=2 * PAGE_SIZE)


def _cli(*args: str) -> None:
    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise ValueError(f"exit {result.exit_code}: {result.output}")


CASES = [
    # store API
    Case("tokens as text", lambda s, _: s.put_batch("some text", _kv()), ValueError, "token"),
    Case("negative token id", lambda s, _: s.probe([1, -5, 3]), ValueError, "token"),
    Case("token id >= 2**32", lambda s, _: s.probe([1, 2**32, 3]), ValueError, "token"),
    Case("float token ids", lambda s, _: s.probe(torch.tensor([1.5, 2.0])), ValueError, "token"),
    Case("2-D token ids", lambda s, _: s.probe(torch.zeros(2, 8, dtype=torch.int64)), ValueError, "token"),
    Case("kv of another dtype", lambda s, _: s.put_batch(TOKENS, _kv().float()), ValueError, "dtype"),
    Case("kv of another shape", lambda s, _: s.put_batch(TOKENS, _kv()[:1]), ValueError, "shape"),
    Case("kv shorter than the pages", lambda s, _: s.put_batch(TOKENS, _kv(PAGE_SIZE)), ValueError, "covers"),
    Case("kv on the meta device", lambda s, _: s.put_async(TOKENS, _kv().to("meta")), ValueError, "meta"),
    Case("sparse kv", lambda s, _: s.put_batch(TOKENS, _kv().to_sparse()), ValueError, "sparse"),
    Case("kv as a list", lambda s, _: s.put_batch(TOKENS, [[0.0]]), ValueError, "torch.Tensor"),
    Case("get more pages than given", lambda s, _: s.get_batch(CANARY, 4), ValueError, "exceeds"),
    Case("get -1 pages", lambda s, _: s.get_batch(CANARY, -1), ValueError, "n_pages"),
    Case("get True pages", lambda s, _: s.get_batch(CANARY, True), ValueError, "n_pages"),
    Case("evict past the end", lambda s, _: s.evict(CANARY, 3), ValueError, "n_pages"),
    Case("apply a dict", lambda s, _: s.apply({"writer_batch_size": 1}), ValueError, "StoreConfig"),
    Case("unknown kind", lambda s, t: open_store("btree", t, LAYOUT), ValueError, "valid kinds"),
    Case("page size 0", lambda s, t: open_kind("file", t / "p0", page_size=0), ValueError, "page_size"),
    Case("negative budget", lambda s, t: open_kind("file", t / "b", budget_bytes=-1), ValueError, "budget"),
    Case(
        "surrogate namespace", lambda s, t: open_kind("lsm", t / "n", namespace="\ud800"), ValueError, "UTF-8"
    ),
    Case("empty namespace", lambda s, t: open_kind("lsm", t / "n", namespace=""), ValueError, "namespace"),
    Case("disk kind without a path", lambda s, _: open_store("lsm", None, LAYOUT), ValueError, "directory"),
    Case("second handle", lambda s, _: open_kind("lsm", s.path), StoreBusyError, "already open"),
    Case("other page size", _reopen_other_page_size, IncompatibleStoreError, "page_size"),
    # knob values
    Case(
        "negative write buffer",
        lambda s, _: StoreConfig(write_buffer_size=-1),
        ValueError,
        "write_buffer_size",
    ),
    Case(
        "unknown eviction order",
        lambda s, _: StoreConfig(eviction_order="random"),
        ValueError,
        "eviction_order",
    ),
    Case("unknown knob", lambda s, _: StoreConfig.from_dict({"turbo": 1}), ValueError, "valid knobs"),
    Case("queue depth 0", lambda s, _: StoreConfig(writer_queue_depth=0), ValueError, "writer_queue_depth"),
    Case(
        "NaN GC cutoff",
        lambda s, _: StoreConfig(blob_garbage_collection_age_cutoff=float("nan")),
        ValueError,
        "blob_garbage_collection_age_cutoff",
    ),
    Case("knob of the wrong type", lambda s, _: StoreConfig(disable_wal="yes"), ValueError, "disable_wal"),
    # trace files
    Case(
        "truncated trace line",
        lambda s, t: _trace(t, '{"timestamp": 1, "input_le'),
        ValueError,
        "not valid JSON",
    ),
    Case("length as a string", lambda s, t: _trace(t, _line(input_length="10")), ValueError, "input_length"),
    Case("10 MB trace line", lambda s, t: _trace(t, "x" * 10_000_000), ValueError, "not valid JSON"),
    Case("negative hash id", lambda s, t: _trace(t, _line(hash_ids=[-1])), ValueError, "hash_ids"),
    Case("hash id >= 2^64", lambda s, t: _trace(t, _line(hash_ids=[2**64])), ValueError, "< 2"),
    Case("negative timestamp", lambda s, t: _trace(t, _line(timestamp=-1)), ValueError, "timestamp"),
    Case("missing key", lambda s, t: _trace(t, json.dumps({"timestamp": 0})), ValueError, "missing key"),
    Case("line not an object", lambda s, t: _trace(t, "[1, 2]"), ValueError, "JSON object"),
    Case("infinite timestamp", lambda s, t: _trace(t, '{"timestamp": Infinity}'), ValueError, "timestamp"),
    Case(
        "missing trace file", lambda s, t: list(read_mooncake(t / "none.jsonl")), ValueError, "does not exist"
    ),
    # policy bundles
    Case("empty bundle", lambda s, t: _bundle(t, None, None), ValueError, "not a policy bundle"),
    Case("card not JSON", lambda s, t: _bundle(t, "{nope", b"PK"), ValueError, "not a valid policy card"),
    Case(
        "card with foreign fields", lambda s, t: _bundle(t, '{"lies": 1}', b"PK"), ValueError, "policy card"
    ),
    # command line
    Case(
        "stress with an unknown kind",
        lambda s, _: _cli("bench", "stress", "--kind", "nope"),
        ValueError,
        "valid kinds",
    ),
    Case(
        "stress with 0 threads", lambda s, _: _cli("bench", "stress", "--threads", "0"), ValueError, "threads"
    ),
]


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KVStore]:
    s = open_kind("lsm", tmp_path_factory.mktemp("canary") / "store")
    assert s.put_batch(CANARY, prefix_kv(CANARY)) == 3
    yield s
    s.close()


def test_the_table_has_at_least_30_kinds() -> None:
    assert len(CASES) >= 30
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input_is_refused_clearly_and_harms_nothing(
    canary: KVStore, tmp_path: Path, case: Case
) -> None:
    with pytest.raises(case.error, match=case.message):
        case.call(canary, tmp_path)
    assert canary.probe(CANARY) == 3
    assert_bit_exact(canary.get_batch(CANARY, 3), prefix_kv(CANARY))
    assert canary.stats().pages_stored == 3
