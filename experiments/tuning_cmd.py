"""``kvtune experiment tuning``: every baseline and learned policy on one evaluation suite, one table.

Heavy imports (the store, the environment, agents, Optuna) happen inside the command.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from store import StoreConfig

logger = logging.getLogger(__name__)
console = Console()


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _labelled(pairs: list[str]) -> dict[str, str]:
    specs = {}
    for pair in pairs:
        label, sep, spec = pair.partition("=")
        if not sep or not label or not spec:
            raise typer.BadParameter(f"--policy {pair!r} must be LABEL=SPEC, e.g. ppo=learned:default")
        specs[label] = spec
    return specs


def _reused_or_searched(path: Path, search: Callable[[], StoreConfig]) -> StoreConfig:
    """The static config saved at ``path`` by an earlier run, or a new search's, saved there."""
    from agents.policies import StaticPolicy

    if path.is_file():
        logger.info("reusing the static search saved in %s (delete it to search again)", path)
        return StaticPolicy.load(path).config
    found = search()
    StaticPolicy(found).save(path)
    return found


app = typer.Typer()


@app.command("tuning")
def tuning_command(
    suite: str = typer.Option("standard", "--suite", help="Evaluation suite: smoke | standard."),
    policy: list[str] = typer.Option(
        [],
        "--policy",
        help="A learned (or other) policy as LABEL=SPEC (repeatable), e.g. ppo=learned:default.",
    ),
    distribution: str = typer.Option(
        "serving-mix", "--distribution", help="Training distribution the static-train search runs on."
    ),
    train_draws: int = typer.Option(
        6, "--train-draws", help="Episodes of the distribution per static trial."
    ),
    static_trials: int = typer.Option(
        20, "--static-trials", help="Trials of the training-distribution search."
    ),
    oracle_trials: int = typer.Option(
        12, "--oracle-trials", help="Trials of each per-workload oracle search."
    ),
    repeats: int = typer.Option(3, "--repeats", help="Episodes per policy and workload, averaged."),
    seed: int = typer.Option(0, "--seed", help="Seed of the static searches."),
    trace: Path | None = typer.Option(None, "--trace", help="The Mooncake trace (default: the shared one)."),
    out: Path = typer.Option(Path("runs/tuning"), "--out", help="Output directory."),
    ship: str | None = typer.Option(
        None, "--ship", help="Ship the bundle of this --policy label inside the package as learned:default."
    ),
    ship_command: str = typer.Option(
        "", "--ship-command", help="The `kvtune train` command that made the shipped bundle (for its card)."
    ),
) -> None:
    """RocksDB defaults, kvtune defaults, heuristic, best static of the training distribution, an oracle
    static per workload and the given policies, on the same workloads and seeds: tables, plots, targets.

    Static searches saved in OUT by an earlier run (static-train.json, oracle-WORKLOAD.json) are reused."""
    from agents.policies import Policy, StaticPolicy
    from agents.registry import make_policy
    from agents.suite import (
        MOONCAKE_TRACE,
        SUITE_SERVING,
        SuiteWorkload,
        baseline_policies,
        check_targets,
        run_suite,
        search_static,
        suite_workloads,
        training_workloads,
    )
    from experiments.plots import grouped_bars, window_lines

    out.mkdir(parents=True, exist_ok=True)
    specs = _labelled(policy)
    if ship is not None and (ship not in specs or not Path(specs[ship]).is_dir()):
        raise typer.BadParameter(
            f"--ship {ship!r} must be the label of a --policy that is a bundle directory"
        )
    try:
        workloads = suite_workloads(suite, trace or MOONCAKE_TRACE)
        learned: dict[str, Policy] = {label: make_policy(spec) for label, spec in specs.items()}
        best = _reused_or_searched(
            out / "static-train.json",
            lambda: search_static(
                training_workloads(distribution, train_draws, SUITE_SERVING[suite]), static_trials, seed
            ),
        )
    except ValueError as error:
        raise typer.BadParameter(str(error)) from error

    def oracle(workload: SuiteWorkload) -> dict[str, Policy]:
        config = _reused_or_searched(
            out / f"oracle-{workload.label}.json", lambda: search_static([workload], oracle_trials, seed)
        )
        return {"oracle-static": StaticPolicy(config, source=f"oracle {workload.label}")}

    results = run_suite(workloads, {**baseline_policies(best), **learned}, oracle, repeats)
    rows = [r.row() for r in results]
    _write_csv(out / "workloads.csv", rows)
    _write_csv(out / "windows.csv", [w for r in results for w in r.window_rows()])
    checks = check_targets(results, list(learned))
    (out / "targets.json").write_text(
        json.dumps([{**vars(c), "met": c.met} for c in checks], indent=2) + "\n"
    )
    grouped_bars(
        {
            w.label: {r.policy: r.episode.mean_ttft_s for r in results if r.workload == w.label}
            for w in workloads
        },
        "mean TTFT (s)",
        f"suite {suite}: mean TTFT",
        out / "mean_ttft.png",
    )
    for workload in workloads:
        window_lines(
            {
                r.policy: [w["mean_ttft_s"] for w in r.episode.windows]
                for r in results
                if r.workload == workload.label
            },
            "mean TTFT (s)",
            f"{workload.label}: mean TTFT per window",
            out / f"windows-{workload.label}.png",
        )
    table = Table(title=f"suite {suite}")
    columns = (
        "workload",
        "policy",
        "mean TTFT s",
        "repeat spread",
        "p99 TTFT s",
        "hit ratio",
        "dropped",
        "store RAM MiB",
        "disk MiB",
    )
    for column in columns:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            row["workload"],
            row["policy"],
            f"{row['mean_ttft_s']:.4f}",
            f"{row['repeat_spread']:.1%}",
            f"{row['p99_ttft_s']:.4f}",
            f"{row['hit_token_ratio']:.3f}",
            str(row["dropped_pages"]),
            f"{row['max_store_ram_bytes'] / 2**20:.0f}",
            f"{row['max_disk_bytes'] / 2**20:.1f}",
        )
    console.print(table)
    for check in checks:
        console.print(
            f"{check.workload} / {check.policy}: vs static-train {check.vs_static_train:+.1%} (<= -5%), "
            f"vs oracle {check.vs_oracle:+.1%} (<= +5%), worst window vs RocksDB defaults "
            f"{check.worst_window_vs_rocksdb:+.1%} (<= +2%): {'met' if check.met else 'MISSED'}"
        )
    if ship is not None:
        from agents.shipped import ship_bundle

        shipped = [
            row
            for row in rows
            if row["policy"] in (ship, "rocksdb-defaults", "static-train", "oracle-static")
        ]
        console.print(
            f"shipped as learned:default: {ship_bundle(Path(specs[ship]), 'default', ship_command, shipped)}"
        )
    console.print(f"tables and plots in {out}")
