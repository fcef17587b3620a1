"""The runtime controller: a policy tuning a live store while it serves, behind guards.

Every ``interval_s`` (or on each :meth:`RuntimeController.tick`) the controller reads the store's stats,
builds the observation with the environment's own code (:func:`env.observation.store_window`,
:func:`env.observation.window_features`, :func:`env.observation.encode_observation`), asks the policy and
applies what survives the guards (:class:`Guards`, in this order):

1. ``policy_error``: the policy raised, or returned something that is not a valid ``StoreConfig``
   (NaN and out-of-range knobs fail ``StoreConfig``'s checks): the store stays as it is, counted.
2. ``clamp``: values outside the action space's safe ranges (:data:`env.actions.DEFAULT_ACTION_KNOBS`)
   are clamped into them, and the L0 stop trigger is derived from the others
   (:meth:`store.StoreConfig.derive`).
3. ``reopen_blocked``: knobs that need a reopen keep their value unless ``allow_reopen``.
4. ``hysteresis``: a knob moves only by at least ``min_change`` of its action range (choices always).
5. ``rate_limit``: at most ``max_changes_per_minute`` applied changes in any 60 s.
6. ``rollback``: after a change, the guard metrics (stall fraction, dropped fraction, read latency p99)
   of the next ``rollback_windows`` windows are compared with the window before it; one worse than
   ``baseline * (1 + rollback_margin) + floor`` restores the last good config.

Every tick yields a :class:`Decision`, logged as one structured record and, with ``tracking`` set, sent
to MLflow as metric series. No thread outlives :meth:`RuntimeController.close`.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from agents.policies import Policy
from env.actions import DEFAULT_ACTION_KNOBS
from env.observation import FEATURES, encode_observation, store_window, window_features
from env.reuse import ReuseSketch
from store import KVStore, StoreConfig, StoreStats
from workloads.host_ram import store_ram_bytes

logger = logging.getLogger(__name__)

GUARD_NAMES = ("policy_error", "clamp", "reopen_blocked", "hysteresis", "rate_limit", "rollback")
RATE_WINDOW_S = 60.0


@dataclass(frozen=True)
class Guards:
    """What the controller may do to a serving store. Every guard is on by default."""

    clamp: bool = True
    max_changes_per_minute: int = 4
    min_change: float = 0.05
    allow_reopen: bool = False
    rollback_margin: float = 0.5
    rollback_windows: int = 2
    stall_floor: float = 0.01
    drop_floor: float = 0.01
    read_p99_floor_s: float = 0.001

    def __post_init__(self) -> None:
        if not 0 <= self.min_change < 1:
            raise ValueError(
                f"min_change must be in [0, 1) (a share of a knob's range), got {self.min_change}"
            )
        if self.max_changes_per_minute < 1:
            raise ValueError(f"max_changes_per_minute must be at least 1, got {self.max_changes_per_minute}")
        if self.rollback_margin < 0 or self.rollback_windows < 1:
            raise ValueError(
                f"rollback_margin must be >= 0 and rollback_windows >= 1, got {self.rollback_margin} "
                f"and {self.rollback_windows}"
            )


@dataclass(frozen=True)
class GuardMetrics:
    """The metrics a rollback watches, per window."""

    stall_fraction: float
    dropped_fraction: float
    read_p99_s: float

    def regressed(self, baseline: GuardMetrics, guards: Guards) -> list[str]:
        """Names of the metrics worse than ``baseline`` by more than the stated margin."""
        limits = {
            "stall_fraction": guards.stall_floor,
            "dropped_fraction": guards.drop_floor,
            "read_p99_s": guards.read_p99_floor_s,
        }
        factor = 1.0 + guards.rollback_margin
        return [
            name
            for name, floor in limits.items()
            if getattr(self, name) > getattr(baseline, name) * factor + floor
        ]


@dataclass(frozen=True)
class Decision:
    """One control window: what was seen, proposed, applied, and which guards fired."""

    window: int
    span_s: float
    observation: dict[str, float]
    proposed: dict[str, Any]
    applied: dict[str, Any]
    guards: tuple[str, ...]
    regressed: tuple[str, ...]
    tick_s: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


@dataclass(frozen=True)
class MlflowTarget:
    """An MLflow run the controller logs its series into (from its own thread, so by run id)."""

    tracking_uri: str
    run_id: str


@dataclass
class _Watch:
    """Changes under observation: the guard metrics of the window before the first of them."""

    baseline: GuardMetrics
    windows_left: int


@dataclass
class GuardCounts:
    fired: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, int]:
        return {name: self.fired[name] for name in GUARD_NAMES}


class RuntimeController:
    """Drives ``store`` with ``policy`` every ``interval_s`` once :meth:`start` ed; :meth:`tick` runs one
    window synchronously. ``page_tokens`` is the tokens one store page holds (the store's page size by
    default); the serving side reports looked-up page ids through :meth:`record_lookup` for the reuse
    feature. ``clock`` measures window spans and the rate limit. Thread-safe."""

    def __init__(
        self,
        store: KVStore,
        policy: Policy,
        interval_s: float = 10.0,
        guards: Guards | None = None,
        page_tokens: int | None = None,
        tracking: MlflowTarget | None = None,
        clock: Callable[[], float] = time.monotonic,
        host_ram_bytes: int | None = None,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive seconds, got {interval_s!r}")
        self.store = store
        self.policy = policy
        self.interval_s = interval_s
        self.guards = guards or Guards()
        self.page_tokens = page_tokens or store.page_size
        self.tracking = tracking
        self.host_ram_bytes = host_ram_bytes
        self.sketch = ReuseSketch()
        self.counts = GuardCounts()
        self.decisions: list[Decision] = []
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changes: deque[float] = deque()
        self._watch: _Watch | None = None
        self._last_good = store.config
        self._window = 0
        self._mlflow: Any = None
        self._mark(store.stats())

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> RuntimeController:
        if self._thread is not None:
            raise RuntimeError("the controller is already running; close() it before starting again")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="kvtune-controller", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the loop and wait for its thread (the store stays open: it belongs to the caller)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __enter__(self) -> RuntimeController:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.tick()
            except Exception:  # a failed window must not stop serving: log it, try the next one
                logger.exception("controller window %d failed", self._window)

    # ------------------------------------------------------------------ one window

    def _store_ram_fraction(self) -> float:
        """The store's share of the host RAM it serves beside (0 without a stated ``host_ram_bytes``)."""
        if not self.host_ram_bytes:
            return 0.0
        used = store_ram_bytes(self.store.kind, self.store.config, self.store.budget_bytes)
        return min(used / self.host_ram_bytes, 1.0)

    def record_lookup(self, page_ids: list[bytes]) -> None:
        """The serving side looked up these pages (their digests): feeds the reuse sketch."""
        self.sketch.record(page_ids)

    def tick(self) -> Decision:
        with self._lock:
            started = time.perf_counter()
            stats = self.store.stats()
            now = self._clock()
            span = now - self._since
            features = window_features(
                store_window(self._before, stats, span),
                page_reuse=self.sketch.take_window(),
                page_tokens=self.page_tokens,
                budget_bytes=self.store.budget_bytes,
                writer_queue_depth=self.store.config.writer_queue_depth,
                store_ram_fraction=self._store_ram_fraction(),
            )
            current = self.store.config
            observation = encode_observation(features, current)
            metrics = GuardMetrics(
                features.stall_fraction, features.dropped_fraction, stats.get_latency.p99_s
            )
            fired: list[str] = []
            regressed: list[str] = []
            proposed: dict[str, Any] = {}
            target = current
            if self._watch is not None:
                regressed = metrics.regressed(self._watch.baseline, self.guards)
                if regressed:
                    fired.append("rollback")
                    target = self._last_good
                    self._watch = None
                else:
                    self._watch.windows_left -= 1
                    if self._watch.windows_left <= 0:
                        self._watch, self._last_good = None, current
            if not fired:
                target, proposed = self._propose(observation, current, now, fired)
            applied: dict[str, Any] = {}
            if current.changed(target):
                self.store.apply(target)
                applied = current.changed(self.store.config)  # the store bounds some knobs by its budget
            if applied:
                self._changes.append(now)
                if "rollback" not in fired:
                    baseline = self._watch.baseline if self._watch is not None else metrics
                    self._watch = _Watch(baseline, self.guards.rollback_windows)
            self._mark(self.store.stats() if applied else stats)
            self.counts.fired.update(fired)
            decision = Decision(
                window=self._window,
                span_s=span,
                observation={f.name: float(v) for f, v in zip(FEATURES, observation, strict=False)},
                proposed=proposed,
                applied=applied,
                guards=tuple(fired),
                regressed=tuple(regressed),
                tick_s=time.perf_counter() - started,
            )
            self._window += 1
            self.decisions.append(decision)
        logger.info("controller decision %s", decision.to_json())
        if self.tracking is not None:
            self._log_mlflow(decision, target)
        return decision

    def _mark(self, stats: StoreStats) -> None:
        """Start the next window at ``stats`` (taken after any reopen, whose counters start afresh)."""
        self._before = stats
        self._since = self._clock()

    def _propose(
        self, observation: Any, current: StoreConfig, now: float, fired: list[str]
    ) -> tuple[StoreConfig, dict[str, Any]]:
        """The config the guards let through, and what the policy proposed (as changed knobs)."""
        try:
            decided = self.policy.decide(observation, current)
            if not isinstance(decided, StoreConfig):
                raise ValueError(f"policy returned {type(decided).__name__}, not a StoreConfig")
        except Exception as error:  # any failure of the policy leaves the store as it is
            logger.warning("policy %s failed: %s; the store keeps its config", self.policy.name, error)
            fired.append("policy_error")
            return current, {}
        proposed = current.changed(decided)
        values = decided.to_dict()
        if self.guards.clamp and _clamp(values):
            fired.append("clamp")
        blocked = [] if self.guards.allow_reopen else current.needs_reopen(StoreConfig.from_dict(values))
        if blocked:
            fired.append("reopen_blocked")
            values.update({name: getattr(current, name) for name in blocked})
        if _hold_small_changes(values, current, self.guards.min_change):
            fired.append("hysteresis")
        try:
            target = StoreConfig.from_dict(values)
        except ValueError as error:  # the guards' partial changes broke a cross-knob rule
            logger.warning("guarded config is invalid (%s); the store keeps its config", error)
            fired.append("policy_error")
            return current, proposed
        if current.changed(target):
            while self._changes and now - self._changes[0] >= RATE_WINDOW_S:
                self._changes.popleft()
            if len(self._changes) >= self.guards.max_changes_per_minute:
                fired.append("rate_limit")
                return current, proposed
        return target, proposed

    def _log_mlflow(self, decision: Decision, config: StoreConfig) -> None:
        assert self.tracking is not None
        if self._mlflow is None:
            from mlflow.tracking import MlflowClient

            self._mlflow = MlflowClient(tracking_uri=self.tracking.tracking_uri)
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        values = {f"controller/obs/{k}": v for k, v in decision.observation.items()}
        values.update({f"controller/guard/{k}": float(v) for k, v in self.counts.as_dict().items()})
        values.update(
            {
                f"controller/knob/{k}": float(v)
                for k, v in config.to_dict().items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
        )
        values["controller/tick_s"] = decision.tick_s
        metrics = [Metric(k, v, stamp, decision.window) for k, v in values.items() if math.isfinite(v)]
        self._mlflow.log_batch(self.tracking.run_id, metrics=metrics)


_SAFE_KNOBS = {knob.name: knob for knob in DEFAULT_ACTION_KNOBS}


def _clamp(values: dict[str, Any]) -> bool:
    """Clamp ranged knobs into the action space's safe range, in place; True if any moved."""
    moved = False
    for name, knob in _SAFE_KNOBS.items():
        if knob.spec().choices:
            continue
        low, high = knob.bounds()
        clamped = min(max(values[name], low), high)
        if clamped != values[name]:
            values[name] = type(values[name])(clamped)
            moved = True
    stop = StoreConfig().derive(values).level0_stop_writes_trigger
    if values["level0_stop_writes_trigger"] != stop:
        values["level0_stop_writes_trigger"] = stop
        moved = True
    return moved


def _hold_small_changes(values: dict[str, Any], current: StoreConfig, min_change: float) -> bool:
    """Keep knobs whose move is under ``min_change`` of their action range at ``current``; True if any."""
    held = False
    for name, knob in _SAFE_KNOBS.items():
        old = getattr(current, name)
        if values[name] == old or knob.spec().choices:
            continue
        if abs(knob.to_unit(values[name]) - knob.to_unit(old)) < min_change:
            values[name] = old
            held = True
    return held
