"""Space and file counts as the file system sees them."""

from __future__ import annotations

import os
from pathlib import Path


def directory_usage(path: Path) -> tuple[int, int]:
    """(bytes in files, files) under ``path``, recursively; a missing directory is (0, 0)."""
    total, files = 0, 0
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    total += entry.stat(follow_symlinks=False).st_size
                    files += 1
            except FileNotFoundError:
                continue
    return total, files
