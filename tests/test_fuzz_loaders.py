"""Fuzz every loader with arbitrary bytes, values and mutations of a valid document.

Whatever comes in, a loader either returns or raises QsplitInputError (BundleError for a
bundle): one line that starts with the field or the file it is about. Nothing else escapes.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.hyperparams import prepare_hyperparams
from agents.train_lib import load_config
from leaderboard.claims import CLAIMS_PATH, load_claims
from leaderboard.replay import replay_csv
from leaderboard.suites import load_suite
from runtime.bundle import CONTRACT_FILE, SUMS_FILE, load_bundle, sha256_file
from runtime.dispatcher import default_bundle_path
from system.errors import QsplitInputError
from system.profiles import load_profile_file, profile_from_dict, toy3
from system.request import load_request_file, request_from_json_dict
from system.scenario import load_scenario, load_scenario_file, scenario_from_dict
from tests.test_hardening_inputs import records_csv

ROOT = Path(__file__).resolve().parents[1]
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENV_ID = "QuantSplit-v0"

# ------------------------------------------------------------------ what a hostile file holds

_ODD = st.sampled_from([0, -1, 1, 2**63, 10**400, -(10**400), 1e308, -0.0, 5e-324, "", "1", "nan",
                        "inf", "1e400", "../x", "~nobody/x", "a\x00b", "default", "toy3",
                        "dist", "uniform", "choice", "fixed", "trace_folder", "\n", "lin_0.5"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | _ODD)
VALUES = st.recursive(SCALARS, lambda c: st.lists(c, max_size=4)
                      | st.dictionaries(st.text(max_size=8) | _ODD.map(str), c, max_size=4),
                      max_leaves=12)


def _paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


@st.composite
def mutated(draw: st.DrawFn, doc: Any) -> Any:
    """``doc`` with one to three values replaced, deleted or added anywhere in it."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(list(_paths(doc))))
        if not path:
            return draw(VALUES)
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8) | _ODD.map(str))] = draw(VALUES)
        else:
            parent[path[-1]] = draw(VALUES)
    return doc


@st.composite
def spliced(draw: st.DrawFn, text: str) -> bytes:
    """The bytes of ``text`` with a random stretch replaced by random bytes."""
    data = text.encode()
    i = draw(st.integers(0, len(data)))
    j = draw(st.integers(i, min(len(data), i + 40)))
    return data[:i] + draw(st.binary(max_size=12) | st.text(max_size=8).map(str.encode)) + data[j:]


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _yaml(value: Any) -> bytes:
    return yaml.safe_dump(value, allow_unicode=True).encode()


def contents(doc: Any, dump: Callable[[Any], bytes]) -> st.SearchStrategy[bytes]:
    """File contents: arbitrary bytes, an arbitrary value, the document mutated or spliced."""
    return (st.binary(max_size=200) | VALUES.map(dump) | mutated(doc).map(dump)
            | spliced(dump(doc).decode()))


def refused_in_one_line(call: Callable[[], object]) -> None:
    """Run a loader: it returns, or refuses with one line naming a field or the file."""
    try:
        call()
    except QsplitInputError as exc:
        msg = str(exc)
        assert "\n" not in msg and "\r" not in msg, msg
        assert re.match(r"^[^\s:][^\n]*?: \S", msg), msg
        assert len(msg) < 3000, msg


@pytest.fixture(scope="module")
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ requests

GOOD_REQUEST = {"device": "jetson_nano", "server": "t4", "up_mbps": 5.0, "down_mbps": 20.0,
                "rtt_ms": 40.0, "eps_pp": 1.0, "dev_kappa": {"32": 1, "8": 2.5},
                "dev_speed_factor": 0.9, "beta_s_per_j": 0.1, "reuse": 10}


@FUZZ
@given(data=contents(GOOD_REQUEST, _json))
def test_request_files(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: load_request_file(_write(tmp / "r.json", data)))


@FUZZ
@given(value=VALUES | mutated(GOOD_REQUEST))
def test_requests_from_a_dict(value: Any) -> None:
    refused_in_one_line(lambda: request_from_json_dict(value))


# ------------------------------------------------------------------ profiles and scenarios

@FUZZ
@given(data=contents(toy3().to_dict(), _json))
def test_profile_files(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: load_profile_file(_write(tmp / "p.json", data)))


@FUZZ
@given(value=mutated(toy3().to_dict()))
def test_profiles_from_a_dict(value: Any) -> None:
    refused_in_one_line(lambda: profile_from_dict(value))


SCENARIO = load_scenario("default").to_dict()


@FUZZ
@given(data=contents(SCENARIO, _yaml))
def test_scenario_files(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: load_scenario_file(_write(tmp / "s.yaml", data)))


@FUZZ
@given(value=mutated(SCENARIO))
def test_scenarios_from_a_dict(value: Any) -> None:
    refused_in_one_line(lambda: scenario_from_dict(value))


# ------------------------------------------------------------------ eval suites and claims

SUITE = {"format": "qsplit-eval-suite/1", "name": "t", "model": "toy3", "bits": [4, 8, 32],
         "deciders": ["optimal", "server_only"],
         "cases": [{"name": "a", "scenario": "default", "n_requests": 5, "seed": 1,
                    "override": {"eps_pp": 0.5, "channels": [{"name": "3g"}]}}]}


@FUZZ
@given(data=contents(SUITE, _yaml))
def test_eval_suites(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: load_suite(_write(tmp / "suite.yaml", data)))


@FUZZ
@given(data=contents(yaml.safe_load(CLAIMS_PATH.read_text()), _yaml))
def test_claims(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: load_claims(_write(tmp / "claims.yaml", data)))


# ------------------------------------------------------------------ bundle contracts

CONTRACT = json.loads((default_bundle_path("digits_cnn") / CONTRACT_FILE).read_text())


@pytest.fixture(scope="module")
def bundle(tmp: Path) -> Path:
    """A copy of the committed digits bundle whose contract the fuzz replaces."""
    out = tmp / "bundle"
    out.mkdir()
    for f in default_bundle_path("digits_cnn").iterdir():
        (out / f.name).write_bytes(f.read_bytes())
    return out


@FUZZ
@given(data=contents(CONTRACT, _json))
def test_bundle_contracts(bundle: Path, data: bytes) -> None:
    (bundle / CONTRACT_FILE).write_bytes(data)
    names = sorted(n.name for n in bundle.iterdir() if n.name != SUMS_FILE)
    (bundle / SUMS_FILE).write_text("".join(f"{sha256_file(bundle / n)}  {n}\n" for n in names))
    refused_in_one_line(lambda: load_bundle(bundle))


# ------------------------------------------------------------------ replay CSVs

def _records_text() -> str:
    with tempfile.TemporaryDirectory() as d:
        return records_csv(Path(d), 2).read_text()


RECORDS = _records_text()


@st.composite
def records(draw: st.DrawFn) -> bytes:
    """records.csv with cells replaced by arbitrary text, or spliced, or arbitrary bytes."""
    kind = draw(st.sampled_from(["cells", "cells", "splice", "bytes"]))
    if kind == "bytes":
        return draw(st.binary(max_size=300))
    if kind == "splice":
        return draw(spliced(RECORDS))
    rows = [r.split(",") for r in RECORDS.splitlines()]
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(rows) - 1))
        j = draw(st.integers(0, len(rows[i]) - 1))
        rows[i][j] = draw(st.text(max_size=10) | _ODD.map(str))
    return "\n".join(",".join(r) for r in rows).encode()


@FUZZ
@given(data=records())
def test_replay_csvs(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: replay_csv(_write(tmp / "records.csv", data), toy3()))


# ------------------------------------------------------------------ train configs

TRAIN_CONFIG = yaml.safe_load((ROOT / "configs" / "ppo.yml").read_text())


def _train_config(path: Path) -> None:
    hyper, _ = load_config(path, ENV_ID)
    prepare_hyperparams(hyper)


@FUZZ
@given(data=contents(TRAIN_CONFIG, _yaml))
def test_train_configs(tmp: Path, data: bytes) -> None:
    refused_in_one_line(lambda: _train_config(_write(tmp / "ppo.yml", data)))
