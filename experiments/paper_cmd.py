"""``kvtune experiment paper``: the paper's comparison matrix and ablations from one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The paper's experiments.", no_args_is_help=True)


@app.command("paper")
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
        typer.Option(
            "--best-static", help="A study's best_static.json (on another seed), or a YAML/JSON map of knobs."
        ),
    ] = None,
    kinds: Annotated[
        str | None,
        typer.Option("--kinds", help="Comma-separated kinds to compare (default: all)."),
    ] = None,
    parts: Annotated[
        str | None,
        typer.Option(
            "--parts", help="Comma-separated parts to run: staged, trace, ablations (default: all)."
        ),
    ] = None,
    ablation: Annotated[
        list[str] | None,
        typer.Option(
            "--ablation",
            help="Extra ablation row NAME:KNOB=VALUE (repeatable, one knob each): flat-keys:key_scheme=flat.",
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", min=1, help="Cells replayed at a time, each in its own process.")
    ] = 1,
) -> None:
    """Every store kind x two arrival rates x two disk budgets, equal host RAM; per-phase table, plots,
    an MLflow run per cell; then the ablations."""
    from agents.policies import StaticPolicy
    from agents.tracking import default_tracking_uri
    from experiments.options import parse_assignments
    from experiments.paper import ABLATIONS, KINDS, PARTS, TRACE, PaperSpec, run_paper
    from experiments.replay_cmd import parse_bytes

    ablations = {name: dict(knobs) for name, knobs in ABLATIONS.items()}
    for row in ablation or []:
        name, sep, assignment = row.partition(":")
        if not sep or not name:
            raise typer.BadParameter(f"--ablation {row!r} must look like NAME:KNOB=VALUE")
        ablations.setdefault(name, {}).update(parse_assignments([assignment], "--ablation"))
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
            best_static=StaticPolicy.load(best_static).config.to_dict() if best_static else None,
            kinds=tuple(kinds.split(",")) if kinds else KINDS,
            parts=tuple(parts.split(",")) if parts else PARTS,
            ablations=ablations,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
    rows = run_paper(spec, out, default_tracking_uri(out), jobs=jobs)
    typer.echo(f"{len(rows)} cells written to {out / 'table.md'} and {out / 'results.json'}")
