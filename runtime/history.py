"""The history a trace policy's bundle expects (QuantSplitTrace-v0, DESIGN.md §8).

A trace bundle's contract carries ``observation.history``: how many one-second throughput
samples of each direction (``history_k``) and compute-share samples (``share_steps``, one
per share-chain step) the caller passes with each request, and the names of the features
made of them (:mod:`system.trace_obs`). The policy's input is the encoder's features then
those, so the first layer's width is checked against both.
"""

from __future__ import annotations

from dataclasses import dataclass

from system.errors import QsplitInputError, check_keys
from system.trace_obs import ce_plan_width, history_names

HISTORY_FORMAT = "qsplit-trace-history/1"


@dataclass(frozen=True)
class HistorySpec:
    """What a trace bundle expects with each request."""

    history_k: int
    share_steps: int
    ce_plan: bool = False      # the input ends with the CE optimizer's plan (trace_obs)

    def width(self, n_units: int, n_bits: int) -> int:
        """Features the history (and the CE plan) add to the encoder's."""
        return len(history_names(self.history_k)) + \
            (ce_plan_width(n_units, n_bits) if self.ce_plan else 0)


def history_contract(history_k: int, share_steps: int, ce_plan: bool = False) -> dict:
    """The contract's ``observation.history`` entry."""
    return {"format": HISTORY_FORMAT, "history_k": history_k, "share_steps": share_steps,
            "ce_plan": ce_plan,
            "names": history_names(history_k),
            "inputs": {"up_samples_bps": f"{history_k} one-second uplink throughputs, oldest "
                                         "first, bit/s",
                       "down_samples_bps": f"{history_k} one-second downlink throughputs, "
                                           "oldest first, bit/s",
                       "share_samples": f"{share_steps} compute shares of the device, oldest "
                                        "first, (0, 1]",
                       "deadline_s": "the request's deadline, s"}}


def parse_history(obs: dict, where: str) -> HistorySpec | None:
    """The ``observation.history`` of a contract, or None when absent (a plain bundle)."""
    h = obs.get("history")
    if h is None:
        return None
    d = check_keys(f"{where}: observation.history", h, ["format", "history_k", "share_steps"],
                   ["names", "inputs", "ce_plan"])
    if d["format"] != HISTORY_FORMAT:
        raise QsplitInputError(f"{where}: observation.history.format: expected "
                               f"{HISTORY_FORMAT!r}")
    for key in ("history_k", "share_steps"):
        v = d[key]
        if type(v) is not int or not 1 <= v <= 600:
            raise QsplitInputError(f"{where}: observation.history.{key}: {v!r} is outside [1, 600]")
    ce_plan = d.get("ce_plan", False)
    if not isinstance(ce_plan, bool):
        raise QsplitInputError(f"{where}: observation.history.ce_plan: expected true or false")
    spec = HistorySpec(d["history_k"], d["share_steps"], ce_plan)
    if "names" in d and d["names"] != history_names(spec.history_k):
        raise QsplitInputError(f"{where}: observation.history.names differ from this runtime's")
    return spec
