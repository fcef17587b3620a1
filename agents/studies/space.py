"""Search spaces: the static store knobs over their action ranges, and agent hyperparameters."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from env.actions import ActionMapper, select_knobs
from store import StoreConfig

DERIVED_KNOBS = StoreConfig.derived_knobs()
"""Knobs derived from another (:meth:`store.StoreConfig.derive`), so a space may not search them."""
AGENT_ALGORITHMS = ("ppo", "sac")


@dataclass(frozen=True)
class ParamRange:
    """One searched parameter: a numeric range (``log`` for log-scale knobs) or a set of choices."""

    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.choices and not (self.low is not None and self.high is not None and self.low < self.high):
            raise ValueError(f"parameter {self.name} needs low < high, or choices; got {self}")

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.low or 0.0), float(self.high or 0.0)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.choices:
            return trial.suggest_categorical(self.name, list(self.choices))
        low, high = self.bounds
        if self.integer:
            return trial.suggest_int(self.name, int(low), int(high), log=self.log)
        return trial.suggest_float(self.name, low, high, log=self.log)

    def contains(self, value: Any) -> bool:
        if self.choices:
            return any(value == choice and type(value) is type(choice) for choice in self.choices)
        low, high = self.bounds
        return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high

    def describe(self) -> dict[str, Any]:
        if self.choices:
            return {"name": self.name, "choices": list(self.choices)}
        return {
            "name": self.name,
            "low": self.low,
            "high": self.high,
            "log": self.log,
            "integer": self.integer,
        }


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[ParamRange, ...]

    @property
    def names(self) -> list[str]:
        return [param.name for param in self.params]

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        return {param.name: param.suggest(trial) for param in self.params}

    def within(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The entries of ``values`` that name a searched parameter and lie inside its range."""
        return {
            p.name: values[p.name] for p in self.params if p.name in values and p.contains(values[p.name])
        }

    def fingerprint(self) -> str:
        return json.dumps([param.describe() for param in self.params], sort_keys=True)


def load_space_file(path: str | Path) -> dict[str, Any]:
    """A YAML (or JSON) search-space override: ``knob: {low: L, high: H}`` or ``knob: {choices: [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"search space file {path} does not exist; write a YAML map of knob: {{low, high}}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise ValueError(f"search space file {path} is not valid YAML: {error}") from error
    if not isinstance(data, dict) or not data:
        raise ValueError(f"search space file {path} must map knob names to {{low, high}} or {{choices}}")
    return data


def _override_range(name: str, entry: Any, source: str) -> ParamRange:
    specs = StoreConfig.specs()
    if name not in specs:
        raise ValueError(f"{source}: unknown knob {name!r}; valid knobs: {', '.join(specs)}")
    if name in DERIVED_KNOBS:
        raise ValueError(
            f"{source}: knob {name} is derived from {DERIVED_KNOBS[name]} (see StoreConfig.derive); "
            f"search {DERIVED_KNOBS[name]} instead"
        )
    spec = specs[name]
    if not isinstance(entry, Mapping) or set(entry) not in ({"low", "high"}, {"choices"}):
        raise ValueError(
            f"{source}: knob {name} needs {{low: L, high: H}} or {{choices: [...]}}, got {entry!r}"
        )
    try:
        if "choices" in entry:
            if not isinstance(entry["choices"], list) or not entry["choices"]:
                raise ValueError(f"knob {name} needs a non-empty list of choices, got {entry['choices']!r}")
            return ParamRange(name, choices=tuple(dict.fromkeys(spec.check(c) for c in entry["choices"])))
        if spec.choices:
            raise ValueError(f"knob {name} takes {spec.valid_range()}: give {{choices: [...]}}, not low/high")
        low, high = spec.check(entry["low"]), spec.check(entry["high"])
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from error
    if not low < high:
        raise ValueError(
            f"{source}: knob {name} needs low < high inside {spec.valid_range()}, "
            f"got low={low!r}, high={high!r}"
        )
    return ParamRange(name, low, high, log=spec.scale == "log", integer=spec.kind is int)


def static_search_space(
    action_knobs: tuple[str, ...] = (),
    overrides: Mapping[str, Any] | None = None,
    source: str = "search space",
) -> SearchSpace:
    """The action space's knobs over their action ranges; ``overrides`` replace or add knobs.

    Each override is validated against :meth:`store.StoreConfig.specs`: an unknown knob, a range outside
    the knob's valid range or a choice it does not accept raises ``ValueError`` naming the knob.
    """
    params: dict[str, ParamRange] = {}
    for knob in ActionMapper(select_knobs(action_knobs)).knobs:
        spec = knob.spec()
        if knob.choices():
            params[knob.name] = ParamRange(knob.name, choices=knob.choices())
        else:
            low, high = knob.bounds()
            number = int if spec.kind is int else float
            params[knob.name] = ParamRange(
                knob.name, number(low), number(high), log=spec.scale == "log", integer=spec.kind is int
            )
    for name, entry in (overrides or {}).items():
        params[name] = _override_range(name, entry, source)
    return SearchSpace(tuple(params.values()))


def static_config(params: Mapping[str, Any]) -> StoreConfig:
    """The store config of a static trial: its knobs over the defaults, derived knobs made consistent."""
    return StoreConfig().derive(params)


def agent_search_space(algo: str) -> SearchSpace:
    """PPO: learning rate, discount, rollout length, minibatch; SAC: the same with replay batch size and
    learning starts (``n_steps``). Minibatches divide every rollout length, so no batch is truncated."""
    if algo not in AGENT_ALGORITHMS:
        raise ValueError(f"agent studies tune {', '.join(AGENT_ALGORITHMS)}; got --algo {algo!r}")
    common = (ParamRange("learning_rate", 1e-5, 1e-2, log=True), ParamRange("gamma", 0.8, 0.999))
    if algo == "ppo":
        return SearchSpace(
            (*common, ParamRange("n_steps", choices=(16, 32, 64)), ParamRange("batch_size", choices=(8, 16)))
        )
    return SearchSpace(
        (
            *common,
            ParamRange("n_steps", choices=(16, 32, 64)),
            ParamRange("batch_size", choices=(16, 32, 64, 128)),
        )
    )
