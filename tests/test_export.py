"""Export of SB3 policies and parity of the dispatcher with ``predict(deterministic=True)``.

The reference is stable-baselines3 itself: the env's observation (``reset(options=
{"request": r})``), ``model.predict(obs, deterministic=True)`` (with the env's
``action_masks()`` for MaskablePPO) and the env's own ``step``, whose ``info["plan"]`` is
the executed plan after the env's repair. The dispatcher must return exactly that plan.
Models here have random weights (drawn large enough that the heads disagree and the repair
is often needed); the committed policies are checked too when they are there.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("stable_baselines3")
pytest.importorskip("gymnasium")

from sb3_contrib import MaskablePPO  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402

from agents.export import export_model, numpy_logits, write_env_kwargs  # noqa: E402
from envs.quantsplit import QuantSplitEnv  # noqa: E402
from runtime import Dispatcher, load_bundle  # noqa: E402
from runtime.bundle import SUMS_FILE  # noqa: E402
from runtime.dispatcher import bundles_root  # noqa: E402
from system.errors import QsplitInputError  # noqa: E402
from system.plan import Plan  # noqa: E402
from system.profiles import ModelProfile, random_profile  # noqa: E402
from system.request import Request, random_request  # noqa: E402
from system.scenario import load_scenario, sample_requests  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The dispatcher options under which it is exactly SB3's predict followed by the env's repair.
ENV = {"fallback": "none", "trivial_guard": False}


def make_model(env: QuantSplitEnv, algo: str = "ppo", seed: int = 0, scale: float = 0.4,
               **policy_kwargs: Any) -> Any:
    """An SB3 model on ``env`` with random actor weights of the given scale."""
    cls = MaskablePPO if algo == "maskable" else PPO
    model = cls("MlpPolicy", env, seed=seed, verbose=0, policy_kwargs=policy_kwargs or None,
                device="cpu")
    g = torch.Generator().manual_seed(seed)
    params = [*model.policy.mlp_extractor.policy_net.parameters(),
              *model.policy.action_net.parameters()]
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def sb3_plans(model: Any, env: QuantSplitEnv, requests: list[Request],
              batch: bool = True) -> list[Plan]:
    """predict(deterministic=True) on the env's observations, then the env's step."""
    masked = isinstance(model, MaskablePPO)
    obs, masks = [], []
    for r in requests:
        o, _ = env.reset(options={"request": r})
        obs.append(o)
        masks.append(env.action_masks())
    kw = {"action_masks": np.stack(masks)} if masked else {}
    if batch:
        actions, _ = model.predict(np.stack(obs), deterministic=True, **kw)
    else:
        actions = np.stack([model.predict(o, deterministic=True,
                                          **({"action_masks": m} if masked else {}))[0]
                            for o, m in zip(obs, masks, strict=True)])
    plans = []
    for r, a in zip(requests, actions, strict=True):
        env.reset(options={"request": r})
        plans.append(env.step(a)[4]["plan"])
    return plans


def requests(n: int, seed: int) -> list[Request]:
    rng = np.random.default_rng(seed)
    out = sample_requests(load_scenario("default"), rng, n - n // 5)
    return out + [random_request(rng) for _ in range(n // 5)]


@pytest.fixture(scope="module")
def prof() -> ModelProfile:
    return random_profile(12, np.random.default_rng(3), name="rand12")


@pytest.fixture(scope="module")
def env(prof: ModelProfile) -> QuantSplitEnv:
    return QuantSplitEnv(model=prof, reward_reference="server_only")


def _check_parity(model: Any, env: QuantSplitEnv, prof: ModelProfile, tmp: Path,
                  reqs: list[Request]) -> dict:
    d = Dispatcher.load(export_model(model, prof, tmp / "bundle"), **ENV)
    want = sb3_plans(model, env, reqs)
    single = [d.decide(r) for r in reqs]
    batch = d.decide_batch(reqs)
    bad = [i for i, (a, b) in enumerate(zip(single, want, strict=True)) if a != b]
    assert not bad, f"{len(bad)} of {len(reqs)} differ, first at {bad[:5]}"
    assert batch == single
    paths = [d.decide_detailed(r).path for r in reqs[:300]]
    return {"n": len(reqs), "repaired": paths.count("repaired")}


@pytest.mark.parametrize(("algo", "kwargs"), [
    ("ppo", {}),
    ("maskable", {}),
    ("ppo", {"activation_fn": "relu", "net_arch": [32, 48, 16]}),
    ("maskable", {"activation_fn": "relu", "net_arch": [128]}),
])
def test_parity_with_sb3_predict_and_env_repair(tmp_path: Path, prof: ModelProfile,
                                                env: QuantSplitEnv, algo: str, kwargs: dict) -> None:
    if kwargs.get("activation_fn") == "relu":
        kwargs = {**kwargs, "activation_fn": torch.nn.ReLU}
    model = make_model(env, algo, seed=1, **kwargs)
    res = _check_parity(model, env, prof, tmp_path, requests(1000, seed=2))
    assert res["repaired"] > 0                      # the repair path is exercised


def test_parity_with_single_request_predict(tmp_path: Path, prof: ModelProfile,
                                            env: QuantSplitEnv) -> None:
    model = make_model(env, "maskable", seed=4)
    d = Dispatcher.load(export_model(model, prof, tmp_path / "b"), **ENV)
    reqs = requests(150, seed=5)
    assert [d.decide(r) for r in reqs] == sb3_plans(model, env, reqs, batch=False)


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["ppo", "maskable"])
def test_parity_10000_requests(tmp_path: Path, prof: ModelProfile, env: QuantSplitEnv,
                               algo: str) -> None:
    model = make_model(env, algo, seed=7, scale=0.3)
    _check_parity(model, env, prof, tmp_path, requests(10_000, seed=8))


def test_export_is_deterministic_and_actor_only(tmp_path: Path, prof: ModelProfile,
                                                env: QuantSplitEnv) -> None:
    model = make_model(env, "ppo", seed=3)
    a = export_model(model, prof, tmp_path / "a")
    b = export_model(model, prof, tmp_path / "b")
    assert (a / SUMS_FILE).read_bytes() == (b / SUMS_FILE).read_bytes()
    bundle = load_bundle(a)
    assert [h.weight.shape[0] for h in bundle.hidden] == [64, 64]
    assert bundle.masking == "none"
    c = bundle.contract
    assert c["env"]["id"] == "QuantSplit-v0" and c["source"]["algo"] == "PPO"
    assert c["observation"]["names"] == bundle.encoder.names
    with np.load(a / "weights.npz", allow_pickle=False) as z:
        assert not any("value" in k for k in z.files)
        obs = np.random.default_rng(0).uniform(-2, 2, (64, bundle.encoder.n_features))
        hidden = [(h["weight"], h["bias"], h["activation"]) for h in c["policy"]["layers"]]
        an = c["policy"]["action_net"]
        got = numpy_logits({k: z[k] for k in z.files}, hidden, (an["weight"], an["bias"]), obs)
    with torch.no_grad():
        lat = model.policy.mlp_extractor.forward_actor(torch.as_tensor(obs, dtype=torch.float32))
        want = model.policy.action_net(lat).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_export_refuses_what_the_runtime_cannot_reproduce(tmp_path: Path, prof: ModelProfile,
                                                          env: QuantSplitEnv) -> None:
    model = make_model(env, "ppo", activation_fn=torch.nn.ELU)
    with pytest.raises(QsplitInputError, match="ELU"):
        export_model(model, prof, tmp_path / "elu")
    other = random_profile(5, np.random.default_rng(0), name="rand5")
    with pytest.raises(QsplitInputError, match="action space"):
        export_model(make_model(env), other, tmp_path / "other")
    assert not (tmp_path / "elu").exists() and not (tmp_path / "other").exists()


def test_export_command_on_a_run_folder(tmp_path: Path, prof: ModelProfile,
                                        env: QuantSplitEnv) -> None:
    run = tmp_path / "run"
    run.mkdir()
    model = make_model(env, "maskable", seed=9)
    model.save(run / "model.zip")
    prof_file = tmp_path / "rand12.json"
    prof.save(prof_file)
    write_env_kwargs(run, QuantSplitEnv(model=str(prof_file)))
    out = subprocess.run([sys.executable, "-m", "agents.export", "--run", str(run), "--out",
                          str(tmp_path / "bundle")], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["bundle"].endswith("bundle")
    d = Dispatcher.load(tmp_path / "bundle", **ENV)
    assert d.bundle.masking == "feasible_options"
    assert d.bundle.contract["source"]["run"] == "run"
    reqs = requests(200, seed=10)
    assert [d.decide(r) for r in reqs] == sb3_plans(model, env, reqs)
    out = subprocess.run([sys.executable, "-m", "agents.export", "--run", str(tmp_path / "no"),
                          "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 2 and "model.zip" in out.stderr


def test_export_of_a_train_py_run_folder(tmp_path: Path, prof: ModelProfile,
                                         env: QuantSplitEnv) -> None:
    """train.py's layout: env_kwargs.json (the env's resolved arguments) beside model.zip."""
    from agents.export import ENV_KWARGS_FILE, export_run, read_env_kwargs
    prof_file = tmp_path / "rand12.json"
    prof.save(prof_file)
    run = tmp_path / "ppo_mask" / "QuantSplit-v0_1"
    run.mkdir(parents=True)
    model = make_model(env, "maskable", seed=13)
    model.save(run / "model.zip")
    with pytest.raises(QsplitInputError, match=ENV_KWARGS_FILE):
        export_run(run, tmp_path / "bundle")
    write_env_kwargs(run, QuantSplitEnv(model=str(prof_file), reward_reference="server_only"))
    kw = read_env_kwargs(run)
    assert kw["model"] == str(prof_file) and kw["bits"] == list(env.codec.bits)
    assert kw["profile_sha256"] == prof.sha256() and kw["encoder"] == env.encoder.to_json()
    b = export_run(run, tmp_path / "bundle")
    d = Dispatcher.load(b, **ENV)
    assert d.bundle.masking == "feasible_options"
    assert d.bundle.contract["source"]["algo_name"] == "ppo_mask"
    assert d.bundle.contract["env"]["kwargs"] == {k: kw[k] for k in ("bits", "mode", "model",
                                                                     "scenario")}
    reqs = requests(200, seed=14)
    assert [d.decide(r) for r in reqs] == sb3_plans(model, env, reqs)
    (run / ENV_KWARGS_FILE).write_text(json.dumps({**kw, "profile_sha256": "f" * 64}))
    with pytest.raises(QsplitInputError, match="profile changed since training"):
        export_run(run, tmp_path / "bundle2")
    (run / ENV_KWARGS_FILE).write_text(json.dumps({**kw, "modle": "x"}))
    with pytest.raises(QsplitInputError, match="modle"):
        export_run(run, tmp_path / "bundle2")


def test_onnx_export_matches_the_dispatcher(tmp_path: Path, prof: ModelProfile,
                                            env: QuantSplitEnv) -> None:
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    model = make_model(env, "ppo", seed=11)
    b = export_model(model, prof, tmp_path / "onnx", onnx=True)
    assert (b / "policy.onnx").is_file()
    d = Dispatcher.load(b, **ENV)
    sess = ort.InferenceSession(str(b / "policy.onnx"), providers=["CPUExecutionProvider"])
    reqs = requests(1000, seed=12)
    logits = sess.run(["logits"], {"obs": d.encoder.encode_batch(reqs)})[0]
    heads = np.split(logits, np.cumsum(d.codec.nvec)[:-1], axis=1)
    actions = np.stack([h.argmax(1) for h in heads], axis=1)
    want = []
    for r, a in zip(reqs, actions, strict=True):
        env.reset(options={"request": r})
        want.append(env.step(a)[4]["plan"])
    assert [d.decide(r) for r in reqs] == want


# ------------------------------------------------------------------ committed policies

def committed_runs() -> list[tuple[str, Path]]:
    """(model, run folder) of committed SB3 runs that have a committed bundle beside them."""
    out = []
    root = bundles_root()
    if not root.is_dir():
        return out
    for b in sorted(root.iterdir()):
        if not (b / "contract.json").is_file():
            continue
        run = json.loads((b / "contract.json").read_text()).get("source", {}).get("run_path")
        if run and (ROOT / run / "model.zip").is_file():
            out.append((b.name, ROOT / run))
    return out


@pytest.mark.parametrize("n", [pytest.param(1000, id="1000"),
                               pytest.param(10_000, id="10000", marks=pytest.mark.slow)])
@pytest.mark.parametrize(("model_name", "run"), committed_runs() or [
    pytest.param(None, None, marks=pytest.mark.skip(reason="no committed policy runs yet"))])
def test_committed_bundle_parity(model_name: str, run: Path, n: int) -> None:
    from agents.export import load_run_model, read_env_kwargs
    d = Dispatcher.load(model=model_name, **ENV)
    model = load_run_model(run)
    kw = read_env_kwargs(run)
    env = QuantSplitEnv(model=d.profile, scenario=kw["scenario"], encoder=kw["encoder"],
                        reward_reference="server_only", bits=d.bits)
    reqs = requests(n, seed=13)
    want = sb3_plans(model, env, reqs)
    got = d.decide_batch(reqs)
    bad = [i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b]
    assert not bad, f"{len(bad)} of {n} differ, first at {bad[:5]}"
    assert [d.decide(r) for r in reqs[:1000]] == want[:1000]


@pytest.mark.parametrize(("model_name", "run"), committed_runs() or [
    pytest.param(None, None, marks=pytest.mark.skip(reason="no committed policy runs yet"))])
def test_committed_run_exports_to_the_committed_bundle(tmp_path: Path, model_name: str,
                                                       run: Path) -> None:
    from agents.export import export_run
    out = export_run(run, tmp_path / model_name)
    committed = bundles_root() / model_name
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in committed.iterdir())
    for f in out.iterdir():
        assert f.read_bytes() == (committed / f.name).read_bytes(), f.name
