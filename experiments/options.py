"""Shared command-line options: building an :class:`env.EnvConfig` from flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from env import EnvConfig

WorkloadOption = typer.Option(
    "staged", "--workload", help="staged | chat | rag | mixed | mooncake (with --trace)."
)
TraceOption = typer.Option(None, "--trace", help="A Mooncake-format JSONL trace (sets --workload mooncake).")
OptionList = typer.Option(
    [], "--param", help="Workload option NAME=VALUE (repeatable), as for kvtune replay."
)


def parse_options(pairs: list[str]) -> dict[str, Any]:
    """``["a=1", "b=[0.1, 0.5]"]`` -> ``{"a": 1, "b": [0.1, 0.5]}`` (values parsed as YAML)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE")
        options[key.strip()] = yaml.safe_load(value)
    return options


def env_config(
    workload: str,
    trace: Path | None,
    workload_options: list[str],
    store: str,
    profile: str,
    budget_bytes: int | None,
    requests_per_window: int,
    clock: str,
) -> EnvConfig:
    options = parse_options(workload_options)
    if trace is not None:
        workload = "mooncake"
        options["path"] = str(trace)
    try:
        return EnvConfig(
            workload=workload,
            workload_options=options,
            store_kind=store,
            profile=profile,
            budget_bytes=budget_bytes,
            requests_per_window=requests_per_window,
            clock=clock,  # type: ignore[arg-type]
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error
