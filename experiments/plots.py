"""Plots of evaluations and sweeps (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def window_lines(series: Mapping[str, Sequence[float]], ylabel: str, title: str, path: Path) -> Path:
    """One line per label over window index."""
    figure, axis = plt.subplots(figsize=(8, 4))
    for label, values in series.items():
        axis.plot(range(len(values)), values, marker=".", label=label)
    axis.set_xlabel("window")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def sweep_grid(curves: Mapping[str, tuple[Sequence[str], Sequence[float]]], ylabel: str, path: Path) -> Path:
    """One small panel per knob: the objective across the knob's range."""
    count = len(curves)
    columns = min(count, 4)
    rows = (count + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, (knob, (labels, values)) in zip(axes.flat, curves.items(), strict=False):
        axis.plot(range(len(values)), values, marker="o")
        axis.set_xticks(range(len(labels)), labels, rotation=45, fontsize=7)
        axis.set_title(knob, fontsize=9)
        axis.set_ylabel(ylabel, fontsize=8)
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def grouped_bars(values: Mapping[str, Mapping[str, float]], ylabel: str, title: str, path: Path) -> Path:
    """One group of bars per outer key (e.g. workload), one bar per inner key (e.g. policy)."""
    groups = list(values)
    labels = list(dict.fromkeys(label for group in values.values() for label in group))
    width = 0.8 / max(len(labels), 1)
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(groups) * max(len(labels), 1) / 3), 4))
    for index, label in enumerate(labels):
        heights = [values[group].get(label, float("nan")) for group in groups]
        axis.bar([g + index * width for g in range(len(groups))], heights, width, label=label)
    axis.set_xticks([g + width * (len(labels) - 1) / 2 for g in range(len(groups))], groups)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def phase_bars(phases: Mapping[str, Mapping[str, Mapping[str, float]]], path: Path) -> Path:
    """Per-phase bars of hit ratio and mean TTFT, one bar per label (``phases[label][phase][metric]``)."""
    names = sorted({phase for rows in phases.values() for phase in rows})
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    width = 0.8 / max(len(phases), 1)
    for offset, (label, rows) in enumerate(phases.items()):
        positions = [i + offset * width for i in range(len(names))]
        for axis, metric, factor in ((axes[0], "hit_token_ratio", 1.0), (axes[1], "mean_ttft_s", 1e3)):
            values = [rows.get(name, {}).get(metric, 0.0) * factor for name in names]
            axis.bar(positions, values, width, label=label)
    for axis, ylabel in ((axes[0], "hit ratio"), (axes[1], "mean TTFT (ms)")):
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(names))], names, rotation=30, fontsize=7)
        axis.set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ttft_cdfs(samples: Mapping[str, Sequence[float]], path: Path) -> Path:
    """The empirical CDF of TTFT, one line per label."""
    figure, axis = plt.subplots(figsize=(7, 4))
    for label, values in samples.items():
        ordered = sorted(values)
        axis.plot(
            [v * 1e3 for v in ordered], [(i + 1) / len(ordered) for i in range(len(ordered))], label=label
        )
    axis.set_xscale("log")
    axis.set_xlabel("TTFT (ms)")
    axis.set_ylabel("fraction of requests")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
