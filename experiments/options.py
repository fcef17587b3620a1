"""Option groups shared by commands, each declared once as a typed dataclass (cleanrl-style).

A command takes a group as one parameter annotated with the dataclass; :func:`with_option_groups` spreads
the group's fields into the command's options (each field's ``Annotated`` :func:`typer.Option` gives its
flag and help) and hands the command one instance of the dataclass. ``KEY=VALUE`` flags (``--param``,
``--env``) go through :func:`parse_assignments`, the one parser of them.

This module stays light (no torch, store, env): ``kvtune --help`` imports it.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_type_hints

import typer

if TYPE_CHECKING:
    from env import EnvConfig

REWARD_PREFIX = "reward."
HELP_STORE_KINDS = "lsm, file, applog, memory, sglang-file"
"""Help text only (importing the store registry would import torch at ``kvtune --help``):
``tests/experiments/test_replay_cmd.py`` checks it lists :data:`store.STORE_KINDS`."""


def parse_store_kinds_option(text: str | None, flag: str) -> tuple[str, ...]:
    """The kinds a comma-separated ``flag`` names (none: every kind); an unknown one is a bad parameter."""
    from store import parse_store_kinds

    try:
        return parse_store_kinds(text)
    except ValueError as error:
        raise typer.BadParameter(f"{flag}: {error}") from None


def parse_assignments(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=[0.1, 0.5]"]`` -> ``{"a": 1, "b": (0.1, 0.5)}``: values read as YAML, lists as tuples
    (configs are frozen dataclasses, so a sequence value must be hashable)."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"{flag} {pair!r} must look like NAME=VALUE, e.g. {flag} phase_requests=8"
            )
        parsed = yaml.safe_load(value)
        options[key.strip()] = tuple(parsed) if isinstance(parsed, list) else parsed
    return options


@dataclass(frozen=True)
class EnvOptions:
    """The environment of ``train``, ``evaluate``, ``sweep`` and the studies: workload, store, clock."""

    workload: Annotated[
        str, typer.Option("--workload", help="staged | chat | rag | mixed | mooncake (with --trace).")
    ] = "staged"
    trace: Annotated[
        Path | None, typer.Option("--trace", help="A Mooncake-format JSONL trace (sets --workload mooncake).")
    ] = None
    workload_option: Annotated[
        list[str],
        typer.Option("--param", help="Workload option NAME=VALUE (repeatable), as for kvtune replay."),
    ] = field(default_factory=list)
    env_option: Annotated[
        list[str],
        typer.Option(
            "--env",
            help="EnvConfig field NAME=VALUE (repeatable), e.g. profile_scale=128, device=nvme-pcie4, "
            "memory_tier_bytes=67108864, action_knobs=\\[disable_wal], reward.ttft_weight=2.",
        ),
    ] = field(default_factory=list)
    store: Annotated[str, typer.Option("--store", help=f"Store kind: {HELP_STORE_KINDS}.")] = "lsm"
    profile: Annotated[str, typer.Option("--profile", help="Model profile (see workloads.profiles).")] = (
        "tiny"
    )
    budget_bytes: Annotated[
        int | None, typer.Option("--budget-bytes", help="Disk budget of the store (default: unlimited).")
    ] = None
    requests_per_window: Annotated[
        int, typer.Option("--requests-per-window", help="Requests per control window (env step).")
    ] = 8
    clock: Annotated[str, typer.Option("--clock", help="I/O clock for TTFT: counters | measured.")] = (
        "counters"
    )

    @property
    def label(self) -> str:
        """What the runs are named after: the trace file's name, else the workload."""
        return self.trace.stem if self.trace is not None else self.workload

    def to_config(self) -> EnvConfig:
        """The :class:`env.EnvConfig` these options describe; ``typer.BadParameter`` saying what is wrong."""
        from env import EnvConfig, RewardConfig

        options = parse_assignments(self.workload_option, "--param")
        overrides = parse_assignments(self.env_option, "--env")
        reward = {
            k.removeprefix(REWARD_PREFIX): v for k, v in overrides.items() if k.startswith(REWARD_PREFIX)
        }
        fields = {k: v for k, v in overrides.items() if not k.startswith(REWARD_PREFIX)}
        valid = {f.name for f in dataclasses.fields(EnvConfig)} - {"reward"}
        unknown = sorted(set(fields) - valid)
        if unknown:
            raise typer.BadParameter(
                f"unknown --env field(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}, reward.NAME"
            )
        workload = self.workload
        if self.trace is not None:
            workload = "mooncake"
            options["path"] = str(self.trace)
        try:
            return EnvConfig(
                workload=workload,
                workload_options=options,
                store_kind=self.store,
                profile=self.profile,
                budget_bytes=self.budget_bytes,
                requests_per_window=self.requests_per_window,
                clock=self.clock,  # type: ignore[arg-type]
                reward=RewardConfig(**reward),
                **fields,
            )
        except (TypeError, ValueError) as error:
            raise typer.BadParameter(str(error)) from error


@dataclass(frozen=True)
class TrackingOptions:
    """Where a command's MLflow runs go."""

    tracking_uri: Annotated[
        str | None, typer.Option("--tracking-uri", help="MLflow tracking URI (default: SQLite under --out).")
    ] = None


@dataclass(frozen=True)
class StudyRunOptions:
    """How a ``kvtune study`` command runs: which study, where it is stored, how many trials in how many
    processes."""

    n_trials: Annotated[
        int, typer.Option("--n-trials", help="Trials this command adds to the study (split on workers).")
    ]
    study_name: Annotated[
        str, typer.Option("--study-name", help="Study to create, or to resume if it exists.")
    ]
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="Optuna storage URL (default: sqlite:///OUT/optuna.db); PostgreSQL for many hosts.",
        ),
    ] = None
    workers: Annotated[
        int, typer.Option("--workers", help="Worker processes sharing the study on this machine.")
    ] = 1
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of the workload every trial replays (and of the sampler).")
    ] = 0
    timeout: Annotated[
        float | None, typer.Option("--timeout", help="Seconds after which workers start no new trial.")
    ] = None
    startup_trials: Annotated[
        int, typer.Option("--startup-trials", help="Completed trials before the median pruner acts.")
    ] = 5


def _field_default(item: dataclasses.Field[Any]) -> Any:
    if item.default is not dataclasses.MISSING:
        return item.default
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return inspect.Parameter.empty


def with_option_groups(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with each dataclass-annotated parameter spread into that dataclass's options.

    The returned function has the spread signature typer reads, and calls ``command`` with one instance
    per group. Option names must be unique across a command's groups and its own parameters.
    """
    hints = get_type_hints(command, include_extras=True)
    parameters: list[inspect.Parameter] = []
    groups: dict[str, type[Any]] = {}
    for name, parameter in inspect.signature(command).parameters.items():
        hint = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            groups[name] = hint
            field_hints = get_type_hints(hint, include_extras=True)
            parameters.extend(
                inspect.Parameter(
                    item.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=_field_default(item),
                    annotation=field_hints[item.name],
                )
                for item in dataclasses.fields(hint)
            )
        else:
            parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hint))
    names = [parameter.name for parameter in parameters]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TypeError(f"{command.__qualname__}: option(s) {', '.join(repeated)} declared twice; rename one")

    def spread(**values: Any) -> None:
        for name, group in groups.items():
            values[name] = group(**{item.name: values.pop(item.name) for item in dataclasses.fields(group)})
        command(**values)

    spread.__name__ = command.__name__
    spread.__qualname__ = command.__qualname__
    spread.__doc__ = command.__doc__
    spread.__module__ = command.__module__
    spread.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    spread.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    return spread
