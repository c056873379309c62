"""Tests of system/scenario.py: strict loading, clear errors, reproducible sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from system.errors import QsplitInputError
from system.scenario import (
    Scenario,
    config_dirs,
    load_scenario,
    load_scenario_file,
    sample_requests,
    scenario_dirs,
    scenario_from_dict,
    scenario_names,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_YAML = ROOT / "system/data/scenarios/default.yaml"


def _default() -> dict:
    return yaml.safe_load(DEFAULT_YAML.read_text())


def test_the_default_scenario_is_package_data_only() -> None:
    assert not (ROOT / "configs/scenarios/default.yaml").exists()
    assert load_scenario("default").to_dict() == load_scenario_file(DEFAULT_YAML).to_dict()
    assert scenario_dirs()[-1] == DEFAULT_YAML.parent


def test_config_dirs_put_the_user_folder_first(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv("QSPLIT_CONFIG_DIR", raising=False)
    assert config_dirs("eval") == [ROOT / "configs" / "eval"]
    monkeypatch.setenv("QSPLIT_CONFIG_DIR", str(tmp_path))
    assert config_dirs("eval") == [tmp_path / "eval", ROOT / "configs" / "eval"]
    (tmp_path / "scenarios").mkdir()
    d = _default()
    d["eps_pp"] = 0.5
    (tmp_path / "scenarios" / "default.yaml").write_text(yaml.safe_dump(d))
    assert load_scenario("default").eps_pp.support == (0.5, 0.5)


def test_every_shipped_scenario_loads() -> None:
    names = scenario_names()
    assert "default" in names
    for name in names:
        s = load_scenario(name)
        assert isinstance(s, Scenario)
        assert len(sample_requests(s, np.random.default_rng(0), 5)) == 5


def test_load_by_path_dict_and_default() -> None:
    by_name = load_scenario()
    by_path = load_scenario(DEFAULT_YAML)
    by_dict = load_scenario(_default())
    for s in (by_path, by_dict):
        assert s.to_dict() == by_name.to_dict()
    assert load_scenario(by_name.to_dict()).to_dict() == by_name.to_dict()


def test_default_loads_without_configs_folder(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    import system.scenario as sc

    monkeypatch.setattr(sc, "config_dirs", lambda kind: [tmp_path / "nothing"])
    assert load_scenario("default").name == "default"
    assert scenario_names() == ["default"]


def test_sampling_is_reproducible_and_in_range() -> None:
    s = load_scenario("default")
    a = sample_requests(s, np.random.default_rng(7), 500)
    b = sample_requests(s, np.random.default_rng(7), 500)
    assert a == b
    assert a != sample_requests(s, np.random.default_rng(8), 500)
    eps = np.array([r.eps_pp for r in a])
    assert eps.min() >= 0.1 and eps.max() <= 5.0
    assert {r.reuse for r in a} <= {1.0, 10.0, 100.0}
    assert {r.device for r in a} == set(s.device_names)
    load = np.array([r.srv_load for r in a])
    assert load.min() >= 0.2 and load.max() <= 1.0
    beta = np.array([r.beta_s_per_j for r in a])
    assert beta.min() >= 0.0 and beta.max() <= 0.5


def test_device_jitter_scales_catalog_flops() -> None:
    from system.hardware import get_device

    s = load_scenario("default")
    for r in sample_requests(s, np.random.default_rng(1), 300):
        nominal = get_device(r.device).flops_per_s
        assert 0.3 * 0.6 * nominal * (1 - 1e-12) <= r.dev_flops_per_s <= nominal * (1 + 1e-12)


def test_trace_channel_entry(tmp_path: Path) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    (folder / "t1").write_text("".join(f"{i}\t{1.0 + i % 3}\n" for i in range(20)))
    d = _default()
    d["channels"] = [{"trace_folder": "traces", "link": "3g", "weight": 1.0}]
    f = tmp_path / "s.yaml"
    f.write_text(yaml.safe_dump(d))
    s = load_scenario(f)
    reqs = sample_requests(s, np.random.default_rng(0), 50)
    assert {r.down_bps for r in reqs} <= {1e6, 2e6, 3e6}


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda d: d.update(colour="red"), "unknown key"),
    (lambda d: d.pop("eps_pp"), "missing required key"),
    (lambda d: d.update(server="dgx"), "server"),
    (lambda d: d.update(devices={"rpi5": 1.0}), "unknown device 'rpi5'"),
    (lambda d: d.update(devices={}), "devices"),
    (lambda d: d.update(devices={"rpi4": 0.0}), "weights must not all be zero"),
    (lambda d: d.update(channels=[]), "channels"),
    (lambda d: d.update(channels=[{"name": "6g"}]), "channels[0].name: unknown link '6g'"),
    (lambda d: d.update(channels=[{"trace_folder": "/", "link": "6g"}]),
     "channels[0].link: unknown link '6g'"),
    (lambda d: d.update(channels=[{"trace_folder": "/", "profile": "3g"}]), "unknown key"),
    (lambda d: d.update(channels=[{"trace_folder": "/no/such/dir"}]), "trace_folder"),
    (lambda d: d.update(eps_pp={"dist": "log_uniform", "min": 5.0, "max": 0.1}), "inverted"),
    (lambda d: d.update(eps_pp={"dist": "uniform", "min": 1.0, "max": 1.0}), "empty range"),
    (lambda d: d.update(eps_pp={"dist": "log_uniform", "min": 0.0, "max": 1.0}), "eps_pp.min"),
    (lambda d: d.update(eps_pp={"dist": "uniform", "min": 1.0, "max": 200.0}), "eps_pp.max"),
    (lambda d: d.update(eps_pp={"dist": "normal", "mean": 1.0}), "eps_pp.dist"),
    (lambda d: d.update(eps_pp={"dist": "uniform", "min": 1.0, "max": 2.0, "mu": 1}), "unknown key"),
    (lambda d: d.update(reuse={"dist": "choice", "values": []}), "reuse.values"),
    (lambda d: d.update(reuse={"dist": "fixed", "value": 0.5}), "reuse.value"),
    (lambda d: d.update(server_load={"dist": "uniform", "min": 0.5, "max": 1.5}), "server_load.max"),
    (lambda d: d.update(device_load={"dist": "uniform", "min": 0.0, "max": 1.0}), "device_load.min"),
    (lambda d: d.update(beta_s_per_j="lots"), "beta_s_per_j"),
    (lambda d: d.update(format="qsplit-scenario/9"), "format"),
])
def test_bad_scenarios_are_refused_naming_the_field(edit, needle: str) -> None:
    d = _default()
    edit(d)
    with pytest.raises(QsplitInputError, match=None) as exc:
        scenario_from_dict(d)
    assert needle in str(exc.value)


def test_unknown_scenario_name_lists_known_ones() -> None:
    with pytest.raises(QsplitInputError, match=r"unknown scenario 'nope'.*default"):
        load_scenario("nope")


def test_malformed_yaml_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text("name: [unclosed\n")
    with pytest.raises(QsplitInputError, match="malformed YAML"):
        load_scenario(f)


def test_sample_requests_refuses_bad_n() -> None:
    with pytest.raises(QsplitInputError, match="n:"):
        sample_requests(load_scenario(), np.random.default_rng(0), 0)
