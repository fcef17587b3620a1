"""The steps of ``kvtune run``: the store where files hurt, policies where tuning matters, one summary.

Every step goes through the library functions of the documented commands (``kvtune bench store``,
``train``, ``study``, ``evaluate``) and is an MLflow run; this module only sizes them, reads their results
into :class:`SummaryRow` records and draws the one picture. It imports the heavy libraries, so the command
imports it lazily.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from agents.evaluation import EpisodeResult
from agents.registry import PolicySpec, parse_policy_spec
from agents.studies import (
    BEST_STATIC_FILE,
    StaticObjective,
    StudyOptions,
    default_storage,
    run_study,
    static_search_space,
)
from agents.tracking import default_tracking_uri, tracked_run
from agents.training import TrainConfig
from env import EnvConfig
from experiments.bench_store import BenchConfig, BenchResult, pair_ratios, run_bench, write_outputs
from experiments.jobs import evaluate_job, train_job

logger = logging.getLogger(__name__)

MiB = 1024 * 1024
SHIPPED_POLICY = "learned:default"
"""The learned policy the package ships (issue 12); without it ``kvtune run`` trains a short one."""
NOISE_FRACTION = 0.05
"""A policy differs from the defaults when its mean TTFT is this far from theirs (relative)."""
BASELINE_KIND = "file"
TUNING_KNOBS = ("disable_wal", "reclaim", "write_admission_hits", "enable_blob_files")
"""The knobs the tuned and the learned policy act on: the ones this workload is sensitive to."""
NO_DIFFERENCE = f"no difference beyond noise (<{NOISE_FRACTION:.0%})"
PAPER_COMMAND = "kvtune experiment paper --out runs/paper --phase-requests 10 --scale 256 --no-trace"


@dataclass(frozen=True)
class QuickSize:
    """How big each step of ``kvtune run`` is."""

    phase_requests: int
    timesteps: int
    trials: int
    bench_rounds: int
    bench_small_levels: tuple[int, ...]
    bench_large_pages: int

    @classmethod
    def named(cls, tiny: bool) -> QuickSize:
        """The size of ``make run`` (a few minutes on 2 cores), or a tiny one for the test suite."""
        if tiny:
            return cls(2, 4, 2, 1, (256,), 16)
        return cls(10, 256, 8, 3, (8_192,), 32)


@dataclass(frozen=True)
class SummaryRow:
    """One line of the closing table: a figure of ``subject`` against ``baseline`` and what it says."""

    step: str
    metric: str
    subject: str
    subject_value: float
    baseline: str
    baseline_value: float
    verdict: str

    @property
    def ratio(self) -> float:
        return self.subject_value / self.baseline_value if self.baseline_value else math.nan


@dataclass
class QuickResult:
    """What ``kvtune run`` produced: the summary rows, the picture, and the files of every step."""

    rows: list[SummaryRow] = field(default_factory=list)
    plot: Path | None = None
    learned_source: str = ""
    notes: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)


def store_step(out: Path, size: QuickSize, seed: int, tracking_uri: str) -> list[SummaryRow]:
    """The store benchmark's small-pages scenario, lsm against one file per page (an MLflow run)."""
    config = BenchConfig.quick(
        out=out,
        kinds=("lsm", BASELINE_KIND),
        rounds=size.bench_rounds,
        small_levels=size.bench_small_levels,
        large_pages=size.bench_large_pages,
        seed=seed,
    )
    with tracked_run("kvtune-run", "store-lsm-vs-file", tracking_uri, config.describe()):
        result = run_bench(config)
        write_outputs(result)
    return store_rows(result)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def store_rows(result: BenchResult) -> list[SummaryRow]:
    """Reopen time, probe and put rates and files created at the largest small-pages level."""
    level = max(result.config.small_levels)
    ratios = {
        (r.op, r.cache): r.median_ratio
        for r in pair_ratios(result.measurements, "lsm", BASELINE_KIND)
        if r.scenario == "small" and r.level == level
    }

    def median_of(kind: str, op: str, cache: str, attribute: str) -> float:
        return _median(
            [
                getattr(m, attribute)
                for m in result.measurements
                if (m.scenario, m.level, m.kind, m.op, m.cache) == ("small", level, kind, op, cache)
            ]
        )

    rows = []
    metric_names = {
        ("reopen", "cold"): ("reopen s (cold cache)", "seconds"),
        ("probe", ""): ("probes per s", "rate"),
        ("put", ""): ("durable put MB/s", "rate"),
    }
    for (op, cache), (metric, attribute) in metric_names.items():
        lsm = median_of("lsm", op, cache, attribute)
        other = median_of(BASELINE_KIND, op, cache, attribute)
        faster = ratios.get((op, cache), math.nan)
        verdict = f"lsm {faster:.2f}x the rate of {BASELINE_KIND} (median of paired rounds)"
        rows.append(
            SummaryRow("store", f"{metric} @ {level:,} pages", "lsm", lsm, BASELINE_KIND, other, verdict)
        )
    files = {
        f.kind: f.files
        for f in result.footprints
        if f.scenario == "small" and f.level == level and f.kind in ("lsm", BASELINE_KIND)
    }
    lsm_files, other_files = files.get("lsm", 0), files.get(BASELINE_KIND, 0)
    rows.append(
        SummaryRow(
            "store",
            f"files on disk @ {level:,} pages",
            "lsm",
            float(lsm_files),
            BASELINE_KIND,
            float(other_files),
            f"{BASELINE_KIND} creates {other_files / max(lsm_files, 1):.0f}x the files (inodes)",
        )
    )
    return rows


def tuning_environment(size: QuickSize) -> EnvConfig:
    """Staged prompts on an NVMe disk at an arrival rate where backups fall behind, a quarter-size budget.

    GLM-4-9B pages shrunk 256x (40 KiB), 256-token pages: every page a backup writes costs the store's
    write amplification on the one disk the prefetches read from, so late backups cost hits.
    """
    return EnvConfig(
        workload="staged",
        workload_options={"phase_requests": size.phase_requests, "rate": 40.0},
        requests_per_window=10,
        profile="glm-4-9b",
        profile_scale=256,
        device="nvme-pcie4",
        page_size=256,
        servers=8,
        budget_bytes=14 * MiB,
        action_knobs=TUNING_KNOBS,
    )


def learned_policy(
    environment: EnvConfig, size: QuickSize, seed: int, out: Path, tracking_uri: str
) -> tuple[PolicySpec, str]:
    """The shipped learned policy if the package has one, else one trained here (and which it is)."""
    try:
        return parse_policy_spec(SHIPPED_POLICY), f"shipped bundle {SHIPPED_POLICY}"
    except ValueError:
        logger.info("no shipped %s policy: training a short PPO run", SHIPPED_POLICY)
    train = TrainConfig(
        algo="ppo",
        timesteps=size.timesteps,
        n_envs=2,
        eval_every=max(size.timesteps // 2, 2),
        seed=seed,
        env=environment,
    )
    trained = train_job(train, out, "train-ppo-quick", tracking_uri)
    return PolicySpec("learned", trained.bundle), f"trained here: PPO, {size.timesteps} steps"


def policy_step(
    out: Path, size: QuickSize, seed: int, tracking_uri: str
) -> tuple[list[EpisodeResult], str, Path]:
    """Default, the best static config of a short study and the learned policy on the same episode."""
    environment = tuning_environment(size)
    learned, source = learned_policy(environment, size, seed, out / "train", tracking_uri)
    study_dir = out / "study"
    run_study(
        StaticObjective(environment, static_search_space(environment.action_knobs), seed),
        StudyOptions(
            study_name="quick-static",
            storage=default_storage(study_dir),
            n_trials=size.trials,
            out=study_dir.resolve(),
            tracking_uri=tracking_uri,
        ),
    )
    specs = [PolicySpec("default"), PolicySpec("static", study_dir / BEST_STATIC_FILE), learned]
    evaluated = evaluate_job(specs, environment, seed, out / "evaluate", "evaluate-quick", tracking_uri)
    return evaluated.results, source, evaluated.table


def policy_rows(results: Sequence[EpisodeResult]) -> list[SummaryRow]:
    """Each policy's mean TTFT and hit ratio against the defaults', with a verdict against the noise."""
    default, *others = results
    rows = []
    for result in others:
        change = result.mean_ttft_s / default.mean_ttft_s - 1 if default.mean_ttft_s else math.nan
        if abs(change) < NOISE_FRACTION:
            verdict = NO_DIFFERENCE
        else:
            verdict = f"{'faster' if change < 0 else 'slower'} than defaults by {abs(change):.0%}"
        rows.append(
            SummaryRow(
                "policy",
                "mean TTFT ms",
                result.policy,
                result.mean_ttft_s * 1e3,
                default.policy,
                default.mean_ttft_s * 1e3,
                verdict,
            )
        )
        rows.append(
            SummaryRow(
                "policy",
                "hit ratio",
                result.policy,
                result.hit_token_ratio,
                default.policy,
                default.hit_token_ratio,
                f"{result.hit_token_ratio - default.hit_token_ratio:+.3f} hit ratio",
            )
        )
    return rows


def summary_plot(rows: Sequence[SummaryRow], path: Path) -> Path:
    """One bar per row: the subject's figure over the baseline's (1 = the same)."""
    figure, axes = plt.subplots(1, 2, figsize=(12, 4))
    for axis, step, title in (
        (axes[0], "store", f"lsm / {BASELINE_KIND} (small pages)"),
        (axes[1], "policy", "policy / the default config"),
    ):
        chosen = [row for row in rows if row.step == step]
        labels = [f"{row.subject}\n{row.metric}" for row in chosen]
        axis.bar(range(len(chosen)), [row.ratio for row in chosen])
        axis.axhline(1.0, color="black", linewidth=0.8)
        axis.set_xticks(range(len(chosen)), labels, rotation=30, ha="right", fontsize=7)
        axis.set_yscale("log")
        axis.set_ylabel("ratio to baseline")
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def run_quick(out: Path, size: QuickSize, seed: int) -> QuickResult:
    """Every step of ``kvtune run`` into ``out``, MLflow runs in ``out/mlflow.db``."""
    out.mkdir(parents=True, exist_ok=True)
    tracking_uri = default_tracking_uri(out)
    result = QuickResult()
    result.rows.extend(store_step(out / "store", size, seed, tracking_uri))
    results, result.learned_source, table = policy_step(out, size, seed, tracking_uri)
    result.rows.extend(policy_rows(results))
    if any(row.verdict == NO_DIFFERENCE for row in result.rows):
        result.notes.append(f"a policy ties with the defaults at this size; a larger run: {PAPER_COMMAND}")
    result.plot = summary_plot(result.rows, out / "summary.png")
    summary = out / "summary.json"
    document = {
        "learned_policy": result.learned_source,
        "notes": result.notes,
        "rows": [dataclasses.asdict(r) for r in result.rows],
    }
    summary.write_text(json.dumps(document, indent=2) + "\n")
    result.files.update(evaluation=table, store=out / "store", summary=summary)
    return result


def row_cells(row: SummaryRow) -> list[Any]:
    """The row as table cells."""
    return [
        row.step,
        row.metric,
        f"{row.subject} {row.subject_value:.4g}",
        f"{row.baseline} {row.baseline_value:.4g}",
        f"{row.ratio:.3g}",
        row.verdict,
    ]
