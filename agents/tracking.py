"""MLflow tracking: every train, evaluate and study run is an MLflow run, on SQLite by default.

It lives in agents/ because training and studies log from inside their loops; the command line uses it too.

Runs live in ``<run dir>/mlflow.db`` with artifacts beside it unless ``--tracking-uri`` names a server
or another database. Only MLflow's own API is used.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

MAX_PARAM_LENGTH = 6000


def default_tracking_uri(run_dir: str | Path) -> str:
    path = Path(run_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings and dataclasses as ``a.b.c`` -> string params."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        is_record = dataclasses.is_dataclass(value) and not isinstance(value, type)
        plain = dataclasses.asdict(value) if is_record else value
        if isinstance(plain, Mapping):
            flat.update(flatten(plain, prefix=f"{name}."))
        else:
            flat[name] = str(plain)[:MAX_PARAM_LENGTH]
    return flat


def ensure_experiment(name: str, tracking_uri: str, artifact_root: Path | None) -> str:
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    location = artifact_root.resolve().as_uri() if artifact_root is not None else None
    return str(client.create_experiment(name, artifact_location=location))


@contextmanager
def tracked_run(
    experiment: str,
    run_name: str,
    tracking_uri: str,
    params: Mapping[str, Any],
    artifact_root: Path | None = None,
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An active MLflow run with ``params`` logged flat; nested runs attach to the active parent."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(experiment, tracking_uri, artifact_root)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name, nested=nested, tags=dict(tags or {})
    ) as run:
        flat = flatten(params)
        names = sorted(flat)
        for start in range(0, len(names), 100):
            mlflow.log_params({name: flat[name] for name in names[start : start + 100]})
        logger.info("MLflow run %s (%s) at %s", run.info.run_id, run_name, tracking_uri)
        yield run


def log_metrics(metrics: Mapping[str, float], step: int, prefix: str = "") -> None:
    numeric = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if numeric:
        mlflow.log_metrics(numeric, step=step)
