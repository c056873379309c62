"""The planning service in process (FastAPI's TestClient): every endpoint, every kind of bad
field, batches that mix good and bad items, refused bundles, metrics, the client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("prometheus_client")
pytest.importorskip("httpx")

import numpy as np
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from runtime import BundleError, Dispatcher, default_bundle_path
from runtime.bundle import SUMS_FILE, sha256_file
from service.app import EXAMPLE, ServiceConfig, create_app
from service.client import PlanItemError, PlanningClient, ServiceError
from service.schema import PlanRequest, field_range
from system.errors import QsplitInputError
from system.fields import REQUEST_FIELDS
from system.request import REQUEST_JSON_FIELDS, request_from_json_dict
from system.scenario import load_scenario, sample_requests

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def app():
    return create_app(ServiceConfig(models=("resnet18", "digits_cnn"), max_batch=64,
                                    max_body_bytes=200_000))


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app)


@pytest.fixture(scope="module")
def goods() -> list[dict]:
    return [r.to_json_dict() for r in
            sample_requests(load_scenario("default"), np.random.default_rng(3), 40)]


def _metrics(client: TestClient) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


# ------------------------------------------------------------------------------ endpoints

def test_plan_is_the_dispatchers_report(client, goods) -> None:
    d = Dispatcher.load()
    for g in goods[:10]:
        r = client.post("/v1/plan", json=g)
        assert r.status_code == 200
        assert r.json() == json.loads(json.dumps(d.report(request_from_json_dict(g))))
        assert r.json()["feasible"] and r.json()["drop_pp"] <= g["eps_pp"] + 1e-9


def test_plan_picks_the_model(client) -> None:
    r = client.post("/v1/plan", params={"model": "digits_cnn"}, json=EXAMPLE)
    assert r.status_code == 200 and r.json()["model"] == "digits_cnn"
    r = client.post("/v1/plan", params={"model": "nope"}, json=EXAMPLE)
    assert r.status_code == 422
    d = r.json()["detail"][0]
    assert d["field"] == "model" and d["loc"] == ["query", "model"] and "digits_cnn" in d["msg"]


def test_models_lists_contract_hash_and_support(client) -> None:
    models = client.get("/v1/models").json()["models"]
    assert [m["name"] for m in models] == ["resnet18", "digits_cnn"]
    assert [m["default"] for m in models] == [True, False]
    for m in models:
        path = default_bundle_path(m["name"])
        assert m["sha256sums_sha256"] == sha256_file(path / SUMS_FILE)
        assert m["contract"] == json.loads((path / "contract.json").read_text())
        sup = m["support"]
        assert len(sup["features"]) == len(sup["min"]) == len(sup["max"]) > 0
        assert all(lo <= hi for lo, hi in zip(sup["min"], sup["max"], strict=True))


def test_health(client) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok" and r.json()["models"] == ["resnet18", "digits_cnn"]


def test_openapi_shows_the_derived_models(client) -> None:
    assert client.get("/docs").status_code == 200
    doc = client.get("/openapi.json").json()
    props = doc["components"]["schemas"]["PlanRequest"]["properties"]
    assert set(props) == set(REQUEST_JSON_FIELDS)
    up = props["up_mbps"]
    assert up["exclusiveMinimum"] == 0.0 and up["unit"] == "Mbit/s"
    assert props["eps_pp"]["maximum"] == 100.0
    body = doc["paths"]["/v1/plan"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"]["$ref"].endswith("/PlanRequest")
    assert "PlansRequest" in doc["components"]["schemas"]
    for path in ("/v1/plan", "/v1/plans"):
        params = doc["paths"][path]["post"]["parameters"]
        assert [(p["name"], p["in"], p["required"]) for p in params] == [("model", "query", False)]


def test_the_pydantic_model_is_read_off_the_table() -> None:
    fields = PlanRequest.model_fields
    for f in REQUEST_FIELDS:
        m = fields[f.json_key]
        assert m.description == f.help()
        assert m.is_required() == (f.default is None and not f.catalog)
        if f.default is not None:
            assert m.default == f.default


# ------------------------------------------------------------------------------ bad input

def _bad_cases() -> list[tuple[str, object]]:
    """(label, body) for each kind of bad field; the scalar ranges come from the table."""
    cases: list[tuple[str, object]] = []
    for f in REQUEST_FIELDS:
        if f.per_width:
            continue
        lo = f.to_json(f.lo)
        cases.append((f"{f.json_key}_below", {**EXAMPLE, f.json_key: lo - 1.0 if not f.lo_open
                                              else lo}))
        if f.hi != float("inf"):
            cases.append((f"{f.json_key}_above", {**EXAMPLE, f.json_key: f.to_json(f.hi) + 1.0}))
        cases.append((f"{f.json_key}_string", {**EXAMPLE, f.json_key: "5"}))
        cases.append((f"{f.json_key}_bool", {**EXAMPLE, f.json_key: True}))
    cases += [
        ("missing", {k: v for k, v in EXAMPLE.items() if k != "up_mbps"}),
        ("unknown_key", {**EXAMPLE, "bandwidth": 3}),
        ("unknown_device", {**EXAMPLE, "device": "pixel99"}),
        ("device_not_text", {**EXAMPLE, "device": 7}),
        ("kappa_width", {**EXAMPLE, "dev_kappa": {"5": 2.0, "32": 1.0}}),
        ("kappa_negative", {**EXAMPLE, "dev_kappa": {"8": -1.0, "32": 1.0}}),
        ("kappa_32_not_1", {**EXAMPLE, "dev_kappa": {"8": 3.0, "32": 2.0}}),
        ("speed_factor_zero", {**EXAMPLE, "dev_speed_factor": 0}),
        ("huge_int", {**EXAMPLE, "up_mbps": 10 ** 400}),
        ("not_finite_in_si", {**EXAMPLE, "dev_gflops": 1e300}),
        ("not_object", [EXAMPLE]),
    ]
    return cases


@pytest.mark.parametrize(("label", "body"), _bad_cases(), ids=[c[0] for c in _bad_cases()])
def test_bad_field_gets_422_naming_it(client, label: str, body: object) -> None:
    with pytest.raises(QsplitInputError) as own:
        request_from_json_dict(body)
    r = client.post("/v1/plan", content=json.dumps(body))
    assert r.status_code == 422, label
    d = r.json()["detail"][0]
    assert d["msg"] == str(own.value)          # the project's own one line, unchanged
    assert (d["unit"], d["range"]) == field_range(d["field"])
    key = label.rsplit("_", 1)[0]
    if key in REQUEST_JSON_FIELDS:
        assert d["field"] == key and key in d["msg"]
        if d["unit"]:
            assert d["unit"] in d["msg"] or "expected" in d["msg"]
    pyd_ok = True
    try:
        PlanRequest.model_validate(body)
    except Exception:
        pyd_ok = False
    assert not pyd_ok or label in ("unknown_device", "kappa_32_not_1", "not_finite_in_si")


@pytest.mark.parametrize(("label", "content"), [
    ("json_syntax", b'{"up_mbps": '), ("nan", json.dumps({**EXAMPLE, "rtt_ms": float("nan")})),
    ("duplicate_key", b'{"eps_pp": 1, "eps_pp": 2}'), ("empty", b""), ("not_utf8", b"\xff\xfe{")])
def test_unreadable_body_gets_422(client, label: str, content: bytes | str) -> None:
    r = client.post("/v1/plan", content=content)
    assert r.status_code == 422, label
    assert r.json()["detail"][0]["msg"].startswith("request")


def test_body_over_the_limit_gets_413(client) -> None:
    r = client.post("/v1/plan", content=b"{" + b" " * 300_000 + b"}")
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "body"
    def chunks():
        yield b"{"
        yield b" " * 300_000
        yield b"}"
    r = client.post("/v1/plan", content=chunks())
    assert r.status_code == 413
    assert client.post("/v1/plan", json=EXAMPLE).status_code == 200


def test_batch_over_the_item_limit_gets_413(client) -> None:
    r = client.post("/v1/plans", json={"requests": [EXAMPLE] * 65})
    assert r.status_code == 413 and r.json()["detail"][0]["field"] == "requests"


# ------------------------------------------------------------------------------ batches

def test_batch_mixes_good_and_bad_items(client, goods) -> None:
    items: list[object] = list(goods[:12])
    bad = {2: {**goods[2], "up_mbps": -1.0}, 5: {**goods[5], "eps_pp": "x"}, 7: [1, 2],
           11: {**goods[11], "device": "nope"}}
    for i, b in bad.items():
        items[i] = b
    r = client.post("/v1/plans", json={"requests": items})
    assert r.status_code == 200
    out = r.json()["items"]
    assert len(out) == 12
    d = Dispatcher.load()
    want = d.decide_batch([request_from_json_dict(g) for g in goods[:12]])
    for i, item in enumerate(out):
        if i in bad:
            assert set(item) == {"error"} and item["error"]["msg"].startswith(f"request[{i}]")
        else:
            assert item["plan"]["cut"] == want[i].cut
            assert tuple(item["plan"]["weight_bits"]) == want[i].weight_bits
            assert item["plan"]["act_bits"] == want[i].act_bits
            assert item["plan"]["drop_pp"] <= goods[i]["eps_pp"] + 1e-9
    assert out[2]["error"]["field"] == "up_mbps" and out[2]["error"]["unit"] == "Mbit/s"
    assert out[5]["error"]["field"] == "eps_pp" and out[11]["error"]["field"] == "device"


def test_batch_figures_match_single_plans(client, goods) -> None:
    out = client.post("/v1/plans", json={"requests": goods[:5], "figures": True}).json()["items"]
    for g, item in zip(goods[:5], out, strict=True):
        one = client.post("/v1/plan", json=g).json()
        assert {k: one[k] for k in ("cut", "weight_bits", "act_bits", "cost", "latency_s")} == \
            {k: item["plan"][k] for k in ("cut", "weight_bits", "act_bits", "cost", "latency_s")}


@pytest.mark.parametrize("body", [[EXAMPLE], {"requests": EXAMPLE}, {"requests": [], "x": 1},
                                  {"requests": [], "figures": "yes"}])
def test_bad_batch_body_gets_422(client, body: object) -> None:
    assert client.post("/v1/plans", json=body).status_code == 422


# ------------------------------------------------------------------------------ metrics

def test_metrics_count_requests_paths_and_errors(client, goods) -> None:
    before = _metrics(client)
    for g in goods[:6]:
        assert client.post("/v1/plan", json=g).status_code == 200
    client.post("/v1/plan", json={**EXAMPLE, "rtt_ms": -1})
    client.post("/v1/plans", json={"requests": [*goods[:4], {**EXAMPLE, "srv_load": 2}]})
    after = _metrics(client)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("qsplit_http_requests_total", endpoint="/v1/plan", status="200") == 6
    assert delta("qsplit_http_requests_total", endpoint="/v1/plan", status="422") == 1
    assert delta("qsplit_http_requests_total", endpoint="/v1/plans", status="200") == 1
    assert delta("qsplit_http_request_seconds_count", endpoint="/v1/plan") == 7
    assert sum(delta("qsplit_plans_total", model="resnet18", path=p)
               for p in ("policy", "repaired", "fallback", "refined", "trivial")) == 10
    assert delta("qsplit_input_errors_total", field="rtt_ms") == 1
    assert delta("qsplit_input_errors_total", field="srv_load") == 1


# ------------------------------------------------------------------------------ bundles

def test_tampered_bundle_is_refused_at_start(tmp_path: Path) -> None:
    b = tmp_path / "b"
    shutil.copytree(default_bundle_path("resnet18"), b)
    raw = bytearray((b / "weights.npz").read_bytes())
    raw[-100] ^= 1
    (b / "weights.npz").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum mismatch"):
        create_app(ServiceConfig(bundles=(str(b),)))
    out = subprocess.run([sys.executable, "-m", "service", "--bundle", str(b), "--port", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: bundle ")
    assert "checksum mismatch for weights.npz" in out.stderr


def test_unsigned_bundle_is_refused_with_a_key(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    from runtime.signing import keygen, sign_bundle

    keygen(tmp_path / "k", tmp_path / "k.pub")
    b = tmp_path / "b"
    shutil.copytree(default_bundle_path("digits_cnn"), b)
    with pytest.raises(BundleError):
        create_app(ServiceConfig(bundles=(str(b),), public_key=str(tmp_path / "k.pub")))
    sign_bundle(b, tmp_path / "k", SUMS_FILE)
    app = create_app(ServiceConfig(bundles=(str(b),), public_key=str(tmp_path / "k.pub")))
    m = TestClient(app).get("/v1/models").json()["models"][0]
    assert m["signed"] and m["name"] == "digits_cnn"


@pytest.mark.parametrize("flag", ["--workers", "--blas-threads"])
def test_bad_command_line_is_one_line(flag: str) -> None:
    out = subprocess.run([sys.executable, "-m", "service", flag, "0"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith(f"error: {flag}")
    assert len(out.stderr.strip().splitlines()) == 1


def test_worker_blas_runs_the_configured_threads(app) -> None:
    from threadpoolctl import threadpool_info

    blas = [p for p in threadpool_info() if p["user_api"] == "blas"]
    assert blas and all(p["num_threads"] == 1 for p in blas)


# ------------------------------------------------------------------------------ client

def test_client_calls_every_endpoint(app, goods) -> None:
    c = PlanningClient(client=TestClient(app))
    assert c.health()["status"] == "ok"
    assert [m["name"] for m in c.models()] == ["resnet18", "digits_cnn"]
    p = c.plan(goods[0])
    assert p["feasible"] and p["model"] == "resnet18"
    assert c.plan(request_from_json_dict(goods[0]))["cut"] == p["cut"]
    assert c.plan(goods[0], model="digits_cnn")["model"] == "digits_cnn"
    out = c.plans([goods[0], {**goods[1], "up_mbps": 0}])
    assert out[0]["cut"] == p["cut"]
    assert isinstance(out[1], PlanItemError) and out[1].field == "up_mbps" and out[1].index == 1
    with pytest.raises(ServiceError) as e:
        c.plan({**goods[0], "eps_pp": 101})
    assert e.value.status == 422 and e.value.field == "eps_pp" and e.value.range == "[0, 100]"
