"""QuantSplitTrace-v0, the trace trainer, its bundle and runtime, the trace-variance suite.

Routes here are small synthetic Mahimahi pairs written to a temporary folder, so nothing
needs ../shared; the shipped suite's held-out run is benchmarks/bench_variance.py.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the envs)
from envs.quantsplit_trace import QuantSplitTraceEnv
from envs.trace_pool import build_trace_pool
from system.errors import QsplitInputError
from system.linktrace import load_link_pairs
from system.profiles import load_profile
from system.scenario import load_scenario


def _write_route(folder: Path, name: str, rng: np.random.Generator, seconds: int = 60) -> None:
    """A Mahimahi pair with fades and outages: per 100 ms a packet count, some zero."""
    for suffix, scale in ((".up", 2), (".down", 6)):
        lines = []
        for b in range(seconds * 10):
            n = 0 if rng.random() < 0.15 else int(rng.poisson(scale * 10))
            lines += [str(b * 100 + int(x)) for x in sorted(rng.integers(0, 100, n))]
        lines.append(str(seconds * 1000))
        (folder / f"{name}{suffix}").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def routes_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("routes")
    rng = np.random.default_rng(0)
    for name in ("alpha-LTE", "beta-LTE", "gamma-LTE"):
        _write_route(d, name, rng)
    return d


@pytest.fixture(scope="module")
def pool(routes_dir: Path):  # type: ignore[no-untyped-def]
    routes = load_link_pairs(routes_dir)[:2]
    return build_trace_pool(load_profile("digits_cnn"), load_scenario("default"), routes, 64, 1)


def test_env_passes_the_checkers_and_is_deterministic(pool) -> None:  # type: ignore[no-untyped-def]
    env = QuantSplitTraceEnv("digits_cnn", pool=pool)
    check_env(env, skip_render_check=True)
    a = gym.make("QuantSplitTrace-v0", model="digits_cnn", pool=pool).unwrapped
    b = pickle.loads(pickle.dumps(a))
    for e in (a, b):
        e.reset(seed=7)
    acts = [a.action_space.sample() for _ in range(5)]
    ra = []
    rb = []
    for act in acts:
        oa, _ = a.reset()
        ob, _ = b.reset()
        assert np.array_equal(oa, ob)
        ra.append(a.step(act)[1])
        rb.append(b.step(act)[1])
    assert ra == rb


def test_reward_is_the_log_ratio_to_the_clairvoyant_minus_the_miss_penalty(pool) -> None:  # type: ignore[no-untyped-def]
    env = QuantSplitTraceEnv("digits_cnn", pool=pool, miss_penalty=2.0)
    for i in range(len(pool)):
        env.reset(options={"index": i})
        _, r, term, trunc, info = env.step(pool.clair_action[i])
        assert term and not trunc
        assert info["cost"] == pytest.approx(info["clairvoyant_cost"], rel=1e-9)
        assert r == pytest.approx(-2.0 * info["miss"], abs=1e-9)
        assert info["regret"] == pytest.approx(0.0, abs=1e-9)
    env.reset(options={"index": 0})
    with pytest.raises(QsplitInputError, match="action"):
        env.step(np.zeros(3, dtype=np.int64))
    with pytest.raises(QsplitInputError, match="index"):
        env.reset(options={"index": len(pool)})
    with pytest.raises(QsplitInputError, match="pool"):
        QuantSplitTraceEnv("digits_cnn")


def test_no_decider_beats_the_clairvoyant(pool, routes_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from agents.trace_eval import compare, decider_plans

    train = load_link_pairs(routes_dir)[2:]
    plans = decider_plans(load_profile("digits_cnn"), pool, train, saa_futures=4)
    figs, costs = compare(load_profile("digits_cnn"), pool, plans)
    assert figs["clairvoyant"]["regret_mean"] == 0.0
    for name, c in costs.items():
        assert np.all(c >= pool.clair_cost * (1 - 1e-9)), name
    assert np.allclose(costs["ce_optimal"], pool.ce_cost)


@pytest.mark.parametrize("ce_input", [False, True])
def test_train_export_and_the_runtime_decide_alike(tmp_path: Path, routes_dir: Path,
                                                   ce_input: bool) -> None:
    from agents.trace_eval import load_trace_model, policy_plans
    from agents.trace_export import export_trace_run
    from agents.trace_train import train
    from runtime.dispatcher import Dispatcher
    from runtime.trace import TraceDispatcher

    conf = tmp_path / "conf.yml"
    conf.write_text(f"""
QuantSplitTrace-v0:
  n_envs: 2
  n_timesteps: 256
  policy: MlpPolicy
  n_steps: 64
  batch_size: 64
  n_epochs: 1
  gamma: 0.0
  policy_kwargs: "dict(net_arch=dict(pi=[32], vf=[32]))"
qsplit:
  QuantSplitTrace-v0:
    train_routes: ["{routes_dir}:alpha-LTE,beta-LTE"]
    test_routes: ["{routes_dir}:gamma-LTE"]
    train_pool: 96
    eval_pool: 32
    bc_epochs: 2
    ce_input: {str(ce_input).lower()}
""")
    run = train("digits_cnn", tmp_path / "run", conf, seed=3, verbose=False)
    ev = json.loads((run / "evaluations.json").read_text())
    assert {"ce_optimal", "imitation", "ppo"} <= set(ev)
    assert (run / "model.zip").is_file() and (run / "bc_model.zip").is_file()
    assert any((run / "tb").iterdir())
    bundle = export_trace_run(run, tmp_path / "bundle")
    d = TraceDispatcher.load(bundle)
    with pytest.raises(QsplitInputError, match="trace policy"):
        Dispatcher(d.bundle)
    prof = load_profile("digits_cnn")
    test = build_trace_pool(prof, load_scenario("default"), load_link_pairs(routes_dir)[2:],
                            40, 9, ce_input=ce_input)
    assert d.bundle.history is not None and d.bundle.history.ce_plan == ce_input
    model = load_trace_model(str(run / "model.zip"), prof, test.obs.shape[1])
    ref = policy_plans(model, prof, test.sit, test.obs)
    sit = test.sit
    got = [d.decide(sit.requests[i], up_samples_bps=sit.up_hist_bps[i],
                    down_samples_bps=sit.down_hist_bps[i], share_samples=sit.share_hist[i],
                    deadline_s=float(sit.deadline_s[i])) for i in range(len(sit))]
    assert got == ref
    with pytest.raises(QsplitInputError, match=r"up_samples_bps: expected 5 samples"):
        d.decide(sit.requests[0], up_samples_bps=[1e6] * 4, down_samples_bps=sit.down_hist_bps[0],
                 share_samples=sit.share_hist[0], deadline_s=1.0)
    with pytest.raises(QsplitInputError, match=r"share_samples\[0\]"):
        d.decide(sit.requests[0], up_samples_bps=sit.up_hist_bps[0],
                 down_samples_bps=sit.down_hist_bps[0], share_samples=[0.0] * 10, deadline_s=1.0)
    with pytest.raises(QsplitInputError, match="deadline_s"):
        d.decide(sit.requests[0], up_samples_bps=sit.up_hist_bps[0],
                 down_samples_bps=sit.down_hist_bps[0], share_samples=sit.share_hist[0],
                 deadline_s=-1.0)


def test_trace_suite_on_a_folder_of_unseen_traces(tmp_path: Path, routes_dir: Path) -> None:
    from leaderboard.variance import run_trace_suite

    suite = tmp_path / "suite.yaml"
    conf = tmp_path / "conf.yml"
    conf.write_text(f"""
QuantSplitTrace-v0: {{n_envs: 1}}
qsplit:
  QuantSplitTrace-v0:
    train_routes: ["{routes_dir}:alpha-LTE,beta-LTE"]
    test_routes: ["{routes_dir}:gamma-LTE"]
""")
    suite.write_text(f"""format: qsplit-trace-suite/1
name: t
models: [digits_cnn]
train_config: {conf}
policies: {tmp_path / "none"}
routes: ["{routes_dir}:gamma-LTE"]
n_requests: 12
seed: 4
saa_futures: 4
""")
    unseen = tmp_path / "unseen"
    unseen.mkdir()
    _write_route(unseen, "delta-LTE", np.random.default_rng(5))
    out = tmp_path / "out"
    figs = run_trace_suite(suite, out, traces=unseen, plots=False, log=lambda s: None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["routes"] == ["delta-LTE"]
    assert figs["digits_cnn"]["clairvoyant"]["regret_mean"] == 0.0
    assert {"ce_optimal", "saa_optimal", "ce_predicted"} <= set(figs["digits_cnn"])
    assert (out / "records.csv").read_text().count("\n") == 1 + 12 * len(figs["digits_cnn"])


def test_evaluate_refuses_a_missing_trace_folder_in_one_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture) -> None:
    import evaluate
    from leaderboard.variance import load_trace_suite

    s = load_trace_suite("trace_variance")
    assert s.models == ("resnet18", "digits_cnn") and s.n_requests >= 1000
    code = evaluate.main(["--suite", "trace_variance", "--traces", str(tmp_path / "nope"),
                          "--out", str(tmp_path / "out"), "--no-plots"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "nope" in err[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("old,new,field", [
    ("train_pool: 30000", "train_pool: 1.5", "train_pool"),
    ("bc_lr: !!float 1e-3", "bc_lr: fast", "bc_lr"),
    ("ce_input: true", "ce_input: 1", "ce_input"),
    ("scenario: default", "scenario: 3", "scenario"),
])
def test_trace_config_refuses_a_bad_value_naming_it(tmp_path: Path, old: str, new: str,
                                                     field: str) -> None:
    from agents.trace_train import DEFAULT_CONF, load_trace_config

    text = DEFAULT_CONF.read_text(encoding="utf-8")
    assert old in text
    bad = tmp_path / "conf.yml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(QsplitInputError, match=rf"qsplit\.QuantSplitTrace-v0\.{field}: ") as e:
        load_trace_config(bad)
    assert "\n" not in str(e.value)
    bad.write_text("QuantSplitTrace-v0: {n_envs: 1}\nqsplit:\n  QuantSplitTrace-v0:\n"
                   "    train_routes: []\n    test_routes: [x]\n")
    with pytest.raises(QsplitInputError, match=r"\.train_routes: expected a non-empty list"):
        load_trace_config(bad)
