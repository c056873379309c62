"""Replay: re-cost every row of a ``records.csv`` through the cost model and compare.

A row records its request and plan at full precision, so the cost model must give its
figures again to the last bit (relative tolerance 1e-12); a row that does not says which
columns differ.
"""

from __future__ import annotations

import math
from pathlib import Path

from leaderboard.records import COST_COLUMNS, cost_columns, plan_from_row, read_csv
from system.bits import DEFAULT_BITS, check_bit_set
from system.cost import evaluate_plans
from system.errors import QsplitInputError, shown
from system.loaders import cell_float, parse_json, read_text
from system.profiles import ModelProfile, load_profile, with_widths
from system.request import request_from_row

#: Columns a replay recomputes and compares.
REPLAY_COLUMNS = (*COST_COLUMNS, "regret")


def replay_row(row: dict, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS,
               where: str = "row") -> dict:
    """Re-cost one CSV row through the cost model: its figures as the row should hold them."""
    req = request_from_row(row, where)
    f = evaluate_plans(profile, req, [plan_from_row(row, profile.n_units, bits, where)])
    opt_cost = cell_float(f"{where}.opt_cost", row["opt_cost"])
    return {**cost_columns(f, 0), "regret": float(f.cost[0] / opt_cost - 1.0)}


def replay_mismatches(row: dict, profile: ModelProfile, bits: tuple[int, ...] = DEFAULT_BITS,
                      rel_tol: float = 1e-12, where: str = "row") -> list[str]:
    """The columns of ``row`` whose recorded value differs from the re-costed one."""
    got = replay_row(row, profile, bits, where)
    bad = []
    for k in REPLAY_COLUMNS:
        rec = row[k]
        if k == "feasible":
            if (str(rec) == "True") != got[k]:
                bad.append(k)
        elif not math.isclose(cell_float(f"{where}.{k}", rec), got[k], rel_tol=rel_tol,
                              abs_tol=1e-300):
            bad.append(k)
    return bad


def replay_csv(path: Path, profile: ModelProfile | None = None) -> tuple[int, list[str]]:
    """Re-cost every row of records.csv; (rows checked, one line per mismatching row).

    The summary.json beside the CSV gives the bit set and, without ``profile``, the model;
    the model's hash must match the one evaluated.
    """
    path = Path(path)
    sj = path.parent / "summary.json"
    meta = _summary(sj) if sj.is_file() else {}
    if profile is None:
        if not meta:
            raise QsplitInputError(f"replay: no summary.json beside {path}; give --model")
        profile = with_widths(load_profile(meta["model"]), meta.get("widths"), "summary.json widths")
        if profile.sha256() != meta["profile_sha256"]:
            raise QsplitInputError(
                f"replay: model {shown(meta['model'])} differs from the one evaluated (profile hash)")
    bits = check_bit_set("summary.json bits", meta.get("bits", list(DEFAULT_BITS)))
    rows = read_csv(path)
    bad = []
    for line, row in rows:
        cols = replay_mismatches(row, profile, bits, where=f"{path.name} row {line}")
        if cols:
            bad.append(f"row {line} ({row['case']}, request {row['request']}, "
                       f"{row['decider']}): {', '.join(cols)} differ")
    return len(rows), bad


def _summary(path: Path) -> dict:
    """What a replay reads of summary.json: the model, its hash and the bit set."""
    where = f"replay {path.name}"
    meta = parse_json(read_text(path, "replay"), where)
    if not isinstance(meta, dict):
        raise QsplitInputError(f"{where}: expected a mapping, got {type(meta).__name__}")
    for key in ("model", "profile_sha256"):
        if not isinstance(meta.get(key), str):
            raise QsplitInputError(f"{where}.{key}: expected a string, got {shown(meta.get(key))}")
    return meta
