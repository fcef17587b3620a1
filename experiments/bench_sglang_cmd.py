"""``kvtune bench sglang``: the command line of :mod:`experiments.bench_sglang`."""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from experiments.bench_cmd import int_list

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
    from experiments.bench_sglang import BACKENDS, SglangBenchConfig, run_sglang_bench, summarise

    console = Console(width=200)
    try:
        config = SglangBenchConfig(
            pages=int_list(pages, "--pages"), page_bytes=page_bytes, rounds=rounds, workdir=out / "data"
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
    contenders = [name for name in BACKENDS if name != "file"] + ["file"]
    table = Table(title=f"kvtune vs SGLang file, {page_bytes} B pages, median of {rounds} rounds")
    table.add_column("pages")
    table.add_column("op")
    for name in contenders:
        table.add_column(f"{name} pages/s")
    for name in contenders[:-1]:
        table.add_column(f"{name} / file")
    for name in contenders:
        table.add_column(f"{name} p99 ms")
    for entry in summary:
        rate = {name: entry[f"{name}_pages_per_s"] for name in contenders}
        if entry["op"] == "reopen":
            rate = {name: 1 / entry[f"{name}_seconds"] for name in contenders}
        table.add_row(
            str(entry["pages"]),
            entry["op"] + (" (1/s)" if entry["op"] == "reopen" else ""),
            *(f"{rate[name]:,.0f}" for name in contenders),
            *(f"{rate[name] / rate['file']:.2f}x" if rate["file"] else "-" for name in contenders[:-1]),
            *(f"{entry[f'{name}_p99_ms']:.2f}" for name in contenders),
        )
    console.print(table)
    for n_pages in sorted({e["pages"] for e in summary}):
        files = next(e for e in summary if e["pages"] == n_pages)
        created = ", ".join(f"{name} {files[f'{name}_files']:,}" for name in contenders)
        console.print(f"{n_pages} pages: files created {created}")
