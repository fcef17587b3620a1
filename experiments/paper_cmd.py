"""``kvtune experiment paper``: the paper's comparison matrix and ablations from one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import yaml

experiment_app = typer.Typer(help="The paper's experiments.", no_args_is_help=True)


@experiment_app.command("paper")
def paper_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for the cells, table.md, plots, mlflow.db.")],
    phase_requests: Annotated[
        int, typer.Option("--phase-requests", min=1, help="Requests per phase (the paper: >= 300).")
    ] = 300,
    scale: Annotated[int, typer.Option("--scale", min=1, help="Shrink the KV tensors by this factor.")] = 64,
    profile: Annotated[
        str, typer.Option("--profile", help="Model profile (the paper: glm-4-9b).")
    ] = "glm-4-9b",
    chunk_tokens: Annotated[
        int, typer.Option("--chunk-tokens", min=1, help="Tokens per chunk and page.")
    ] = 256,
    chunks_per_prompt: Annotated[int, typer.Option("--chunks-per-prompt", min=1)] = 32,
    pool_chunks: Annotated[int, typer.Option("--pool-chunks", min=1, help="Distinct chunks to draw.")] = 4096,
    host_ram: Annotated[
        str, typer.Option("--host-ram-bytes", help="Host RAM of every kind (tier + store), e.g. 512MiB.")
    ] = "512MiB",
    trace: Annotated[
        Path | None, typer.Option("--trace", help="Mooncake trace (default: the shared synthetic one).")
    ] = None,
    trace_limit: Annotated[
        int, typer.Option("--trace-limit", min=1, help="Trace requests to replay.")
    ] = 1000,
    no_trace: Annotated[bool, typer.Option("--no-trace", help="Skip the trace matrix.")] = False,
    best_static: Annotated[
        Path | None,
        typer.Option("--best-static", help="YAML/JSON knobs of a study's best config (on another seed)."),
    ] = None,
) -> None:
    """Every store kind x two arrival rates x two disk budgets, equal host RAM; per-phase table, plots,
    an MLflow run per cell; then the ablations."""
    from agents.tracking import default_tracking_uri
    from experiments.paper import TRACE, PaperSpec, run_paper
    from experiments.replay_cmd import parse_bytes

    try:
        spec = PaperSpec(
            phase_requests=phase_requests,
            chunk_tokens=chunk_tokens,
            chunks_per_prompt=chunks_per_prompt,
            pool_chunks=pool_chunks,
            profile=profile,
            scale=scale,
            host_ram_bytes=parse_bytes(host_ram),
            trace=None if no_trace else (trace or TRACE),
            trace_limit=trace_limit,
            best_static=yaml.safe_load(best_static.read_text()) if best_static else None,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    rows = run_paper(spec, out, default_tracking_uri(out))
    typer.echo(f"{len(rows)} cells written to {out / 'table.md'} and {out / 'results.json'}")
