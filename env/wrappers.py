"""A discrete variant of the action space, for DQN.

``Discrete(1 + dim * levels)``: action 0 keeps every knob; action ``1 + i * levels + j`` sets knob ``i`` to
level ``j`` of ``levels`` evenly spaced points of its range, keeping the others. One knob moves per step.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


def discrete_action_count(dim: int, levels: int) -> int:
    return 1 + dim * levels


def apply_discrete(index: int, current: np.ndarray, levels: int) -> np.ndarray:
    """The Box action after discrete action ``index`` from the Box action ``current``."""
    dim = current.shape[0]
    if not 0 <= index < discrete_action_count(dim, levels):
        raise ValueError(f"discrete action {index} is outside [0, {discrete_action_count(dim, levels)})")
    result = np.array(current, dtype=np.float64)
    if index:
        knob, level = divmod(index - 1, levels)
        result[knob] = -1.0 + 2.0 * (level + 0.5) / levels
    return result


class DiscreteKnobActions(gym.ActionWrapper):
    """Wraps an env with a ``Box(-1, 1, (dim,))`` action space; remembers the last Box action."""

    def __init__(self, env: gym.Env, levels: int = 5) -> None:
        super().__init__(env)
        box = env.action_space
        if not isinstance(box, gym.spaces.Box) or len(box.shape) != 1:
            raise ValueError("DiscreteKnobActions needs an env whose action space is a 1-D Box")
        if levels < 2:
            raise ValueError(f"levels must be at least 2, got {levels}")
        self.levels = levels
        self.action_space = gym.spaces.Discrete(discrete_action_count(box.shape[0], levels))
        self._current = np.zeros(box.shape, dtype=np.float64)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(**kwargs)
        self._current = np.asarray(info.get("action", self._current), dtype=np.float64)
        return observation, info

    def action(self, action: Any) -> np.ndarray:
        self._current = apply_discrete(int(action), self._current, self.levels)
        return self._current
