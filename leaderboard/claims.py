"""The seeds' claims (``claims.yaml``), measured on a leaderboard run's records.

A claim is data: the comparison, the seed that claims it, its figure, and how a decider's
figure is measured, one of a few kinds (:data:`MEASURE_KEYS`). A new comparison of an existing
kind is a change to ``claims.yaml`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from leaderboard.records import FIGURE_COLUMNS, column, group_by
from leaderboard.suites import BASELINES
from system.accuracy import is_feasible
from system.errors import QsplitInputError, check_keys, shown
from system.loaders import parse_yaml, read_text

CLAIMS_PATH = Path(__file__).with_name("claims.yaml")
CLAIMS_FORMAT = "qsplit-seed-claims/1"
UNITS = ("pct", "x")
#: Keys of each measurement kind: (required, optional).
MEASURE_KEYS = {"mean": (("kind", "column", "budget_at_most_pp"), ("feasible_only", "device_part_only")),
                "total_ratio": (("kind", "column", "baseline"), ())}
_NUMERIC_COLUMNS = tuple(c for c in FIGURE_COLUMNS if c not in ("feasible", "exact_match"))


@dataclass(frozen=True)
class Claim:
    """One claimed comparison and how it is measured (the fields of a claims.yaml entry)."""

    claim: str
    seed: str
    claimed: str
    unit: str                   # one of UNITS
    kind: str                   # one of MEASURE_KEYS
    column: str
    baseline: str = ""          # total_ratio: the decider compared with
    budget_at_most_pp: float = math.inf   # mean: records with a budget at most this
    feasible_only: bool = False           # mean: records within their budget only
    device_part_only: bool = False        # mean: records with a device part (cut > 0) only

    def measure(self, by_decider: dict[str, list[dict]], decider: str) -> float | None:
        """``decider``'s figure for this claim; None when it cannot be measured on these records."""
        rows = by_decider[decider]
        if self.kind == "total_ratio":
            if self.baseline not in by_decider:
                return None
            total = float(column(rows, self.column).sum())
            base_total = float(column(by_decider[self.baseline], self.column).sum())
            return None if total == 0 else base_total / total
        # a budget "at most B pp" up to the rounding tolerance a plan's drop gets against its budget
        keep = is_feasible(column(rows, "eps_pp"), self.budget_at_most_pp)
        if self.feasible_only:
            keep &= column(rows, "feasible") > 0
        if self.device_part_only:
            keep &= column(rows, "cut") > 0
        values = column(rows, self.column)[keep]
        return float(values.mean()) if values.size else None


@dataclass(frozen=True)
class SeedClaims:
    """The claims, and the baselines whose own figures are measured too."""

    claims: tuple[Claim, ...]
    baselines_measured: tuple[str, ...]


def _text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise QsplitInputError(f"{where}: expected a non-empty string, got {shown(value)}")
    return value


def _choice(where: str, value: object, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise QsplitInputError(f"{where}: expected one of {list(allowed)}, got {shown(value)}")
    return str(value)


def _claim_from_dict(where: str, d: object) -> Claim:
    c = check_keys(where, d, ("claim", "seed", "claimed", "unit", "measure"))
    m = c["measure"]
    kind = _choice(f"{where}.measure.kind", m.get("kind") if isinstance(m, dict) else None,
                   tuple(MEASURE_KEYS))
    check_keys(f"{where}.measure", m, *MEASURE_KEYS[kind])
    extra: dict = {}
    if kind == "total_ratio":
        extra["baseline"] = _choice(f"{where}.measure.baseline", m["baseline"], BASELINES)
    else:
        budget = m["budget_at_most_pp"]
        if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 100:
            raise QsplitInputError(
                f"{where}.measure.budget_at_most_pp: {shown(budget)} is outside (0, 100] pp")
        extra["budget_at_most_pp"] = float(budget)
        for flag in MEASURE_KEYS[kind][1]:
            value = m.get(flag, False)
            if not isinstance(value, bool):
                raise QsplitInputError(f"{where}.measure.{flag}: expected true or false, got {shown(value)}")
            extra[flag] = value
    return Claim(claim=_text(f"{where}.claim", c["claim"]), seed=_text(f"{where}.seed", c["seed"]),
                 claimed=_text(f"{where}.claimed", c["claimed"]),
                 unit=_choice(f"{where}.unit", c["unit"], UNITS), kind=kind,
                 column=_choice(f"{where}.measure.column", m["column"], _NUMERIC_COLUMNS), **extra)


def load_claims(path: Path = CLAIMS_PATH) -> SeedClaims:
    """The claims of a claims YAML file (the shipped one by default); unknown keys are refused."""
    where = path.name
    data = parse_yaml(read_text(path, "claims"), where)
    d = check_keys(where, data, ("format", "claims"), ("baselines_measured",))
    if d["format"] != CLAIMS_FORMAT:
        raise QsplitInputError(f"{where}.format: expected {CLAIMS_FORMAT!r}, got {shown(d['format'])}")
    raw = d["claims"]
    if not isinstance(raw, list) or not raw:
        raise QsplitInputError(f"{where}.claims: expected a non-empty list of claims")
    measured = d.get("baselines_measured", [])
    if not isinstance(measured, list):
        raise QsplitInputError(f"{where}.baselines_measured: expected a list of baseline names")
    return SeedClaims(
        claims=tuple(_claim_from_dict(f"{where}.claims[{i}]", c) for i, c in enumerate(raw)),
        baselines_measured=tuple(_choice(f"{where}.baselines_measured[{i}]", b, BASELINES)
                                 for i, b in enumerate(measured)))


@cache
def shipped_claims() -> SeedClaims:
    """The package's claims.yaml, read once."""
    return load_claims()


def measure_claims(rows: Sequence[dict], claims: SeedClaims | None = None) -> list[dict]:
    """Each claim with every subject decider's figure measured on these records (DESIGN.md §6).

    Subjects are the deciders that are not baselines, and the baselines the claims name in
    ``baselines_measured``.
    """
    claims = claims or shipped_claims()
    by_dec = group_by(rows, "decider")
    subjects = [d for d in by_dec if d not in BASELINES or d in claims.baselines_measured]
    return [{"claim": c.claim, "seed": c.seed, "claimed": c.claimed, "unit": c.unit,
             "measured": {d: c.measure(by_dec, d) for d in subjects}} for c in claims.claims]


def format_claim(value: float | None, unit: str) -> str:
    """A measured figure as the summary table shows it."""
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if unit == "pct" else f"{value:.2f}x"
