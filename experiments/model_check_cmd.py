"""``kvtune model-check``: logits from a stored prefix equal a full recompute, with CPU TTFT figures."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from experiments.options import parse_store_kinds_option

console = Console()
app = typer.Typer()


@app.command("model-check")
def model_check_command(
    kinds: str | None = typer.Option(
        None, "--kinds", help="Store kinds, comma-separated (default: every kind)."
    ),
    prompt_tokens: int = typer.Option(2048, "--prompt-tokens"),
    shared_tokens: int = typer.Option(1536, "--shared-tokens", help="Tokens prompt B shares with prompt A."),
    page_size: int = typer.Option(64, "--page-size"),
    layers: int | None = typer.Option(None, "--layers", help="Decoder layers (default: ModelSpec's)."),
    hidden_size: int | None = typer.Option(None, "--hidden-size", help="Hidden size (default: ModelSpec's)."),
) -> None:
    """Prefill prompt A, store its KV, prefill prompt B from the stored prefix: logits must match."""
    from experiments.model_check import ModelSpec, check_prefix_reuse

    kind_names = parse_store_kinds_option(kinds, "--kinds")

    spec = ModelSpec()
    spec = dataclasses.replace(
        spec, layers=layers or spec.layers, hidden_size=hidden_size or spec.hidden_size
    )
    spec = dataclasses.replace(spec, intermediate_size=spec.hidden_size * 11 // 4)
    table = Table(
        title=f"Llama-architecture model, random weights ({spec.layers} layers, "
        f"hidden {spec.hidden_size}), CPU"
    )
    for column in (
        "store",
        "reused tokens",
        "logits match",
        "max |diff|",
        "TTFT full s",
        "TTFT cached s",
        "load s",
        "speed-up",
    ):
        table.add_column(column, justify="right")
    failed = False
    with tempfile.TemporaryDirectory(prefix="kvtune-model-check-") as root:
        for kind in kind_names:
            result = check_prefix_reuse(
                kind, Path(root) / kind, spec, prompt_tokens, shared_tokens, page_size
            )
            failed |= not result.logits_match
            table.add_row(
                kind,
                str(result.reused_tokens),
                str(result.logits_match),
                f"{result.max_abs_diff:.2e}",
                f"{result.ttft_full_s:.3f}",
                f"{result.ttft_cached_s:.3f}",
                f"{result.load_s:.4f}",
                f"{result.ttft_full_s / result.ttft_cached_s:.2f}x",
            )
    console.print(table)
    if failed:
        raise typer.Exit(1)
