"""Evaluation suites: a model profile, the deciders, and cases of seeded requests.

A suite (``configs/eval/<name>.yaml``, loaded strictly: unknown keys are errors) fixes a model
profile, the deciders and cases: a scenario (optionally with some of its keys overridden), a
request count and a seed. A case whose trace folder is missing is skipped with a reason, not
refused, so a suite that replays traces not shipped with the project still loads.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from system.bits import DEFAULT_BITS, check_bit_set
from system.errors import QsplitInputError, check_keys, shown
from system.loaders import is_dir, is_file, parse_yaml, read_text, user_path
from system.profiles import ModelProfile, builtin_profile_names, load_profile, with_widths
from system.scenario import Scenario, config_dirs, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
SUITE_FORMAT = "qsplit-eval-suite/1"
_SUITE_REQUIRED = ("name", "model", "cases")
_SUITE_OPTIONAL = ("format", "description", "bits", "deciders", "widths")
_CASE_REQUIRED = ("name", "scenario", "n_requests", "seed")
_CASE_OPTIONAL = ("description", "override")
#: Deciders that are comparison points; the rest (optimal, PPO runs, bundles) are "subjects"
#: whose figures the seeds' claims table shows.
BASELINES = ("server_only", "device_only", "device_only_int8", "partition_only", "uniform")


@dataclass(frozen=True, eq=False)
class Case:
    """A slice of a suite: ``n_requests`` requests drawn from ``scenario`` with ``seed``."""

    name: str
    description: str
    n_requests: int
    seed: int
    scenario: Scenario | None   # None when skipped
    skip_reason: str = ""       # why the case cannot run here (a missing trace folder)


# Its field list resembles Scenario's in shape only: the two are different records.
@dataclass(frozen=True, eq=False)
class Suite:
    """A validated evaluation suite (the YAML form is described in configs/eval/default.yaml)."""

    name: str
    description: str
    model: str
    profile: ModelProfile
    bits: tuple[int, ...]
    deciders: tuple[str, ...]
    cases: tuple[Case, ...]
    path: str


def suites_for(spec: str | Path, model: str | None = None, widths: str | None = None
               ) -> list[Suite]:
    """The suite ``spec`` planned for its own model, for ``model`` instead (a profile name or
    path), or once per shipped profile (``model="all"``), offering ``widths`` if given; a
    suite run for another model than its own is named ``<suite>-<model>``."""
    suite = load_suite(spec)
    names = [None] if model is None else builtin_profile_names() if model == "all" else [model]
    out = []
    for name in names:
        s = suite if name is None else replace(
            suite, name=f"{suite.name}-{Path(name).stem}", model=name, profile=load_profile(name))
        out.append(replace(s, profile=with_widths(s.profile, widths, "--widths")))
    return out


def suite_names() -> list[str]:
    """Suite names :func:`load_suite` accepts without a path (trace-variance suites, read by
    :mod:`leaderboard.variance`, are not among them)."""
    return sorted({p.stem for d in config_dirs("eval") if d.is_dir() for p in d.glob("*.yaml")
                   if "qsplit-trace-suite/" not in p.read_text(encoding="utf-8")})


#: Requests per case at most: every request keeps a record per decider in memory (about
#: 3 kB each), so 100,000 requests and 8 deciders already need some 2.4 GB.
MAX_REQUESTS = 100_000


def check_n_requests(where: str, value: object) -> int:
    """A case's request count, refused (one line, with its range) before anything is drawn."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REQUESTS:
        raise QsplitInputError(f"{where}: expected a whole number of requests in "
                               f"[1, {MAX_REQUESTS}], got {shown(value)}")
    return value


def _int_field(where: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise QsplitInputError(f"{where}: expected an integer >= {lo}, got {shown(value)}")
    return value


def _text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise QsplitInputError(f"{where}: expected a non-empty string, got {shown(value)}")
    return value


def _resolve_traces(override: dict) -> tuple[dict, str]:
    """Resolve relative trace folders against the repository root; say which one is missing."""
    chans = override.get("channels")
    if not isinstance(chans, list):
        return override, ""
    out = []
    for e in chans:
        if isinstance(e, dict) and "trace_folder" in e:
            folder = user_path(e["trace_folder"], ROOT)
            if not is_dir(folder):
                return override, f"trace folder {shown(e['trace_folder'])} not found"
            e = {**e, "trace_folder": str(folder.resolve())}
        out.append(e)
    return {**override, "channels": out}, ""


def _case_from_dict(where: str, d: object) -> Case:
    c = check_keys(where, d, _CASE_REQUIRED, _CASE_OPTIONAL)
    name = c["name"]
    if not isinstance(name, str) or not name or "," in name:
        raise QsplitInputError(f"{where}.name: expected a non-empty string without commas")
    n = check_n_requests(f"{where}.n_requests", c["n_requests"])
    seed = _int_field(f"{where}.seed", c["seed"], 0)
    override = c.get("override", {})
    if not isinstance(override, dict):
        raise QsplitInputError(f"{where}.override: expected a mapping of scenario keys")
    override, missing = _resolve_traces(override)
    desc = str(c.get("description", ""))
    if missing:
        return Case(name, desc, n, seed, None, skip_reason=missing)
    base = load_scenario(_text(f"{where}.scenario", c["scenario"])).to_dict()
    scen = scenario_from_dict({**base, **override}, where=f"{where}.override")
    return Case(name, desc, n, seed, scen)


def load_suite(spec: str | Path) -> Suite:
    """A suite by name (``configs/eval/<name>.yaml``) or path; unknown keys are refused."""
    key = str(spec)
    path = Path(key)
    if not key.endswith((".yaml", ".yml")):
        path = next((d / f"{key}.yaml" for d in config_dirs("eval") if is_file(d / f"{key}.yaml")),
                    Path(key))
    if not is_file(path):
        raise QsplitInputError(
            f"suite: unknown suite {shown(key)}; known: {suite_names()} or a path to a .yaml file")
    where = f"suite {path.name}"
    data = parse_yaml(read_text(path, "suite"), where)
    d = check_keys(where, data, _SUITE_REQUIRED, _SUITE_OPTIONAL)
    if d.get("format", SUITE_FORMAT) != SUITE_FORMAT:
        raise QsplitInputError(f"{where}.format: expected {SUITE_FORMAT!r}, got {shown(d['format'])}")
    bits = check_bit_set(f"{where}.bits", d.get("bits", list(DEFAULT_BITS)))
    deciders = d.get("deciders", ["optimal", *BASELINES])
    if not isinstance(deciders, list) or not deciders or not all(isinstance(x, str) for x in deciders):
        raise QsplitInputError(f"{where}.deciders: expected a non-empty list of decider specs")
    cases_raw = d["cases"]
    if not isinstance(cases_raw, list) or not cases_raw:
        raise QsplitInputError(f"{where}.cases: expected a non-empty list of cases")
    cases = tuple(_case_from_dict(f"{where}.cases[{i}]", c) for i, c in enumerate(cases_raw))
    names = [c.name for c in cases]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QsplitInputError(f"{where}.cases: case names must be distinct, repeated: {dup}")
    model = _text(f"{where}.model", d["model"])
    profile = with_widths(load_profile(model), d.get("widths"), f"{where}.widths")
    return Suite(name=_text(f"{where}.name", d["name"]), description=str(d.get("description", "")),
                 model=model, profile=profile, bits=bits,
                 deciders=tuple(deciders), cases=cases, path=str(path))
