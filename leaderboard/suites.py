"""Evaluation suites: a model profile, the deciders, and cases of seeded requests.

A suite (``configs/eval/<name>.yaml``, loaded strictly: unknown keys are errors) fixes a model
profile, the deciders and cases: a scenario (optionally with some of its keys overridden), a
request count and a seed. A case whose trace folder is missing is skipped with a reason, not
refused, so a suite that replays traces not shipped with the project still loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from system.bits import DEFAULT_BITS, check_bit_set
from system.errors import QsplitInputError, check_keys
from system.profiles import ModelProfile, load_profile
from system.scenario import Scenario, config_dirs, load_scenario, scenario_from_dict

ROOT = Path(__file__).resolve().parents[1]
SUITE_FORMAT = "qsplit-eval-suite/1"
_SUITE_REQUIRED = ("name", "model", "cases")
_SUITE_OPTIONAL = ("format", "description", "bits", "deciders")
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


def suite_names() -> list[str]:
    """Suite names :func:`load_suite` accepts without a path."""
    return sorted({p.stem for d in config_dirs("eval") if d.is_dir() for p in d.glob("*.yaml")})


def _int_field(where: str, value: object, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise QsplitInputError(f"{where}: expected an integer >= {lo}, got {value!r}")
    return value


def _resolve_traces(override: dict) -> tuple[dict, str]:
    """Resolve relative trace folders against the repository root; say which one is missing."""
    chans = override.get("channels")
    if not isinstance(chans, list):
        return override, ""
    out = []
    for e in chans:
        if isinstance(e, dict) and "trace_folder" in e:
            folder = Path(str(e["trace_folder"])).expanduser()
            folder = folder if folder.is_absolute() else (ROOT / folder).resolve()
            if not folder.is_dir():
                return override, f"trace folder {e['trace_folder']} not found ({folder})"
            e = {**e, "trace_folder": str(folder)}
        out.append(e)
    return {**override, "channels": out}, ""


def _case_from_dict(where: str, d: object) -> Case:
    c = check_keys(where, d, _CASE_REQUIRED, _CASE_OPTIONAL)
    name = c["name"]
    if not isinstance(name, str) or not name or "," in name:
        raise QsplitInputError(f"{where}.name: expected a non-empty string without commas")
    n = _int_field(f"{where}.n_requests", c["n_requests"], 1)
    seed = _int_field(f"{where}.seed", c["seed"], 0)
    override = c.get("override", {})
    if not isinstance(override, dict):
        raise QsplitInputError(f"{where}.override: expected a mapping of scenario keys")
    override, missing = _resolve_traces(override)
    desc = str(c.get("description", ""))
    if missing:
        return Case(name, desc, n, seed, None, skip_reason=missing)
    base = load_scenario(str(c["scenario"])).to_dict()
    scen = scenario_from_dict({**base, **override}, where=f"{where}.override")
    return Case(name, desc, n, seed, scen)


def load_suite(spec: str | Path) -> Suite:
    """A suite by name (``configs/eval/<name>.yaml``) or path; unknown keys are refused."""
    import yaml

    key = str(spec)
    path = Path(key)
    if not key.endswith((".yaml", ".yml")):
        path = next((d / f"{key}.yaml" for d in config_dirs("eval") if (d / f"{key}.yaml").is_file()),
                    Path(key))
    if not path.is_file():
        raise QsplitInputError(
            f"suite: unknown suite {key!r}; known: {suite_names()} or a path to a .yaml file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise QsplitInputError(f"suite {path}: malformed YAML: {exc}".replace("\n", " ")) from None
    where = f"suite {path.name}"
    d = check_keys(where, data, _SUITE_REQUIRED, _SUITE_OPTIONAL)
    if d.get("format", SUITE_FORMAT) != SUITE_FORMAT:
        raise QsplitInputError(f"{where}.format: expected {SUITE_FORMAT!r}, got {d['format']!r}")
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
    return Suite(name=str(d["name"]), description=str(d.get("description", "")),
                 model=str(d["model"]), profile=load_profile(str(d["model"])), bits=bits,
                 deciders=tuple(deciders), cases=cases, path=str(path))
