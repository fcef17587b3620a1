"""The orchestrator: starts one worker per (kind, level), fills the stores, runs interleaved rounds."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import shutil
import sys
import time
import types
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from experiments.bench_store.config import (
    KINDS,
    OPS,
    RAW,
    REOPEN_OPS,
    BenchConfig,
    Scenario,
    size_text,
    store_kind_of,
)
from experiments.bench_store.records import (
    BenchError,
    BenchResult,
    FillResult,
    FillStep,
    Footprint,
    Measurement,
    OpResult,
    Snapshot,
)
from experiments.bench_store.report import write_outputs
from experiments.bench_store.system import machine_info, mem_available_bytes
from experiments.bench_store.targets import check_targets, compute_ratios
from experiments.bench_store.worker import WorkerSpec, worker_main
from store import store_kind

logger = logging.getLogger(__name__)

_RATE_UNITS = {"put": "MB/s", "probe": "probes/s", "get": "MB/s", "reopen": "reopens/s"}


@contextlib.contextmanager
def _bare_main() -> Iterator[None]:
    """Hide the parent's ``__main__`` while starting workers.

    multiprocessing re-runs the parent's main script in every forkserver child; for the ``kvtune``
    console script that imports every command's dependencies (mlflow, SB3, ...: ~10 s a worker). The
    workers need only this module, which the forkserver has preloaded.
    """
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main


class _Worker:
    """The orchestrator's handle on one worker process."""

    def __init__(self, context: Any, spec: WorkerSpec) -> None:
        self.spec = spec
        self.label = f"{spec.kind}@{spec.scenario.name}/{spec.level:,}"
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=worker_main, args=(child, spec), name=f"bench-{self.label}", daemon=True
        )
        with _bare_main():
            self.process.start()
        child.close()

    def call(self, op: str, **kwargs: Any) -> Any:
        self.send(op, **kwargs)
        return self.receive(op)

    def send(self, op: str, **kwargs: Any) -> None:
        self.conn.send((op, kwargs))

    def receive(self, op: str) -> Any:
        try:
            status, payload = self.conn.recv()
        except EOFError as error:
            self.process.join(5)
            raise BenchError(
                f"worker {self.label} died during {op} (exit code {self.process.exitcode}); "
                "out of memory? see the kernel log"
            ) from error
        if status != "ok":
            raise BenchError(f"worker {self.label}: {op} failed:\n{payload}")
        return payload

    def stop(self) -> None:
        if self.process.is_alive():
            try:
                self.conn.send(("exit", {}))
                self.conn.recv()
            except (OSError, EOFError):
                pass
            self.process.join(30)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        self.conn.close()


ProgressCallback = Callable[[str, int, int], None]
"""``progress(description, done, total)``, called after every step."""


class _Runner:
    def __init__(self, config: BenchConfig, progress: ProgressCallback | None) -> None:
        self.config = config
        self.progress = progress
        self.measurements: list[Measurement] = []
        self.footprints: list[Footprint] = []
        self.fill_steps: list[FillStep] = []
        self.skipped: dict[str, str] = {}
        self.notes: list[str] = []
        self.started = time.perf_counter()
        self.done = 0
        self.total = 0
        self.reopen_ops = tuple(op for op in REOPEN_OPS if op[1] in config.reopen_caches)
        self.context = multiprocessing.get_context("forkserver")
        self.context.set_forkserver_preload(["experiments.bench_store.worker"])

    def step(self, description: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(description, self.done, self.total)

    def plan_steps(self, plans: dict[str, dict[int, list[str]]]) -> int:
        """Progress steps of the whole run: one per worker call the orchestrator makes (fills in chunks)."""
        steps = 0
        for levels in plans.values():
            for level, kinds in levels.items():
                workers = len(kinds) + 1
                steps += workers * (
                    3 + self.config.rounds * len(OPS) + self.config.reopen_rounds * len(self.reopen_ops)
                )
                steps += len(kinds) * math.ceil(level / self.config.fill_chunk_pages)
        return steps

    def kinds_for(self, scenario: Scenario, level: int, kinds: Sequence[str]) -> list[str]:
        """``kinds`` minus the kinds not on disk where their pages would not fit comfortably in RAM."""
        result = []
        for kind in kinds:
            if not store_kind(store_kind_of(kind)).on_disk:
                pages = max(level, scenario.prompt_pages * scenario.prompts_per_round) + (
                    self.config.rounds * scenario.prompts_per_round * scenario.prompt_pages
                )
                need = int(pages * scenario.page_bytes * 1.5)
                limit = int(mem_available_bytes() * self.config.memory_limit_fraction)
                if need > limit:
                    reason = (
                        f"{kind}@{scenario.name}/{level:,}: skipped, needs ~{size_text(need)} of RAM, over "
                        f"{self.config.memory_limit_fraction:.0%} of the "
                        f"{size_text(limit / self.config.memory_limit_fraction)} available"
                    )
                    self.skipped[f"{kind}@{scenario.name}/{level}"] = reason
                    logger.warning(reason)
                    continue
            result.append(kind)
        return result

    def run(self) -> BenchResult:
        config = self.config
        scenarios = config.scenarios()
        plans = {
            s.name: {level: self.kinds_for(s, level, config.kinds) for level in s.levels} for s in scenarios
        }
        self.total = self.plan_steps(plans)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        machine = machine_info(config.data_dir)
        logger.info("bench config: %s", json.dumps(config.describe(), default=str))
        logger.info("machine: %s", machine)
        for scenario in scenarios:
            logger.info("scenario %s: %s", scenario.name, scenario.description)
            self.run_scenario(scenario, plans[scenario.name])
        ratios = compute_ratios(self.measurements, scenarios)
        targets = check_targets(self.measurements, self.footprints, ratios, scenarios, config)
        return BenchResult(
            config=config,
            machine=machine,
            scenarios=scenarios,
            measurements=self.measurements,
            footprints=self.footprints,
            ratios=ratios,
            targets=targets,
            skipped=self.skipped,
            notes=self.notes,
            fill_steps=self.fill_steps,
            seconds=time.perf_counter() - self.started,
        )

    def run_scenario(self, scenario: Scenario, plan: dict[int, list[str]]) -> None:
        config = self.config
        workers: dict[tuple[str, int], _Worker] = {}
        try:
            for level, kinds in plan.items():
                for kind in [*kinds, RAW]:
                    spec = WorkerSpec(
                        kind=kind,
                        scenario=scenario,
                        level=level,
                        path=config.data_dir / f"{scenario.name}-{level}-{kind}",
                        seed=config.seed,
                        store_config=config.store_config,
                        log_level=logging.getLogger().getEffectiveLevel(),
                    )
                    workers[(kind, level)] = _Worker(self.context, spec)
            for (kind, level), worker in workers.items():
                self.footprint(scenario, (kind, level, "empty"), worker.call("open"), 0.0)
                self.step(f"{scenario.name}: open {worker.label}")
            self.fill(scenario, workers)
            for round_index in range(config.rounds):
                self.run_round(scenario, workers, round_index)
            for (kind, level), worker in workers.items():
                if kind != RAW:
                    self.footprint(
                        scenario, (kind, level, "end"), worker.call("footprint", trim=True), math.nan
                    )
                self.step(f"{scenario.name}: footprint {worker.label}")
            for worker in workers.values():
                worker.call("close")
                self.step(f"{scenario.name}: close {worker.label}")
        finally:
            for worker in workers.values():
                worker.stop()

    def fill(self, scenario: Scenario, workers: dict[tuple[str, int], _Worker]) -> None:
        """Fill every store to its level, all at once, in chunks (so progress moves); each worker asks for
        its next chunk as soon as it is done, so a slow kind does not hold the others back.

        A kind whose fill reaches its cap (:attr:`BenchConfig.fill_caps`) or fails with an ``OSError``
        stops there: its footprint and fill steps are recorded, the reason is reported, and its worker
        leaves the run (``workers`` loses it), so its later phases are skipped.
        """
        filling = {key: worker for key, worker in workers.items() if key[0] != RAW and key[1] > 0}
        if not filling:
            return
        chunk = self.config.fill_chunk_pages
        fill_s = dict.fromkeys(filling, 0.0)
        stored = dict.fromkeys(filling, 0)
        asked: dict[tuple[str, int], int] = {}
        ended: dict[tuple[str, int], str] = {}

        def ask(key: tuple[str, int]) -> None:
            asked[key] = min((stored[key] // chunk + 1) * chunk, key[1])
            cap = self.config.fill_caps.get(key[0], math.inf)
            filling[key].send("fill", pages=asked[key], seconds_left=max(cap - fill_s[key], 0.0))

        for key in filling:
            ask(key)
        by_conn = {worker.conn: key for key, worker in filling.items()}
        while asked:
            for conn in multiprocessing.connection.wait([filling[key].conn for key in asked]):
                key = by_conn[conn]
                worker = filling[key]
                result: FillResult = worker.receive("fill")
                fill_s[key] += result.seconds
                status = fill_status(result, asked.pop(key), key[1])
                self.fill_steps.append(
                    FillStep(
                        scenario=scenario.name,
                        level=key[1],
                        kind=key[0],
                        pages_stored=result.pages_stored,
                        pages=result.pages_stored - stored[key],
                        seconds=result.seconds,
                        fill_s=fill_s[key],
                        status=status,
                    )
                )
                stored[key] = result.pages_stored
                self.step(f"{scenario.name}: fill {worker.label} {result.pages_stored:,} pages")
                if status == "filling":
                    ask(key)
                elif status != "filled":
                    ended[key] = (
                        f"{worker.label}: fill {status} after {fill_s[key]:,.0f} s at "
                        f"{result.pages_stored:,} of {key[1]:,} pages"
                        + (f" ({result.error})" if result.error else "")
                        + "; its later phases are skipped"
                    )
        for (kind, level), worker in filling.items():
            logger.info(
                "%s: fill ended at %s pages in %.1f s (all stores filling at once)",
                worker.label,
                f"{stored[(kind, level)]:,}",
                fill_s[(kind, level)],
            )
            stage = "filled" if (kind, level) not in ended else "fill ended"
            self.footprint(scenario, (kind, level, stage), worker.call("footprint"), fill_s[(kind, level)])
        for key, reason in ended.items():
            logger.warning(reason)
            self.skipped[f"{key[0]}@{scenario.name}/{key[1]}"] = reason
            worker = workers.pop(key)
            worker.call("close")
            worker.stop()

    def run_round(
        self, scenario: Scenario, workers: dict[tuple[str, int], _Worker], round_index: int
    ) -> None:
        names = sorted({kind for kind, _ in workers}, key=(*KINDS, RAW).index)
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        if scenario.fresh_per_round:
            for each in workers.values():
                each.call("reset")
        ops = OPS + (self.reopen_ops if round_index >= self.config.rounds - self.config.reopen_rounds else ())
        for op, cache in ops:
            for level in scenario.levels:
                for kind in order:
                    worker = workers.get((kind, level))
                    if worker is None:
                        continue
                    self.step(
                        f"{scenario.name} round {round_index + 1}/{self.config.rounds}: "
                        f"{op}{f' ({cache})' if cache else ''} {worker.label}"
                    )
                    if kind == RAW and op in ("probe", "reopen"):
                        continue
                    if op == "put":
                        result = worker.call("put")
                    elif op == "probe":
                        result = worker.call("probe", round_index=round_index)
                    elif op == "get":
                        result = worker.call("get", round_index=round_index, cold=cache == "cold")
                    else:
                        result = worker.call("reopen", cold=cache == "cold")
                    if result is not None:
                        self.record(scenario, (level, round_index, kind, op, cache), result)

    def record(self, scenario: Scenario, key: tuple[int, int, str, str, str], result: OpResult) -> None:
        """One measurement row; ``key`` is (level, round, kind, op, cache)."""
        level, round_index, kind, op, cache = key
        seconds = result.seconds
        mb_per_s = result.bytes / seconds / 1e6 if seconds > 0 and result.bytes else math.nan
        pages_per_s = result.pages / seconds if seconds > 0 and result.pages else math.nan
        calls_per_s = result.calls / seconds if seconds > 0 else math.nan
        row = Measurement(
            scenario=scenario.name,
            level=level,
            round=round_index,
            kind=kind,
            op=op,
            cache=cache,
            pages_stored=result.pages_stored,
            calls=result.calls,
            pages=result.pages,
            bytes=result.bytes,
            seconds=seconds,
            sync_s=result.sync_s,
            evict_s=result.evict_s,
            rate=mb_per_s if op in ("put", "get") else calls_per_s,
            rate_unit=_RATE_UNITS[op],
            mb_per_s=mb_per_s,
            pages_per_s=pages_per_s,
            p50_ms=result.p50_ms,
            p99_ms=result.p99_ms,
            block_cache_hit_rate=result.block_cache_hit_rate,
            elapsed_s=time.perf_counter() - self.started,
        )
        self.measurements.append(row)
        logger.debug("measured %s", row)

    def footprint(
        self, scenario: Scenario, where: tuple[str, int, str], snapshot: Snapshot, fill_s: float
    ) -> None:
        """Record a store's footprint; ``where`` is (kind, level, stage)."""
        kind, level, stage = where
        code_note = f"{kind} runs {snapshot.store_code}, behind kvtune's store interface"
        if snapshot.store_code not in ("", "kvtune") and code_note not in self.notes:
            self.notes.append(code_note)
        self.footprints.append(
            Footprint(
                scenario=scenario.name,
                level=level,
                kind=kind,
                stage=stage,
                pages_stored=snapshot.pages_stored,
                files=snapshot.files,
                inodes=snapshot.inodes,
                disk_bytes=snapshot.disk_bytes,
                rss_bytes=snapshot.rss_bytes,
                rss_peak_bytes=snapshot.rss_peak_bytes,
                rss_trimmed_bytes=snapshot.rss_trimmed_bytes,
                key_bytes_per_page=snapshot.key_bytes_per_page,
                fill_s=fill_s,
            )
        )


def fill_status(result: FillResult, asked: int, level: int) -> str:
    """How a fill call ended: ``error`` (an ``OSError``), ``filled`` (the level reached), ``capped``
    (stopped short of the ``asked`` pages: its fill cap), else ``filling``."""
    if result.error:
        return "error"
    if result.pages_stored >= level:
        return "filled"
    return "capped" if result.pages_stored < asked else "filling"


def run_bench(config: BenchConfig, progress: ProgressCallback | None = None) -> BenchResult:
    """Run the whole benchmark, write its outputs to ``config.out``, and return what it measured."""
    runner = _Runner(config, progress)
    result = runner.run()
    write_outputs(result)
    if not config.keep_data:
        # After the outputs: deleting a million page files can take minutes on a busy disk.
        started = time.perf_counter()
        logger.info("removing the stores under %s", config.data_dir)
        shutil.rmtree(config.data_dir, ignore_errors=True)
        logger.info("stores removed in %.0f s", time.perf_counter() - started)
    for target in result.targets:
        logger.info(
            "target %s: %s (measured %.3g, threshold %.3g)",
            target.status,
            target.name,
            target.measured,
            target.threshold,
        )
    return result
