"""Where studies live: Optuna RDB storages, and creating or resuming a study for one objective."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from agents.studies.objectives import StudyObjective, json_ready
from agents.tracking import flatten

logger = logging.getLogger(__name__)

OPTUNA_DB = "optuna.db"
ATTR_KIND = "kvtune.kind"
ATTR_SPACE = "kvtune.search_space"
ATTR_SETUP = "kvtune.trial_setup"
ATTR_UID = "kvtune.uid"


class StorageUnavailableError(ValueError):
    """The Optuna storage URL cannot be opened (unreachable server, missing driver or directory)."""


def default_storage(out: str | Path) -> str:
    path = Path(out).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / OPTUNA_DB}"


def redact(url: str) -> str:
    """``url`` with any password hidden, for messages and logs."""
    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return url


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage, or :class:`StorageUnavailableError` saying what is wrong with ``url``."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}  # worker processes wait for each other's writes
    elif url.startswith("postgresql"):
        engine_kwargs.update(connect_args={"connect_timeout": 10}, pool_pre_ping=True)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except sqlalchemy.exc.OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise StorageUnavailableError(
            f"cannot open study storage {redact(url)}: {reason}. Check that the database server is running "
            "and reachable (host, port, user, database exist), or that a SQLite file's directory exists"
        ) from error
    except (sqlalchemy.exc.ArgumentError, ImportError) as error:
        raise StorageUnavailableError(
            f"cannot use study storage {redact(url)} ({error}); give a SQLAlchemy URL such as "
            "sqlite:///PATH/optuna.db or postgresql+psycopg2://USER@HOST:5432/DB with its driver installed"
        ) from error


def _differences(stored: Any, requested: str) -> str:
    """What differs between a stored and a requested study attr (JSON of a mapping or a space)."""
    if not isinstance(stored, str):
        return f"stored {stored!r}, requested {requested}"
    try:
        old, new = json.loads(stored), json.loads(requested)
    except json.JSONDecodeError:
        return f"stored {stored!r}, requested {requested!r}"
    if isinstance(old, list) and isinstance(new, list):  # search spaces, by parameter
        old, new = {p["name"]: p for p in old}, {p["name"]: p for p in new}
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"stored {old!r}, requested {new!r}"
    old, new = flatten(old), flatten(new)
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "; ".join(
        f"{k}: stored {old.get(k, '(absent)')}, requested {new.get(k, '(absent)')}" for k in keys
    )


def _check_attrs(study: optuna.Study, expected: dict[str, str], url: str) -> None:
    stored = study.user_attrs
    for key, what, fix in (
        (ATTR_KIND, "kind of study", "run the matching `kvtune study` command"),
        (ATTR_SPACE, "search space", "pass the same --space (and action knobs)"),
        (ATTR_SETUP, "trial setup (workload, env, seed or training settings)", "pass the same options"),
    ):
        if stored.get(key) != expected[key]:
            raise ValueError(
                f"study {study.study_name!r} in {redact(url)} was created with another {what} "
                f"({_differences(stored.get(key), expected[key])}); {fix} to resume it, "
                "or choose a new --study-name"
            )


def prepare_study(objective: StudyObjective, name: str, url: str) -> tuple[optuna.Study, str]:
    """Create the study, or load it and check it was created for the same objective; its uid.

    A new study records its kind, search space and trial setup as user attrs and gets the baseline
    enqueued. An existing one must match them, else ``ValueError`` before anything is written.
    """
    storage = open_storage(url)
    expected = {
        ATTR_KIND: objective.kind,
        ATTR_SPACE: objective.space.fingerprint(),
        ATTR_SETUP: json.dumps(json_ready(objective.setup()), sort_keys=True),
    }
    try:
        storage.get_study_id_from_name(name)
        exists = True
    except KeyError:
        exists = False
    if exists:
        study = optuna.load_study(study_name=name, storage=storage)
        foreign = study.trials or study.directions != [optuna.study.StudyDirection.MAXIMIZE]
        if ATTR_UID not in study.user_attrs and foreign:
            raise ValueError(
                f"study {name!r} in {redact(url)} was not created by kvtune (it has trials or another "
                "direction, and no kvtune attributes); choose a new --study-name"
            )
    else:
        study = optuna.create_study(
            study_name=name, storage=storage, direction="maximize", load_if_exists=True
        )
    if ATTR_UID in study.user_attrs:
        _check_attrs(study, expected, url)
        return study, str(study.user_attrs[ATTR_UID])
    uid = uuid.uuid4().hex
    for key, value in {**expected, ATTR_UID: uid}.items():
        study.set_user_attr(key, value)
    baseline = objective.baseline()
    if baseline:
        study.enqueue_trial(baseline, user_attrs={"baseline": True})
    logger.info("created study %s in %s (baseline trial: %s)", name, redact(url), baseline)
    return study, uid
