"""The action space: a ``Box`` in [-1, 1]^d mapped onto :class:`store.StoreConfig` knobs.

Shared by training and deployment, so a policy drives a live store exactly as it drove the environment.
Each dimension covers one knob over the sub-range its declaration allows a tuner
(:class:`store.config.TuningRange`), on the knob's scale (log for sizes and counts, linear for
fractions, equal intervals for choices), centred on the base config: action 0 is the base (kvtune's
defaults), -1 and 1 the ends of the range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from store import StoreConfig
from store.config import KnobSpec

ACTION_SCHEMA_VERSION = 2
"""2: the zero action is the base config (1: the middle of every range)."""
KNOB_SPECS = StoreConfig.specs()
"""Every knob's declaration, read once: mapping an action looks each knob's up a dozen times, and
building the table walks the config's fields (half the time of mapping an action to a config and back)."""


@dataclass(frozen=True)
class ActionKnob:
    """One action dimension: a knob and the sub-range the agent may choose from."""

    name: str
    low: float | None = None
    high: float | None = None
    allowed: tuple[Any, ...] | None = None
    """For a choice knob: the choices the agent may pick (default: all of the knob's)."""

    def spec(self) -> KnobSpec:
        if self.name not in KNOB_SPECS:
            raise ValueError(
                f"unknown knob {self.name!r} in the action space; valid knobs: {', '.join(KNOB_SPECS)}"
            )
        return KNOB_SPECS[self.name]

    def choices(self) -> tuple[Any, ...]:
        """The values the agent may choose (empty for a numeric knob)."""
        spec = self.spec()
        if self.allowed is None:
            return spec.choices
        unknown = [value for value in self.allowed if value not in spec.choices]
        if not spec.choices or unknown or not self.allowed:
            raise ValueError(
                f"action choices {self.allowed!r} of knob {self.name} must be a non-empty subset of "
                f"{spec.valid_range()}"
            )
        return self.allowed

    def bounds(self) -> tuple[float, float]:
        spec = self.spec()
        assert spec.low is not None and spec.high is not None
        low = spec.low if self.low is None else self.low
        high = spec.high if self.high is None else self.high
        if not spec.low <= low < high <= spec.high:
            raise ValueError(
                f"action range [{low:g}, {high:g}] of knob {self.name} must lie inside its valid range "
                f"{spec.valid_range()} with low < high"
            )
        return low, high

    def to_value(self, unit: float) -> Any:
        """Knob value for ``unit`` in [0, 1]."""
        spec = self.spec()
        choices = self.choices()
        if choices:
            return choices[min(int(unit * len(choices)), len(choices) - 1)]
        low, high = self.bounds()
        if spec.scale == "log":
            value = math.exp(math.log(low) + unit * (math.log(high) - math.log(low)))
        else:
            value = low + unit * (high - low)
        value = min(max(value, low), high)
        # Floats are rounded to 12 decimals so that to_value(to_unit(v)) == v exactly for every v this
        # method returns (the inverse is otherwise off by an ulp now and then).
        return round(value) if spec.kind is int else round(value, 12)

    def to_unit(self, value: Any) -> float:
        """Inverse of :meth:`to_value`: the centre of the unit interval that maps to ``value``."""
        spec = self.spec()
        choices = self.choices()
        if choices:
            return ((choices.index(value) if value in choices else 0) + 0.5) / len(choices)
        low, high = self.bounds()
        value = min(max(float(value), low), high)
        if spec.scale == "log":
            return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
        return (value - low) / (high - low)

    def from_action(self, action: float, centre: Any) -> Any:
        """Knob value for ``action`` in [-1, 1]: 0 is ``centre`` (the base config's value), and moving
        towards -1 or 1 moves the value towards the low or high end of the range on the knob's scale.

        Centring on the base config makes the zero action, where an untrained agent starts, the
        defaults: an agent must learn to leave them, instead of starting mid-range on every knob.
        """
        action = min(max(float(action), -1.0), 1.0)
        if self.choices():
            return self._choice(action, centre)
        middle = self._centre_unit(centre)
        return self.to_value(middle + action * ((1.0 - middle) if action >= 0 else middle))

    def to_action(self, value: Any, centre: Any) -> float:
        """Inverse of :meth:`from_action`: for a choice, the centre of the action interval that maps to it."""
        if self.choices():
            return self._choice_action(value, centre)
        middle, unit = self._centre_unit(centre), self.to_unit(value)
        span = (1.0 - middle) if unit >= middle else middle
        return (unit - middle) / span if span else 0.0

    def _centre_unit(self, centre: Any) -> float:
        low, high = self.bounds()
        if not low <= centre <= high:
            raise ValueError(
                f"knob {self.name}: the base config's value {centre!r} lies outside the action range "
                f"[{low:g}, {high:g}]; widen the range or choose a base inside it"
            )
        return self.to_unit(centre)

    def _sides(self, centre: Any) -> tuple[float, tuple[Any, ...], tuple[Any, ...]]:
        """(half-width of the centre's interval, choices on the negative side, on the positive side)."""
        choices = self.choices()
        if centre not in choices:
            raise ValueError(
                f"knob {self.name}: the base config's value {centre!r} is not among the action's "
                f"choices {list(choices)}; allow it or choose another base"
            )
        others = tuple(value for value in choices if value != centre)
        if len(others) <= 1:
            return 1.0 / len(choices), others, others
        half = len(others) // 2
        return 1.0 / len(choices), others[:half], others[half:]

    def _choice(self, action: float, centre: Any) -> Any:
        """Equal intervals: ``centre``'s is around 0; the other choices split the two sides."""
        width, negative, positive = self._sides(centre)
        side = negative if action < 0 else positive
        if abs(action) < width or not side:
            return centre
        position = (abs(action) - width) / (1.0 - width)
        return side[min(int(position * len(side)), len(side) - 1)]

    def _choice_action(self, value: Any, centre: Any) -> float:
        width, negative, positive = self._sides(centre)
        for sign, side in ((1.0, positive), (-1.0, negative)):
            if value in side:
                return sign * (width + (side.index(value) + 0.5) * (1.0 - width) / len(side))
        return 0.0


def _declared_action_knobs() -> tuple[ActionKnob, ...]:
    """One dimension per knob that declares a :class:`store.config.TuningRange`, in declaration order."""
    return tuple(
        ActionKnob(name, spec.tuning.low, spec.tuning.high, spec.tuning.choices)
        for name, spec in StoreConfig.specs().items()
        if spec.tuning is not None
    )


DEFAULT_ACTION_KNOBS: tuple[ActionKnob, ...] = _declared_action_knobs()


def select_knobs(names: tuple[str, ...] | list[str]) -> tuple[ActionKnob, ...]:
    """The default action knobs named in ``names`` (all of them when ``names`` is empty), in default order."""
    known = [knob.name for knob in DEFAULT_ACTION_KNOBS]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ValueError(
            f"unknown action knob(s) {', '.join(unknown)}; valid action knobs: {', '.join(known)}"
        )
    return tuple(k for k in DEFAULT_ACTION_KNOBS if not names or k.name in names)


class ActionMapper:
    """Maps actions in [-1, 1]^d to configs and back. Knobs outside the action keep ``base``'s values."""

    def __init__(self, knobs: tuple[ActionKnob, ...] = DEFAULT_ACTION_KNOBS, base: StoreConfig | None = None):
        names = [knob.name for knob in knobs]
        if len(set(names)) != len(names):
            raise ValueError(f"action knobs must be distinct, got {names}")
        derived = StoreConfig.derived_knobs()
        for knob in knobs:
            if knob.name in derived:
                raise ValueError(
                    f"knob {knob.name} is derived from {derived[knob.name]}: put {derived[knob.name]} in "
                    "the action space instead"
                )
            if not knob.choices():
                knob.bounds()
        self.knobs = knobs
        self.base = base or StoreConfig()

    @property
    def names(self) -> list[str]:
        return [knob.name for knob in self.knobs]

    @property
    def dim(self) -> int:
        return len(self.knobs)

    def to_config(self, action: np.ndarray) -> StoreConfig:
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (self.dim,):
            raise ValueError(
                f"action has {action.size} values; this action space has {self.dim}: {self.names}"
            )
        values = {
            knob.name: knob.from_action(float(a), getattr(self.base, knob.name))
            for knob, a in zip(self.knobs, action, strict=True)
        }
        return self.consistent(values)

    def to_action(self, config: StoreConfig) -> np.ndarray:
        # float64, not the Box's float32: float32 cannot hold e.g. a 256 MiB size to the byte, so
        # to_config(to_action(config)) would move knobs that nobody changed.
        return np.array(
            [knob.to_action(getattr(config, knob.name), getattr(self.base, knob.name)) for knob in self.knobs]
        )

    def consistent(self, values: dict[str, Any]) -> StoreConfig:
        """``values`` over the base config, with the knobs derived from them (:meth:`StoreConfig.derive`)."""
        return self.base.derive(values)

    def describe(self) -> list[dict[str, Any]]:
        """The schema recorded in policy cards: name, range, scale per dimension."""
        rows: list[dict[str, Any]] = []
        for knob in self.knobs:
            spec = knob.spec()
            if knob.choices():
                rows.append({"name": knob.name, "scale": "choice", "choices": list(knob.choices())})
            else:
                low, high = knob.bounds()
                rows.append({"name": knob.name, "scale": spec.scale, "low": low, "high": high})
        return rows
