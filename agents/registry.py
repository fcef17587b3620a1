"""Policy specs by name: ``default``, ``heuristic``, ``static:FILE``, ``learned:NAME`` (a bundle shipped in
the package, :mod:`agents.shipped`) or the path of a learned bundle.

Every command that takes a ``--policy`` parses it here once: :func:`parse_policy_spec` checks the form
and gives the spec a short label (for tables and MLflow metric names); :func:`make_policy` builds it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agents.bundle import load_policy_bundle
from agents.policies import DefaultPolicy, HeuristicPolicy, Policy, StaticPolicy
from agents.shipped import LEARNED_PREFIX, shipped_bundle, shipped_names

STATIC_PREFIX = "static:"
VALID_FORMS = "default, heuristic, static:FILE, learned:NAME or the path of a learned policy bundle"


@dataclass(frozen=True)
class PolicySpec:
    """A parsed ``--policy`` value: its kind, and the file or bundle it names for static and learned."""

    kind: str
    path: Path | None = None

    @property
    def label(self) -> str:
        """A short, MLflow-safe name: default, heuristic, static-NAME or learned-NAME."""
        if self.path is None:
            return self.kind
        if self.kind == "static":
            return "static-" + self.path.stem
        return "learned-" + (self.path.parent.name if self.path.name == "policy" else self.path.name)


POLICY_BUILDERS: dict[str, Callable[[PolicySpec], Policy]] = {
    "default": lambda spec: DefaultPolicy(),
    "heuristic": lambda spec: HeuristicPolicy(),
    "static": lambda spec: StaticPolicy.load(_required_path(spec)),
    "learned": lambda spec: load_policy_bundle(_required_path(spec)),
}


def _required_path(spec: PolicySpec) -> Path:
    if spec.path is None:
        raise ValueError(f"a {spec.kind} policy needs a path; use {VALID_FORMS}")
    return spec.path


def parse_policy_spec(text: str) -> PolicySpec:
    """``text`` as a :class:`PolicySpec`; ``ValueError`` listing the valid forms if it is none of them."""
    if text in ("default", "heuristic"):
        return PolicySpec(text)
    if text.startswith(STATIC_PREFIX):
        return PolicySpec("static", Path(text.removeprefix(STATIC_PREFIX)))
    if text.startswith(LEARNED_PREFIX):
        return PolicySpec("learned", shipped_bundle(text.removeprefix(LEARNED_PREFIX)))
    path = Path(text)
    if path.exists():
        return PolicySpec("learned", path)
    shipped = ", ".join(shipped_names()) or "none"
    raise ValueError(f"unknown policy {text!r}: use {VALID_FORMS} (shipped: {shipped})")


def make_policy(spec: str | PolicySpec) -> Policy:
    """The policy a spec names (parsed first when given as text)."""
    parsed = parse_policy_spec(spec) if isinstance(spec, str) else spec
    return POLICY_BUILDERS[parsed.kind](parsed)
