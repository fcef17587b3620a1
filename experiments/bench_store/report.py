"""The run's outputs: tables (rich on the command line, Markdown in report.md), CSVs, summary and plot."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from experiments.bench_store.config import ALL_OPS, DISK_KINDS, KINDS, LSM_FLAT, RAW, MiB, size_text
from experiments.bench_store.records import (
    FILL_COLUMNS,
    FOOTPRINT_COLUMNS,
    MEASUREMENT_COLUMNS,
    RATIO_COLUMNS,
    BenchResult,
    FillStep,
)
from experiments.bench_store.targets import lsm_cache_budget


class ReportTable(NamedTuple):
    """A titled table of strings (rendered with rich by the command line, as Markdown in report.md)."""

    title: str
    headers: tuple[str, ...]
    rows: Sequence[tuple[str, ...]]


def _fmt(value: float, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def report_tables(result: BenchResult) -> list[ReportTable]:
    """The run as tables (rendered by the command line with rich and written as Markdown)."""
    import pandas as pd

    tables: list[ReportTable] = []
    frame = pd.DataFrame(result.measurements, columns=list(MEASUREMENT_COLUMNS))
    if not frame.empty:
        grouped = frame.groupby(["scenario", "level", "op", "cache", "kind"], sort=False)
        rows = []
        kind_order = {k: i for i, k in enumerate((*KINDS, RAW))}
        op_order = {f"{op}/{cache}": i for i, (op, cache) in enumerate(ALL_OPS)}
        keys = sorted(
            grouped.groups,
            key=lambda k: (k[0] != "large", k[1], op_order[f"{k[2]}/{k[3]}"], kind_order[k[4]]),
        )
        for key in keys:
            group = grouped.get_group(key)
            scenario, level, op, cache, kind = key
            rows.append(
                (
                    scenario,
                    f"{level:,}",
                    f"{op} ({cache})" if cache else op,
                    kind,
                    f"{int(group['pages_stored'].median()):,}",
                    _fmt(group["rate"].median()),
                    group["rate_unit"].iloc[0],
                    _fmt(group["rate"].min()) + " - " + _fmt(group["rate"].max()),
                    _fmt(group["pages_per_s"].median(), 0),
                    _fmt(group["p50_ms"].median(), 3),
                    _fmt(group["p99_ms"].median(), 3),
                    str(len(group)),
                )
            )
        tables.append(
            ReportTable(
                "Throughput (median over rounds) and per-call latency (median over rounds of p50 / p99)",
                (
                    "scenario",
                    "stored pages",
                    "op",
                    "kind",
                    "pages stored",
                    "rate",
                    "unit",
                    "min - max",
                    "pages/s",
                    "p50 ms",
                    "p99 ms",
                    "rounds",
                ),
                rows,
            )
        )
    ratio_rows = []
    for row in sorted(result.ratios, key=lambda r: (r.scenario != "large", r.level, r.denominator)):
        ratio_rows.append(
            (
                row.scenario,
                f"{row.level:,}",
                f"{row.op} ({row.cache})" if row.cache else row.op,
                f"{row.numerator}/{row.denominator}",
                _fmt(row.median_ratio, 2),
                _fmt(row.min_ratio, 2) + " - " + _fmt(row.max_ratio, 2),
                str(row.rounds),
            )
        )
    tables.append(
        ReportTable(
            "Ratios: median of per-round ratios (> 1: lsm faster; reopen: reopens/s)",
            ("scenario", "stored pages", "op", "ratio", "median", "min - max", "rounds"),
            ratio_rows,
        )
    )
    foot_rows = []
    for foot in result.footprints:
        if foot.kind == RAW:
            continue
        foot_rows.append(
            (
                foot.scenario,
                f"{foot.level:,}",
                foot.kind,
                foot.stage,
                f"{foot.pages_stored:,}",
                f"{foot.files:,}",
                f"{foot.inodes:,}",
                size_text(foot.disk_bytes),
                size_text(foot.rss_bytes),
                "" if math.isnan(foot.rss_trimmed_bytes) else size_text(foot.rss_trimmed_bytes),
                _fmt(foot.fill_s) if foot.stage in ("filled", "fill ended") else "",
            )
        )
    tables.append(
        ReportTable(
            "Footprint: files, inodes, disk, resident memory (VmRSS of the kind's own worker process)",
            (
                "scenario",
                "level",
                "kind",
                "stage",
                "pages",
                "files",
                "inodes",
                "disk",
                "RSS",
                "RSS trimmed",
                "fill s (all at once)",
            ),
            foot_rows,
        )
    )
    tables.append(_fill_table(result))
    tables.append(_lsm_key_table(result))
    tables.append(
        ReportTable(
            "Targets (issues 2 and 9)",
            ("status", "target", "measured", "threshold", "detail"),
            [
                (
                    t.status,
                    t.name,
                    _fmt(t.measured, 2)
                    if "RSS" not in t.name
                    else size_text(t.measured)
                    if not math.isnan(t.measured)
                    else "-",
                    f"{t.threshold:g}" if "RSS" not in t.name else size_text(t.threshold),
                    t.detail,
                )
                for t in result.targets
            ],
        )
    )
    tables.append(ReportTable("Machine", ("", ""), [(k, v) for k, v in result.machine.items()]))
    return tables


FILL_BINS = 10


def fill_rates(steps: Sequence[FillStep], pages: int) -> list[float]:
    """Pages per second of fill in each tenth of ``pages`` (a chunk counts where it started; NaN: no
    chunk started there), so a rate that falls as the store grows shows."""
    filled = [0] * FILL_BINS
    seconds = [0.0] * FILL_BINS
    for step in steps:
        start = step.pages_stored - step.pages
        index = min(start * FILL_BINS // pages, FILL_BINS - 1)
        filled[index] += step.pages
        seconds[index] += step.seconds
    return [p / s if s > 0 else math.nan for p, s in zip(filled, seconds, strict=True)]


def _fill_table(result: BenchResult) -> ReportTable:
    groups: dict[tuple[str, int, str], list[FillStep]] = {}
    for step in result.fill_steps:
        groups.setdefault((step.scenario, step.level, step.kind), []).append(step)
    rows = [
        (
            scenario,
            f"{level:,}",
            kind,
            steps[-1].status,
            f"{steps[-1].pages_stored:,}",
            _fmt(steps[-1].fill_s),
            *(_fmt(rate, 0) for rate in fill_rates(steps, max(steps[-1].pages_stored, 1))),
        )
        for (scenario, level, kind), steps in groups.items()
    ]
    tenths = tuple(f"{10 * i}-{10 * (i + 1)}%" for i in range(FILL_BINS))
    return ReportTable(
        "Fill: how each store's fill ended, and its pages/s in each tenth of the pages it reached (all "
        "stores filling at once, so indicative)",
        ("scenario", "level", "kind", "ended", "pages", "fill s", *tenths),
        rows,
    )


def _lsm_key_table(result: BenchResult) -> ReportTable:
    """Per small-page level, both key schemes (``lsm``: prefix keys, ``lsm-flat``): the probe's block-cache
    hit rate, the key bytes stored per page, and prefix/flat ratios of probe and cold get rates."""
    schemes = ("lsm", LSM_FLAT)
    rows = []
    for level in sorted({m.level for m in result.measurements if m.scenario == "small"}):
        rates = {
            kind: [
                m.block_cache_hit_rate
                for m in result.measurements
                if (m.scenario, m.level, m.kind, m.op) == ("small", level, kind, "probe")
                and not math.isnan(m.block_cache_hit_rate)
            ]
            for kind in schemes
        }
        keys = {
            kind: [
                f.key_bytes_per_page
                for f in result.footprints
                if (f.scenario, f.level, f.kind, f.stage) == ("small", level, kind, "end")
            ]
            for kind in schemes
        }
        ratios = {
            (r.op, r.cache): r.median_ratio
            for r in result.ratios
            if (r.scenario, r.level, r.numerator, r.denominator) == ("small", level, "lsm", LSM_FLAT)
        }
        rows.append(
            (
                f"{level:,}",
                *(_fmt(float(np.median(rates[k])) * 100 if rates[k] else math.nan) for k in schemes),
                *(_fmt(keys[k][0] if keys[k] else math.nan, 0) for k in schemes),
                _fmt(ratios.get(("probe", ""), math.nan), 2),
                _fmt(ratios.get(("get", "cold"), math.nan), 2),
            )
        )
    return ReportTable(
        "Key schemes: lsm (prefix keys) and lsm-flat (one digest per page); probe block-cache hit rate "
        "(median over rounds), SST key bytes per stored page, prefix/flat ratios (median of per-round)",
        (
            "stored pages",
            "block-cache hit % prefix",
            "flat",
            "key bytes / page prefix",
            "flat",
            "probe prefix/flat",
            "cold get prefix/flat",
        ),
        rows,
    )


def _markdown(tables: Sequence[ReportTable], result: BenchResult) -> str:
    lines = ["# kvtune bench store", ""]
    for scenario in result.scenarios:
        lines.append(f"- **{scenario.name}**: {scenario.description}")
    for note in [*result.notes, *result.skipped.values()]:
        lines.append(f"- {note}")
    lines.append(f"- rounds: {result.config.rounds}; run time {result.seconds / 60:.1f} min")
    lines.append("")
    for table in tables:
        lines += [
            f"## {table.title}",
            "",
            "| " + " | ".join(table.headers) + " |",
            "|" + "---|" * len(table.headers),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in table.rows]
        lines.append("")
    return "\n".join(lines)


def plot(result: BenchResult, path: Path) -> None:
    """Six panels: large pages; small-page probe, put, get vs stored pages; RSS growth; reopen and inodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    frame = pd.DataFrame(result.measurements, columns=list(MEASUREMENT_COLUMNS))
    foot = pd.DataFrame(result.footprints, columns=list(FOOTPRINT_COLUMNS))
    colors = {
        "lsm": "tab:blue",
        LSM_FLAT: "tab:cyan",
        "file": "tab:orange",
        "applog": "tab:green",
        "memory": "tab:purple",
        "sglang-file": "tab:red",
        RAW: "tab:gray",
    }
    fig, axes = plt.subplots(2, 3, figsize=(18, 10))
    ax = axes[0][0]
    large = frame[frame["scenario"] == "large"]
    ops = [("put", ""), ("get", "warm"), ("get", "cold")]
    kinds = [k for k in (*KINDS, RAW) if k in set(large["kind"])]
    width = 0.8 / max(len(kinds), 1)
    for i, kind in enumerate(kinds):
        medians, lows, highs = [], [], []
        for op, cache in ops:
            rates = large[(large["kind"] == kind) & (large["op"] == op) & (large["cache"] == cache)]["rate"]
            med = float(rates.median()) if len(rates) else 0.0
            medians.append(med)
            lows.append(med - float(rates.min()) if len(rates) else 0.0)
            highs.append(float(rates.max()) - med if len(rates) else 0.0)
        ax.bar(
            np.arange(len(ops)) + i * width,
            medians,
            width,
            yerr=[lows, highs],
            label=kind,
            color=colors[kind],
            capsize=3,
        )
    ax.set_xticks(
        np.arange(len(ops)) + width * (len(kinds) - 1) / 2, ["put (durable)", "get (warm)", "get (cold)"]
    )
    ax.set_yscale("log")
    ax.set_ylabel("MB/s (median, min-max over rounds)")
    ax.set_title(f"Large pages ({size_text(result.config.large_scenario().page_bytes)}, Llama-3.1-8B scaled)")
    ax.legend(fontsize=8)
    small = frame[frame["scenario"] == "small"]
    panels = [
        (axes[0][1], "probe", "", "probes/s"),
        (axes[0][2], "put", "", "put MB/s (durable)"),
        (axes[1][0], "get", "warm", "get MB/s: warm (solid), cold (dashed)"),
    ]
    for ax, op, cache, label in panels:
        for kind in (*KINDS, RAW):
            for c, style in ((cache, "-o"), ("cold", "--s")) if op == "get" else ((cache, "-o"),):
                part = small[(small["kind"] == kind) & (small["op"] == op) & (small["cache"] == c)]
                if part.empty:
                    continue
                med = part.groupby("level")["rate"].median()
                ax.plot(med.index, med.values, style, color=colors[kind], label=kind if c == cache else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("stored pages (4 KiB)")
        ax.set_ylabel(label)
        ax.set_title(f"Small pages: {label.split(':')[0]}")
        ax.legend(fontsize=8)
    ax = axes[1][1]
    small_foot = foot[(foot["scenario"] == "small") & (foot["kind"] != RAW)]
    for kind in KINDS:
        part = small_foot[small_foot["kind"] == kind]
        if part.empty:
            continue
        levels = sorted(set(part["level"]))
        growth = []
        for level in levels:
            at = part[part["level"] == level].set_index("stage")["rss_bytes"]
            growth.append((at.get("end", np.nan) - at.get("empty", np.nan)) / MiB)
        ax.plot(levels, growth, "-o", color=colors[kind], label=kind)
    ax.axhline(
        lsm_cache_budget(result.config.store_config) / MiB,
        color=colors["lsm"],
        linestyle=":",
        label="lsm configured caches",
    )
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=10)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("stored pages (4 KiB)")
    ax.set_ylabel("RSS growth, MiB (end - empty store)")
    ax.set_title("Resident memory vs stored pages")
    ax.legend(fontsize=8)
    ax = axes[1][2]
    inode_axis = ax.twinx()
    reopen = small[small["op"] == "reopen"]
    for kind in DISK_KINDS:
        for cache, style in (("cold", "-o"), ("warm", ":o")):
            part = reopen[(reopen["kind"] == kind) & (reopen["cache"] == cache)]
            if not part.empty:
                med = part.groupby("level")["seconds"].median()
                ax.plot(
                    med.index, med.values * 1e3, style, color=colors[kind], label=f"{kind} reopen ({cache})"
                )
        files = small_foot[(small_foot["kind"] == kind) & (small_foot["stage"] == "end")]
        if not files.empty:
            inode_axis.plot(
                files["level"], files["inodes"], "--x", color=colors[kind], alpha=0.6, label=f"{kind} inodes"
            )
    for axis in (ax, inode_axis):
        axis.set_xscale("log")
        axis.set_yscale("log")
    ax.set_xlabel("stored pages (4 KiB)")
    ax.set_ylabel("reopen ms (solid: cold, dotted: warm)")
    inode_axis.set_ylabel("inodes (dashed)")
    ax.set_title("Reopen time and inodes vs stored pages")
    ax.legend(fontsize=7, loc="upper left")
    inode_axis.legend(fontsize=7, loc="lower right")
    machine = result.machine
    fig.suptitle(
        f"kvtune bench store — {machine.get('date', '')}, {machine.get('nproc', '?')} cores, "
        f"{machine.get('cpu', '')}, {machine.get('memory', '')} RAM; medians of {result.config.rounds} "
        "interleaved rounds",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: BenchResult) -> dict[str, Path]:
    """measurements, footprint, fill and ratio CSVs, summary.json, report.md and a PNG in ``out``."""
    import pandas as pd

    out = result.config.out
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "measurements": out / "measurements.csv",
        "footprint": out / "footprint.csv",
        "fill": out / "fill.csv",
        "ratios": out / "ratios.csv",
        "summary": out / "summary.json",
        "report": out / "report.md",
        "plot": out / "bench_store.png",
    }
    pd.DataFrame(result.measurements, columns=list(MEASUREMENT_COLUMNS)).to_csv(
        files["measurements"], index=False
    )
    pd.DataFrame(result.footprints, columns=list(FOOTPRINT_COLUMNS)).to_csv(files["footprint"], index=False)
    pd.DataFrame(result.fill_steps, columns=list(FILL_COLUMNS)).to_csv(files["fill"], index=False)
    pd.DataFrame(result.ratios, columns=list(RATIO_COLUMNS)).to_csv(files["ratios"], index=False)
    summary = {
        "config": result.config.describe(),
        "machine": result.machine,
        "scenarios": {s.name: s.description for s in result.scenarios},
        "skipped": result.skipped,
        "notes": result.notes,
        "targets": [
            {
                "name": t.name,
                "status": t.status,
                "measured": t.measured,
                "threshold": t.threshold,
                "detail": t.detail,
            }
            for t in result.targets
        ],
        "seconds": result.seconds,
    }
    files["summary"].write_text(json.dumps(summary, indent=2, default=str))
    files["report"].write_text(_markdown(report_tables(result), result))
    plot(result, files["plot"])
    result.files = files
    return files
