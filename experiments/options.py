"""Shared command-line options: building an :class:`env.EnvConfig` from flags."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
import yaml

from env import EnvConfig, RewardConfig

WorkloadOption = typer.Option(
    "staged", "--workload", help="staged | chat | rag | mixed | mooncake (with --trace)."
)
TraceOption = typer.Option(None, "--trace", help="A Mooncake-format JSONL trace (sets --workload mooncake).")
OptionList = typer.Option(
    [], "--param", help="Workload option NAME=VALUE (repeatable), as for kvtune replay."
)


EnvOptionList = typer.Option(
    [],
    "--env",
    help="EnvConfig field NAME=VALUE (repeatable), e.g. profile_scale=128, device=nvme-pcie4, "
    "memory_tier_bytes=67108864, action_knobs=[disable_wal], reward.ttft_weight=2.",
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
    env_options: list[str] | None = None,
) -> EnvConfig:
    options = parse_options(workload_options)
    overrides = parse_options(env_options or [])
    reward = {k.removeprefix("reward."): v for k, v in overrides.items() if k.startswith("reward.")}
    fields = {k: v for k, v in overrides.items() if not k.startswith("reward.")}
    if "action_knobs" in fields:
        fields["action_knobs"] = tuple(fields["action_knobs"])
    unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(EnvConfig)} - {"reward"})
    if unknown:
        raise typer.BadParameter(f"unknown --env field(s) {', '.join(unknown)}; see env.EnvConfig")
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
            reward=RewardConfig(**reward),
            **fields,
        )
    except (TypeError, ValueError) as error:
        raise typer.BadParameter(str(error)) from error
