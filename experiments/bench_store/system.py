"""The machine the numbers come from, and what the worker processes read about themselves."""

from __future__ import annotations

import ctypes
import datetime
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from experiments.bench_store.config import KiB, size_text


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info(path: Path) -> dict[str, str]:
    """The machine the numbers come from: cores, memory, CPU, disk, kernel, date, library versions."""
    meminfo = dict(
        (line.split(":")[0], line.split(":")[1].strip())
        for line in _read("/proc/meminfo").splitlines()
        if ":" in line
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in _read("/proc/cpuinfo").splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    path.mkdir(parents=True, exist_ok=True)
    try:
        df = (
            subprocess.run(
                ["df", "-h", "--output=source,fstype,size,used,avail,target", str(path)],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        df = " ".join(df.split())
    except (OSError, subprocess.SubprocessError, IndexError):
        df = "unknown"
    versions = {}
    for package in ("torch", "rocksdict", "numpy"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": _meminfo_size(meminfo.get("MemTotal")),
        "memory available at start": _meminfo_size(meminfo.get("MemAvailable")),
        "cpu": cpu,
        "disk (df: source fstype size used avail mount)": df,
        "kernel": platform.release(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        **{f"{name} version": version for name, version in versions.items()},
    }


def _meminfo_size(text: str | None) -> str:
    """A /proc/meminfo value ("24683656 kB") as a size ("23.5 GiB")."""
    try:
        return size_text(int((text or "").split()[0]) * KiB)
    except (ValueError, IndexError):
        return "unknown"


def mem_available_bytes() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * KiB
    return 0


def rss_bytes() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process, in bytes."""
    rss = peak = 0
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * KiB
        elif line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * KiB
    return rss, peak


def trim_heap() -> bool:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``); False where that is not available."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


def evict_page_cache(path: Path) -> int:
    """``os.sync()``, then drop every file under ``path`` from the page cache; returns files evicted."""
    os.sync()
    evicted = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            evicted += 1
    return evicted


def count_inodes(path: Path) -> tuple[int, int]:
    """(regular files, inodes: files + directories) under ``path``, the directory itself included."""
    files, inodes = 0, 0
    stack = [str(path)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except FileNotFoundError:
            continue
        inodes += 1
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
            else:
                files += 1
                inodes += 1
    return files, inodes
