"""``kvtune knobs``: the store's knobs as their declarations state them, a Markdown table for the docs."""

from __future__ import annotations

import typer

app = typer.Typer()
COLUMNS = (
    "knob",
    "default",
    "valid range",
    "scale",
    "change",
    "tuner range",
    "how it is set",
    "what it does",
)


def knob_table() -> str:
    """One Markdown row per :class:`store.StoreConfig` knob, read from its declaration."""
    from store import StoreConfig

    defaults = StoreConfig()
    rows = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for name, spec in StoreConfig.specs().items():
        cells = (
            f"`{name}`",
            repr(getattr(defaults, name)),
            spec.valid_range(),
            spec.scale,
            "live" if spec.live else "reopen",
            spec.tuner_range(),
            spec.how_set(),
            spec.doc,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows)


@app.command("knobs")
def knobs_command() -> None:
    """Print every store knob: default, range, scale, live or reopen, tuner range, how it is set."""
    typer.echo(knob_table())
