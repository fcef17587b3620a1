"""Learned policy bundles shipped inside the package, loadable by name: ``--policy learned:NAME``.

Each is a bundle directory under ``agents/shipped/`` (the SB3 ``model.zip`` and its ``card.json``, whose
``training`` entry holds the command that reproduces it and whose ``evaluation`` entry holds its suite
table); ``pyproject.toml`` ships them as package data.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).parent / "shipped"
LEARNED_PREFIX = "learned:"


def shipped_names() -> list[str]:
    """Names of the bundles shipped with this kvtune."""
    if not SHIPPED_DIR.is_dir():
        return []
    return sorted(p.name for p in SHIPPED_DIR.iterdir() if (p / "card.json").is_file())


def shipped_bundle(name: str) -> Path:
    """The directory of shipped bundle ``name``; ``ValueError`` listing the shipped names otherwise."""
    path = SHIPPED_DIR / name
    if name not in shipped_names():
        raise ValueError(
            f"no shipped policy {name!r}; shipped policies: {', '.join(shipped_names()) or 'none'}"
        )
    return path


def ship_bundle(
    source: Path, name: str, command: str, evaluation: list[dict[str, Any]], directory: Path = SHIPPED_DIR
) -> Path:
    """Copy the bundle at ``source`` into the package as ``name``, its card completed with the
    ``kvtune train`` command that reproduces it and the evaluation rows it ships with."""
    from agents.bundle import CARD_FILE, MODEL_FILE, load_policy_bundle

    card = load_policy_bundle(source).card
    target = directory / name
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / MODEL_FILE, target / MODEL_FILE)
    completed = {**asdict(card), "training": {**card.training, "command": command}, "evaluation": evaluation}
    (target / CARD_FILE).write_text(json.dumps(completed, indent=2, sort_keys=True) + "\n")
    return target
