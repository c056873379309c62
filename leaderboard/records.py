"""``records.csv``: one row per request and decider, every figure a replay needs to re-cost it.

Request fields are written in SI units at full precision (floats as ``repr``), so a row reads
back bit for bit: :mod:`leaderboard.replay` rebuilds the request and plan of a row and checks
that the cost model still gives the recorded figures.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from system.atomic import atomic_write_text
from system.bits import DEFAULT_BITS
from system.cost import PlanFigures
from system.errors import QsplitInputError
from system.loaders import MAX_CSV_BYTES, cell_int, parse_csv, read_text
from system.plan import Plan
from system.request import REQUEST_COLUMNS

PLAN_COLUMNS = ("cut", "weight_bits", "act_bits")
#: A plan's figures as the cost model gives them (what a replay recomputes).
COST_COLUMNS = ("latency_s", "energy_j", "cost", "drop_pp", "feasible", "payload_reduction",
                "uplink_bits")
FIGURE_COLUMNS = (*COST_COLUMNS, "opt_cost", "regret", "exact_match", "decision_us")
CSV_COLUMNS = ("suite", "case", "request", "decider", *REQUEST_COLUMNS, *PLAN_COLUMNS,
               *FIGURE_COLUMNS)


def plan_to_row(p: Plan) -> dict:
    """A plan as CSV columns (weight bits space-separated)."""
    return {"cut": p.cut, "weight_bits": " ".join(map(str, p.weight_bits)), "act_bits": p.act_bits}


def plan_from_row(row: dict, n_units: int, bits: tuple[int, ...] = DEFAULT_BITS,
                  where: str = "row") -> Plan:
    """The plan a CSV row records (refused, naming the row and column, if it does not fit)."""
    wb = tuple(cell_int(f"{where}.weight_bits", b) for b in str(row["weight_bits"]).split())
    plan = Plan(cut=cell_int(f"{where}.cut", row["cut"]), weight_bits=wb,
                act_bits=cell_int(f"{where}.act_bits", row["act_bits"]))
    try:
        return plan.validate(n_units, bits)
    except QsplitInputError as exc:
        raise QsplitInputError(f"{where}.{exc}") from None


def cost_columns(f: PlanFigures, j: int) -> dict:
    """Plan ``j``'s figures of ``f`` under their :data:`COST_COLUMNS` names."""
    return {k: bool(f.feasible[j]) if k == "feasible" else float(getattr(f, k)[j])
            for k in COST_COLUMNS}


def write_csv(rows: Sequence[dict], path: Path) -> None:
    """records.csv, atomically; floats as repr, so they read back bit for bit."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: Path) -> list[tuple[int, dict[str, str]]]:
    """records.csv as (line number, row of strings); refuses a file without the expected columns."""
    text = read_text(path, "replay", MAX_CSV_BYTES)
    return parse_csv(text, f"replay {Path(path).name}", CSV_COLUMNS)


def column(rows: Sequence[dict], key: str) -> np.ndarray:
    """One column of in-memory records as float64 (booleans as 0 / 1)."""
    return np.asarray([r[key] for r in rows], dtype=np.float64)


def group_by(rows: Sequence[dict], key: str) -> dict[str, list[dict]]:
    """Records grouped by the value of ``key``, groups in order of first appearance."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out
