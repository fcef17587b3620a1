"""The store header: format version, page size and layout, recorded at creation and checked on every open.

A store opened with another page size or layout would cut prompts into other pages and read tensors of
another shape, so every kind refuses it with :class:`~store.errors.IncompatibleStoreError` instead. The
LSM store keeps its header in a record of the database; the file and append-log stores keep it in
:data:`HEADER_FILE`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from store.codec import FORMAT_VERSION
from store.errors import IncompatibleStoreError
from store.layout import KVLayout

HEADER_FILE = "kvtune-header.json"
ROCKSDB_MARKER = "CURRENT"
"""Every RocksDB database has this file (it names the current MANIFEST)."""


def expected_header(layout: KVLayout, page_size: int) -> dict[str, Any]:
    """The header a store of ``layout`` and ``page_size`` writes, and expects to find on reopen."""
    return {"format_version": FORMAT_VERSION, "page_size": page_size, "layout": layout.describe()}


def encode_header_record(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True).encode()


def check_header(stored: Any, expected: dict[str, Any], path: Path | None) -> None:
    """Raise :class:`IncompatibleStoreError` unless the ``stored`` header matches ``expected``."""
    if not isinstance(stored, dict):
        raise IncompatibleStoreError(f"{path} holds an unreadable store header; use another path")
    if stored.get("format_version", 0) > FORMAT_VERSION:
        raise IncompatibleStoreError(
            f"{path} was written by a newer kvtune (format {stored['format_version']} > "
            f"{FORMAT_VERSION}); upgrade kvtune or use another path"
        )
    if stored.get("format_version", 0) < FORMAT_VERSION:
        raise IncompatibleStoreError(
            f"{path} was written by an older kvtune (format {stored.get('format_version', 0)} < "
            f"{FORMAT_VERSION}, whose pages this version cannot verify): it is a cache, so delete it "
            "or use another path"
        )
    for field in ("page_size", "layout"):
        if stored.get(field) != expected[field]:
            raise IncompatibleStoreError(
                f"{path} holds a store with {field}={stored.get(field)!r}, but it was opened with "
                f"{field}={expected[field]!r}: open it with the stored value or use another path"
            )


def ensure_header_file(directory: Path, layout: KVLayout, page_size: int, kind: str) -> None:
    """Check ``directory``'s header file, or write one (temp file + rename) if there is none yet."""
    refuse_other_kind(directory, kind)
    expected = {**expected_header(layout, page_size), "kind": kind}
    header_path = directory / HEADER_FILE
    try:
        raw = header_path.read_bytes()
    except FileNotFoundError:
        temporary = directory / (HEADER_FILE + ".tmp")
        temporary.write_bytes(encode_header_record(expected))
        os.replace(temporary, header_path)
        return
    check_header(_parse_header_file(header_path, raw), expected, directory)


def _parse_header_file(header_path: Path, raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as error:
        raise IncompatibleStoreError(
            f"{header_path} is not a kvtune store header ({error}); use another path"
        ) from error


def stored_kind(directory: Path) -> str | None:
    """The kind of store ``directory`` holds, as far as its files tell (None: empty, or written before
    headers named their kind)."""
    if (directory / ROCKSDB_MARKER).exists():
        return "lsm"
    header_path = directory / HEADER_FILE
    try:
        raw = header_path.read_bytes()
    except FileNotFoundError:
        return None
    stored = _parse_header_file(header_path, raw)
    kind = stored.get("kind") if isinstance(stored, dict) else None
    return kind if isinstance(kind, str) else None


def refuse_other_kind(directory: Path, kind: str) -> None:
    """Raise :class:`IncompatibleStoreError` if ``directory`` holds a store of another kind: each kind
    would read the other's files as garbage, or delete them."""
    found = stored_kind(directory)
    if found is not None and found != kind:
        raise IncompatibleStoreError(
            f"{directory} holds a {found!r} store, but it was opened as {kind!r}: open it as {found!r} "
            "or use another path"
        )
