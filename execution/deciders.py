"""How the server picks a plan: the exact optimizer, a runtime bundle, or a given plan."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from system.bits import DEFAULT_BITS
from system.errors import QsplitInputError
from system.loaders import parse_json, read_text
from system.optimal import solve
from system.plan import Plan
from system.profiles import ModelProfile
from system.request import Request

Decider = Callable[[ModelProfile, Request], Plan]


def plan_from_json(obj: object, n_units: int, where: str = "plan") -> Plan:
    """A plan from its JSON form ({cut, weight_bits, act_bits}), checked against the bit set."""
    if not isinstance(obj, dict):
        raise QsplitInputError(f"{where}: expected an object with cut, weight_bits, act_bits")
    for key in ("cut", "weight_bits", "act_bits"):
        if key not in obj:
            raise QsplitInputError(f"{where}: missing field {key!r}")
    cut, wb, ab = obj["cut"], obj["weight_bits"], obj["act_bits"]
    if (
        isinstance(cut, bool)
        or not isinstance(cut, int)
        or not isinstance(wb, list)
        or not all(isinstance(b, int) and not isinstance(b, bool) for b in wb)
        or isinstance(ab, bool)
        or not isinstance(ab, int)
    ):
        raise QsplitInputError(f"{where}: cut and act_bits must be integers, weight_bits a list of integers")
    plan = Plan(cut=cut, weight_bits=tuple(wb), act_bits=ab).validate(n_units, DEFAULT_BITS)
    if not 0 < cut < n_units and ab != 32:
        raise QsplitInputError(
            f"{where}: act_bits: {ab} at cut {cut}, where no activation is quantized (expected 32)"
        )
    return plan


def make_decider(spec: str) -> Decider:
    """``optimal``, ``bundle`` (the model's committed runtime bundle) or a plan JSON file."""
    if spec == "optimal":
        return lambda profile, req: solve(profile, req).plan
    if spec == "bundle":
        from runtime import Dispatcher

        cache: dict[str, Dispatcher] = {}

        def by_bundle(profile: ModelProfile, req: Request) -> Plan:
            if profile.name not in cache:
                cache[profile.name] = Dispatcher.load(model=profile.name)
            return cache[profile.name].decide(req)

        return by_bundle
    data = parse_json(read_text(Path(spec), "plan"), f"plan {spec}")

    def given(profile: ModelProfile, req: Request) -> Plan:
        return plan_from_json(data, profile.n_units, f"plan {spec}")

    return given
