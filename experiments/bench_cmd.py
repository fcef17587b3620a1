"""``kvtune bench store``: the command line of :mod:`experiments.bench_store`."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from store.config import StoreConfig

logger = logging.getLogger(__name__)
app = typer.Typer(help="Benchmarks that compare store kinds side by side.", no_args_is_help=True)


def int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part.replace("_", "")) for part in text.split(",") if part.strip())
    except ValueError:
        raise typer.BadParameter(f"{option} takes comma-separated integers, e.g. 100000,1000000") from None
    if not values:
        raise typer.BadParameter(f"{option} needs at least one value")
    return values


def _bench_kinds(text: str | None) -> tuple[str, ...]:
    from experiments.bench_store.config import parse_bench_kinds

    try:
        return parse_bench_kinds(text)
    except ValueError as error:
        raise typer.BadParameter(f"--kinds: {error}") from None


def _fill_caps(text: str | None, kinds: tuple[str, ...]) -> dict[str, float]:
    from experiments.bench_store.config import parse_fill_caps

    try:
        return parse_fill_caps(text, kinds)
    except ValueError as error:
        raise typer.BadParameter(f"--fill-cap-seconds: {error}") from None


def _store_config(assignments: list[str]) -> StoreConfig:
    """``KEY=VALUE`` strings as a :class:`StoreConfig`, each value parsed as its knob's type."""
    from store.config import StoreConfig

    specs = StoreConfig.specs()
    values: dict[str, object] = {}
    for assignment in assignments:
        name, sep, text = assignment.partition("=")
        name = name.strip()
        if not sep or name not in specs:
            raise typer.BadParameter(
                f"--set takes KEY=VALUE with KEY one of: {', '.join(specs)}; got {assignment!r}"
            )
        kind = specs[name].kind
        try:
            if kind is bool:
                if text.strip().lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                values[name] = text.strip().lower() in ("true", "1")
            else:
                values[name] = kind(text.strip())
        except ValueError:
            raise typer.BadParameter(f"--set {name}: {text!r} is not a {kind.__name__}") from None
    try:
        return StoreConfig.from_dict(values)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


@app.command("store")
def store(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for the CSVs, the PNG and report.md.")] = Path(
        "runs/bench"
    ),
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved rounds (A B A B ...) per measurement.")] = 5,
    large_pages: Annotated[int, typer.Option(min=1, help="Large pages written per kind per round.")] = 512,
    small_pages: Annotated[
        str, typer.Option(help="Stored small-page counts to sweep (one store per count).")
    ] = "100000,1000000",
    small_page_bytes: Annotated[
        int, typer.Option(help="Bytes of one small page, a multiple of 256 (1024 for a 10M-page level).")
    ] = 4096,
    kinds: Annotated[
        str | None, typer.Option(help="Store kinds to compare, comma-separated (default: every kind).")
    ] = None,
    parts: Annotated[
        str, typer.Option(help="Workloads to run, comma-separated: large pages, small pages, or both.")
    ] = "large,small",
    quick: Annotated[
        bool, typer.Option("--quick", help="A ~1 minute run at small sizes (for `make run`).")
    ] = False,
    large_kv_heads: Annotated[
        int, typer.Option(help="KV heads of the scaled Llama-3.1-8B pages: 1 -> 1 MiB pages, 8 -> 8 MiB.")
    ] = 1,
    workdir: Annotated[Path | None, typer.Option(help="Where the stores live (default OUT/data).")] = None,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep the stores after the run.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the prompts, samples and tensors.")] = 0,
    reopen: Annotated[
        str, typer.Option(help="Reopen measurements: cold (page cache dropped), warm, or cold,warm.")
    ] = "cold",
    fill_cap_seconds: Annotated[
        str | None,
        typer.Option(
            help="Stop a kind's fill after this many seconds: SECONDS (every kind) or KIND=SECONDS,... "
            "(e.g. file=900); a capped kind's later phases are skipped and the report says how far it got."
        ),
    ] = None,
    knob: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A StoreConfig knob KEY=VALUE for every kind (repeatable), e.g. --set disable_wal=true.",
        ),
    ] = None,
) -> None:
    """Compare every store kind side by side with a raw-disk reference: put, probe, get, reopen, memory."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from experiments.bench_store import BenchConfig, BenchError, report_tables, run_bench

    console = Console()
    if not console.is_terminal:  # a log file: wide tables instead of 80-column wrapping
        console = Console(width=200)
    compared = _bench_kinds(kinds)
    options = dict(
        out=out,
        rounds=rounds,
        large_pages=large_pages,
        kinds=compared,
        fill_caps=_fill_caps(fill_cap_seconds, compared),
        parts=tuple(part.strip() for part in parts.split(",") if part.strip()),
        small_levels=int_list(small_pages, "--small-pages"),
        small_page_bytes=small_page_bytes,
        large_kv_heads=large_kv_heads,
        workdir=workdir,
        keep_data=keep_data,
        seed=seed,
        store_config=_store_config(knob or []),
        reopen_caches=tuple(part.strip() for part in reopen.split(",") if part.strip()),
    )
    if quick:
        # --quick sets the sizes; size options given explicitly on the command line still win.
        source = ctx.get_parameter_source
        sizes = {
            "rounds": "rounds",
            "large_pages": "large_pages",
            "small_levels": "small_pages",
            "large_kv_heads": "large_kv_heads",
        }
        for name, parameter in sizes.items():
            if getattr(source(parameter), "name", "") != "COMMANDLINE":
                del options[name]
    try:
        config = BenchConfig.quick(**options) if quick else BenchConfig(**options)  # type: ignore[arg-type]
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None

    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("starting", total=None)

        def on_step(description: str, done: int, total: int) -> None:
            progress.update(task, description=description[:70], completed=done, total=total)

        try:
            result = run_bench(config, progress=on_step)
        except BenchError as error:
            console.print(f"[red]benchmark failed:[/red] {error}")
            raise typer.Exit(1) from None

    for scenario in result.scenarios:
        console.print(f"[bold]{scenario.name}[/bold]: {scenario.description}")
    for reason in result.skipped.values():
        console.print(f"[yellow]skipped[/yellow]: {reason}")
    for table in report_tables(result):
        rich_table = Table(title=table.title, show_lines=False, title_justify="left")
        for header in table.headers:
            rich_table.add_column(header, overflow="fold")
        for row in table.rows:
            styled = list(row)
            if table.title.startswith("Targets"):
                color = {"PASS": "green", "MISS": "red"}.get(row[0], "yellow")
                styled[0] = f"[{color}]{row[0]}[/{color}]"
            rich_table.add_row(*styled)
        console.print(rich_table)
    missed = [t for t in result.targets if t.passed is False]
    console.print(
        f"{len(result.targets) - len(missed)}/{len(result.targets)} targets met "
        f"in {result.seconds / 60:.1f} min; outputs: " + ", ".join(str(p) for p in result.files.values())
    )
    if any(math.isnan(t.measured) for t in result.targets):
        console.print("[yellow]some targets could not be evaluated (a kind was skipped)[/yellow]")
