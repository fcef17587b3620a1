"""``kvtune bench sglang``: the command line of :mod:`experiments.bench_sglang`."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.bench_cmd import _int_list

app = typer.Typer()


@app.command("sglang")
def sglang(
    out: Annotated[Path, typer.Option(help="Directory for rows.csv and summary.csv.")] = Path(
        "runs/bench-sglang"
    ),
    pages: Annotated[str, typer.Option(help="Stored page counts (one fresh store per count and round).")] = (
        "10000,100000"
    ),
    page_bytes: Annotated[
        int, typer.Option(help="Bytes per page (default: a Llama-3.1-8B 64-token page / 512 = 16 KiB).")
    ] = 16384,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (A B, then B A, ...).")] = 2,
) -> None:
    """kvtune's SGLang backend vs SGLang's HiCacheFile: batch_set, batch_exists, batch_get, reopen, files."""
    from experiments.bench_sglang import SglangBenchConfig, run_sglang_bench, summarise

    console = Console(width=200)
    try:
        config = SglangBenchConfig(
            pages=_int_list(pages, "--pages"), page_bytes=page_bytes, rounds=rounds, workdir=out / "data"
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    rows = run_sglang_bench(config, progress=lambda text: console.print(f"[dim]{text}[/dim]"))
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    for name, records in (("rows.csv", [asdict(r) for r in rows]), ("summary.csv", summary)):
        with (out / name).open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
    table = Table(title=f"kvtune vs SGLang file, {page_bytes} B pages, median of {rounds} rounds")
    for header in ("pages", "op", "kvtune pages/s", "file pages/s", "ratio", "kvtune p99 ms", "file p99 ms"):
        table.add_column(header)
    for entry in summary:
        kv, fi = entry["kvtune_pages_per_s"], entry["file_pages_per_s"]
        if entry["op"] == "reopen":
            kv, fi = 1 / entry["kvtune_seconds"], 1 / entry["file_seconds"]
        table.add_row(
            str(entry["pages"]),
            entry["op"] + (" (1/s)" if entry["op"] == "reopen" else ""),
            f"{kv:,.0f}",
            f"{fi:,.0f}",
            f"{kv / fi:.2f}x" if fi else "-",
            f"{entry['kvtune_p99_ms']:.2f}",
            f"{entry['file_p99_ms']:.2f}",
        )
    console.print(table)
    files = {(e["pages"]): (e["kvtune_files"], e["file_files"]) for e in summary}
    for n_pages, (kv_files, file_files) in files.items():
        console.print(f"{n_pages} pages: files created kvtune {kv_files:,}, file {file_files:,}")
