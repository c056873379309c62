"""Training, export and evaluation facing hostile input: no code run from a run folder, and
train.py refusing a bad start in one line before it builds or writes anything."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")

from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: E402
from test_train import TINY, _env  # noqa: E402  (the same tiny run)

from agents.hyperparams import HYPERPARAMS, QSPLIT  # noqa: E402
from agents.train_lib import QsplitOptions, train_parser  # noqa: E402
from system.errors import QsplitInputError  # noqa: E402
from system.profiles import load_profile  # noqa: E402
from system.scenario import load_scenario, sample_requests  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# ------------------------------------------------------------------ a run folder with a payload

class _Payload:
    """Unpickling this creates ``marker`` (as a shell command would do its harm)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (self.marker, "w"))


def _poison(src: Path, dest: Path, marker: Path, member: str) -> Path:
    """A copy of model.zip whose ``data`` cloudpickle entries, or whose ``policy.pth``, run the
    payload when unpickled."""
    payload = pickle.dumps(_Payload(marker))
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if member == "data" and info.filename == "data":
                data = json.loads(body)
                for value in data.values():
                    if isinstance(value, dict) and ":serialized:" in value:
                        value[":serialized:"] = base64.b64encode(payload).decode()
                body = json.dumps(data).encode()
            elif member == "policy.pth" and info.filename == "policy.pth":
                buf = io.BytesIO()
                torch.save({"mlp_extractor.policy_net.0.weight": _Payload(marker)}, buf)
                body = buf.getvalue()
            zout.writestr(info, body)
    return dest


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as train.py writes it (env_kwargs.json, model.zip) for resnet18."""
    from agents.export import write_env_kwargs
    from envs.quantsplit import QuantSplitEnv

    run = tmp_path_factory.mktemp("runs") / "clean"
    run.mkdir()
    env = QuantSplitEnv(model="resnet18", scenario="default")
    model = PPO("MlpPolicy", env, n_steps=64, batch_size=32, seed=0, device="cpu",
                policy_kwargs={"net_arch": [32], "activation_fn": torch.nn.ReLU})
    with torch.no_grad():
        for p in model.policy.action_net.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    write_env_kwargs(run, env)
    model.save(run / "model.zip")
    return run


def _poisoned_run(clean: Path, folder: Path, member: str) -> tuple[Path, Path]:
    run = folder / f"poisoned_{member.replace('.', '_')}"
    run.mkdir()
    (run / "env_kwargs.json").write_bytes((clean / "env_kwargs.json").read_bytes())
    marker = folder / f"marker_{member}"
    _poison(clean / "model.zip", run / "model.zip", marker, member)
    return run, marker


@pytest.fixture()
def no_sb3_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if stable-baselines3's loader (which unpickles) is called."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("stable-baselines3's load was called")

    monkeypatch.setattr(BaseAlgorithm, "load", classmethod(refuse))


def test_c02_the_crafted_model_zip_runs_code_under_sb3s_loader(clean_run: Path,
                                                                 tmp_path: Path) -> None:
    run, marker = _poisoned_run(clean_run, tmp_path, "data")
    with pytest.raises(Exception):          # noqa: B017 (whatever the payload breaks next)
        PPO.load(run / "model.zip", device="cpu")
    assert marker.exists()                  # the file is live: what export must not do


def test_c02_export_ignores_pickles_in_model_zip_data(clean_run: Path, tmp_path: Path,
                                                      no_sb3_load: None) -> None:
    from agents.export import main

    run, marker = _poisoned_run(clean_run, tmp_path, "data")
    assert main(["--run", str(run), "--out", str(tmp_path / "bundle")]) == 0
    assert main(["--run", str(clean_run), "--out", str(tmp_path / "clean_bundle")]) == 0
    assert not marker.exists()
    for name in ("weights.npz",):
        assert (tmp_path / "bundle" / name).read_bytes() == \
            (tmp_path / "clean_bundle" / name).read_bytes()


def test_c02_export_refuses_a_policy_pth_that_is_not_plain_tensors(
        clean_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        no_sb3_load: None) -> None:
    from agents.export import main

    run, marker = _poisoned_run(clean_run, tmp_path, "policy.pth")
    assert main(["--run", str(run), "--out", str(tmp_path / "bundle")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "policy.pth" in err[0], err
    assert not marker.exists() and not (tmp_path / "bundle").exists()


@pytest.mark.parametrize("member", ["data", "policy.pth"])
def test_c02_evaluation_runs_no_code_from_a_run_folder(clean_run: Path, tmp_path: Path,
                                                       member: str, no_sb3_load: None) -> None:
    from agents.policy import make_policy

    run, marker = _poisoned_run(clean_run, tmp_path, member)
    prof = load_profile("resnet18")
    reqs = sample_requests(load_scenario("default"), np.random.default_rng(5), 50)
    if member == "data":
        got = make_policy(f"ppo:{run}", prof).decide_batch(reqs)
        assert got == make_policy(f"ppo:{clean_run}", prof).decide_batch(reqs)
    else:
        with pytest.raises(QsplitInputError, match=r"policy\.pth") as exc:
            make_policy(f"ppo:{run}", prof)
        assert "\n" not in str(exc.value)
    assert not marker.exists()


def test_c02_evaluate_py_runs_no_code_from_a_run_folder(clean_run: Path, tmp_path: Path) -> None:
    run, marker = _poisoned_run(clean_run, tmp_path, "data")
    out = subprocess.run(
        [sys.executable, str(ROOT / "evaluate.py"), "--suite", "small", "--decider",
         f"ppo:{run}", "--requests", "2", "--no-plots", "--quiet", "--out",
         str(tmp_path / "eval")], capture_output=True, text=True, env=_env(), timeout=300,
        cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not marker.exists()


def test_c02_weights_that_do_not_fit_are_refused_in_one_line(clean_run: Path,
                                                             tmp_path: Path) -> None:
    from agents.export import load_run_model

    run = tmp_path / "other"
    run.mkdir()
    (run / "env_kwargs.json").write_bytes((clean_run / "env_kwargs.json").read_bytes())
    with zipfile.ZipFile(clean_run / "model.zip") as zin, \
            zipfile.ZipFile(run / "model.zip", "w") as zout:
        for info in zin.infolist():
            body = zin.read(info)
            if info.filename == "data":
                data = json.loads(body)
                data["policy_kwargs"]["net_arch"] = [64]
                body = json.dumps(data).encode()
            zout.writestr(info, body)
    with pytest.raises(QsplitInputError, match=r"net_arch \[64\]") as exc:
        load_run_model(run)
    assert "\n" not in str(exc.value)
    (run / "model.zip").write_bytes(b"not a zip")
    with pytest.raises(QsplitInputError, match=r"not an SB3 model\.zip"):
        load_run_model(run)


@pytest.mark.parametrize("model_name", ["resnet18", "digits_cnn"])
def test_c02_committed_policies_decide_as_sb3s_loader_does(model_name: str) -> None:
    """The committed runs are the project's own: loading them with SB3 here is the reference."""
    from agents.evaluation import predict_actions
    from agents.policy import make_policy
    from agents.publish import default_policy_dir
    from system.codec import ActionCodec, ObservationEncoder
    from system.cost import unit_tables
    from system.repair import execute_action

    folder = default_policy_dir(model_name)
    prof = load_profile(model_name)
    kw = json.loads((folder / "env_kwargs.json").read_text())
    reqs = sample_requests(load_scenario("default"), np.random.default_rng(17), 2000)
    got = make_policy("ppo", prof).decide_batch(reqs)
    model = PPO.load(folder / "model.zip", device="cpu")
    actions = predict_actions(model, ObservationEncoder.from_json(kw["encoder"]).encode_batch(reqs))
    codec = ActionCodec(prof.n_units, tuple(kw["bits"]))
    want = [execute_action(unit_tables(prof, r, codec.bits), r.eps_pp, a, repair=True).plan
            for r, a in zip(reqs, actions, strict=True)]
    assert got == want


def test_c02_resume_help_says_the_file_is_trusted_code() -> None:
    text = " ".join(train_parser().format_help().split())
    assert "TRUSTED CODE" in text and "unpickles" in text


# ------------------------------------------------------------------ train.py refuses a bad start

def _train_main() -> Any:
    spec = importlib.util.spec_from_file_location("train_cli", ROOT / "train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture()
def no_pools(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a request pool is built (the error must come before)."""
    import envs.pool

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a request pool was built before the error")

    monkeypatch.setattr(envs.pool, "build_pool", refuse)


def _run_train(tmp_path: Path, capsys: pytest.CaptureFixture[str], conf: dict[str, Any] | None,
               extra: list[str]) -> tuple[int, list[str]]:
    conf_path = tmp_path / "tiny.yml"
    if conf is not None:
        conf_path.write_text(yaml.safe_dump(conf))
    rc = _train_main()(["-n", "64", "--seed", "0", "-f", str(tmp_path / "logs"),
                        "-conf", str(conf_path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _with(key: str, value: Any) -> dict[str, Any]:
    conf = json.loads(json.dumps(TINY))
    conf["QuantSplit-v0"][key] = value
    return conf


def _assert_refused(rc: int, err: list[str], tmp_path: Path, *needles: str) -> None:
    assert rc == 2, err
    assert len(err) == 1, err
    for n in needles:
        assert n in err[0], err[0]
    assert not list((tmp_path / "logs").glob("*/QuantSplit-v0_*")), "a run folder was left"


BAD_YAML = [
    ("learning_rate", -1, "QuantSplit-v0.learning_rate", "(0, 1]"),
    ("learning_rate", float("nan"), "QuantSplit-v0.learning_rate", "finite"),
    ("learning_rate", "lin_-3", "QuantSplit-v0.learning_rate", "(0, 1]"),
    ("n_envs", 0, "QuantSplit-v0.n_envs", "[1, 256]"),
    ("n_envs", 1.5, "QuantSplit-v0.n_envs", "integer"),
    ("batch_size", -5, "QuantSplit-v0.batch_size", "[2, "),
    ("n_epochs", 0, "QuantSplit-v0.n_epochs", "[1, 1000]"),
    ("ent_coef", 1e308, "QuantSplit-v0.ent_coef", "[0, 1]"),
    ("ent_coef", 10**400, "QuantSplit-v0.ent_coef", "[0, 1]"),
    ("clip_range", -0.5, "QuantSplit-v0.clip_range", "(0, 1]"),
    ("n_steps", 0, "QuantSplit-v0.n_steps", "[1, "),
    ("gamma", 1.5, "QuantSplit-v0.gamma", "[0, 1]"),
    ("gae_lambda", -0.1, "QuantSplit-v0.gae_lambda", "[0, 1]"),
    ("normalize_advantage", "yes", "QuantSplit-v0.normalize_advantage", "true or false"),
    ("policy", "CnnPolicy", "QuantSplit-v0.policy", "MlpPolicy"),
    ("learnig_rate", 1e-3, "QuantSplit-v0.learnig_rate", "unknown key"),
    ("normalize", True, "QuantSplit-v0.normalize", "not supported"),
    ("policy_kwargs", "dict(net_arch='abc')", "policy_kwargs.net_arch", "layer widths"),
    ("policy_kwargs", "dict(net_arch=[64, -1])", "policy_kwargs.net_arch", "[1, 4096]"),
    ("policy_kwargs", "dict(net_arch=dict(pi=[64], qf=[3]))", "policy_kwargs.net_arch", "qf"),
    ("policy_kwargs", "dict(activation_fn=nn.Softmax)", "policy_kwargs", "nn.Softmax"),
    ("policy_kwargs", "dict(net_arch=[64], colour=1)", "policy_kwargs", "colour"),
    ("policy_kwargs", "[1, 2", "policy_kwargs", "cannot parse"),
    ("env_kwargs", {"model": "toy3", "colour": "red"}, "env_kwargs", "colour"),
    ("env_kwargs", {"model": "toy3", "pool": "x"}, "env_kwargs", "pool"),
    ("env_kwargs", "model", "env_kwargs", "mapping"),
]


@pytest.mark.parametrize(("key", "value", "where", "allowed"), BAD_YAML,
                         ids=[f"{k}={v!s:.20}" for k, v, _, _ in BAD_YAML])
def test_c07_bad_hyperparameter_in_the_config(key: str, value: Any, where: str, allowed: str,
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              no_pools: None) -> None:
    rc, err = _run_train(tmp_path, capsys, _with(key, value), [])
    _assert_refused(rc, err, tmp_path, where, allowed)


BAD_QSPLIT = [("train_pool", 0, "[1, "), ("bc_lr", -1, "(0, 1]"), ("pool_workers", 0, "[1, 64]"),
              ("eval_seed", -1, "[0, "), ("bc_epochs", "many", "integer"),
              ("pool_size", 3, "unknown key")]


@pytest.mark.parametrize(("key", "value", "allowed"), BAD_QSPLIT)
def test_c07_bad_qsplit_option(key: str, value: Any, allowed: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str], no_pools: None) -> None:
    conf = json.loads(json.dumps(TINY))
    conf["qsplit"]["QuantSplit-v0"][key] = value
    rc, err = _run_train(tmp_path, capsys, conf, [])
    _assert_refused(rc, err, tmp_path, f"qsplit.QuantSplit-v0.{key}", allowed)


BAD_FLAGS = [
    (["-params", "learning_rate:nan"], "-params learning_rate", "(0, 1]"),
    (["-params", "learning_rate:-1"], "-params learning_rate", "(0, 1]"),
    (["-params", "n_envs:0"], "-params n_envs", "[1, 256]"),
    (["-params", "clip_range:-0.5"], "-params clip_range", "(0, 1]"),
    (["-params", "ent_coef:1e308"], "-params ent_coef", "[0, 1]"),
    (["-params", "n_steps:1", "n_envs:1"], "-params n_steps", "at least 2"),
    (["-params", "policy_kwargs:dict(net_arch=[0])"], "-params policy_kwargs.net_arch",
     "[1, 4096]"),
    (["--env-kwargs", "colour:red"], "--env-kwargs", "colour"),
    (["--env-kwargs", "model:nosuchnet"], "nosuchnet", ""),
    (["--seed", str(2**40)], "--seed", "[0, 4294967295]"),
    (["-i", "NOSUCH/model.zip"], "-i ", "no such file"),
    (["-i", "GARBAGE"], "-i ", "not an SB3 model.zip"),
    (["-i", "TEXT"], "-i ", "not an SB3 model.zip"),
]


@pytest.mark.parametrize(("flags", "where", "allowed"), BAD_FLAGS,
                         ids=[" ".join(f)[:30] for f, _, _ in BAD_FLAGS])
def test_c07_bad_command_line(flags: list[str], where: str, allowed: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str], no_pools: None) -> None:
    (tmp_path / "GARBAGE").write_bytes(os.urandom(2000))
    (tmp_path / "TEXT").write_text("hello\n")
    flags = [str(tmp_path / f) if f in ("GARBAGE", "TEXT", "NOSUCH/model.zip") else f
             for f in flags]
    rc, err = _run_train(tmp_path, capsys, TINY, flags)
    _assert_refused(rc, err, tmp_path, where, allowed)


def test_c07_resume_from_a_model_of_another_env_is_refused(
        clean_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        no_pools: None) -> None:
    """The -i model is read without unpickling and checked against the env first."""
    rc, err = _run_train(tmp_path, capsys, TINY, ["-i", str(clean_run / "model.zip")])
    _assert_refused(rc, err, tmp_path, "-i ", "MultiDiscrete")


def test_c07_failed_start_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A start that fails after the checks (here: while solving the pools) leaves nothing."""
    import envs.pool

    def fail(*args: Any, **kwargs: Any) -> None:
        raise QsplitInputError("pool: cannot solve")

    monkeypatch.setattr(envs.pool, "build_pool", fail)
    rc, err = _run_train(tmp_path, capsys, TINY, [])
    _assert_refused(rc, err, tmp_path, "pool: cannot solve")


def test_c07_the_table_covers_every_qsplit_option() -> None:
    names = {f for f in QsplitOptions.__dataclass_fields__}
    assert names == {k for k, p in HYPERPARAMS.items() if p.section == QSPLIT}


def test_c07_shipped_configs_pass_the_checks() -> None:
    from agents.trace_train import ENV_ID as TRACE_ENV
    from agents.trace_train import load_trace_config
    from agents.train_lib import load_config, prepare_hyperparams

    for conf in sorted((ROOT / "configs").glob("ppo*.yml")):
        if TRACE_ENV in conf.read_text(encoding="utf-8"):
            hyper, opts = load_trace_config(conf)
            # held-out routes are never trained on
            assert opts.train_routes and opts.test_routes
            assert not {r.split(":")[-1] for r in opts.train_routes} & \
                {r.split(":")[-1] for r in opts.test_routes}
        else:
            hyper, _ = load_config(conf, "QuantSplit-v0")
        kwargs, meta = prepare_hyperparams(hyper, where=conf.name)
        assert meta["n_envs"] >= 1 and kwargs["policy"] == "MlpPolicy"


# ------------------------------------------------------------------ broken YAML

BROKEN = {
    "unclosed": "QuantSplit-v0: {n_envs: [1, 2\n",
    "tab": "QuantSplit-v0:\n\tn_envs: 2\n",
    "binary": "\x00\x01\x02garbage",
    "list": "- 1\n- a\n",
    "env_not_a_mapping": "QuantSplit-v0: [1, 2]\n",
    "qsplit_not_a_mapping": "QuantSplit-v0: {n_envs: 2, n_timesteps: 64}\nqsplit: 3\n",
    "deep": "QuantSplit-v0: " + "[" * 5000 + "]" * 5000 + "\n",
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_c06_train_config_broken_yaml_is_one_line(name: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  no_pools: None) -> None:
    conf = tmp_path / "tiny.yml"
    conf.write_bytes(BROKEN[name].encode("utf-8"))
    rc, err = _run_train(tmp_path, capsys, None, [])
    _assert_refused(rc, err, tmp_path, conf.name)


def test_c06_train_config_a_runs_config_yml_broken(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str],
                                                   no_pools: None) -> None:
    """A run's config.yml given as -conf (cut short by a crash, say) is refused in one line."""
    run = ROOT / "agents" / "data" / "policies" / "digits_cnn" / "config.yml"
    conf = tmp_path / "tiny.yml"
    conf.write_text(run.read_text()[:200] + "\n  - [unclosed\n")
    rc, err = _run_train(tmp_path, capsys, None, [])
    _assert_refused(rc, err, tmp_path, conf.name)


# ------------------------------------------------------------------ fuzz

def _values() -> Any:
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4),
                        max_leaves=12)


def test_c07_fuzz_config_values_refused_in_one_line() -> None:
    """Any value under any key of the env-id mapping, the qsplit section or policy_kwargs is
    accepted or refused as one line naming a key; nothing else escapes."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agents.hyperparams import prepare_hyperparams

    keys = st.sampled_from([*HYPERPARAMS, "policy_kwargs", "net_arch", "x"])

    @settings(max_examples=300, deadline=None)
    @given(key=keys, value=_values(), text=st.text(max_size=40))
    def check(key: str, value: Any, text: str) -> None:
        for where, call in (
                ("cfg.", lambda: prepare_hyperparams({**TINY["QuantSplit-v0"], key: value},
                                                     where="cfg")),
                ("-params", lambda: prepare_hyperparams(TINY["QuantSplit-v0"], {key: value})),
                ("q.", lambda: QsplitOptions.from_dict({key: value}, "q")),
                ("pk", lambda: prepare_hyperparams(
                    {**TINY["QuantSplit-v0"], "policy_kwargs": f"dict({key}={text})"},
                    where="pk"))):
            try:
                call()
            except QsplitInputError as exc:
                assert "\n" not in str(exc) and str(exc).startswith(where), str(exc)

    check()


def test_c02_fuzz_model_zip_data_refused_in_one_line(clean_run: Path, tmp_path: Path) -> None:
    """Any JSON value in place of a model.zip's data entries: read or refused in one line."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from agents.export import read_env_kwargs
    from agents.weights import read_policy
    from system.codec import ActionCodec, ObservationEncoder

    kw = read_env_kwargs(clean_run)
    encoder = ObservationEncoder.from_json(kw["encoder"])
    nvec = ActionCodec(load_profile("resnet18").n_units, tuple(kw["bits"])).nvec
    with zipfile.ZipFile(clean_run / "model.zip") as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    base = json.loads(members["data"])
    path = tmp_path / "model.zip"

    @settings(max_examples=60, deadline=None)
    @given(key=st.sampled_from([*base, "policy_kwargs", "policy_class"]), value=_values(),
           sub=st.sampled_from(["net_arch", "activation_fn", "__module__", "nvec", "_shape"]))
    def check(key: str, value: Any, sub: str) -> None:
        data = json.loads(members["data"])
        if isinstance(data.get(key), dict) and sub in data[key]:
            data[key][sub] = value
        else:
            data[key] = value
        with zipfile.ZipFile(path, "w") as z:
            for name, body in members.items():
                z.writestr(name, json.dumps(data) if name == "data" else body)
        try:
            read_policy(path, encoder, nvec)
        except QsplitInputError as exc:
            assert "\n" not in str(exc), str(exc)

    check()
