"""Tests of envs/: registration, Gymnasium and SB3 checks, determinism, pickling, vector
envs, the optimizer as a policy, repair and penalty modes, pools, bad input."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from envs import ENV_ID, RequestPool
from envs.quantsplit import QuantSplitEnv
from system.accuracy import is_feasible
from system.errors import QsplitInputError
from system.optimal import solve
from system.profiles import builtin_profile_names, load_profile, random_profile
from system.scenario import load_scenario

# QuantSplitTrace-v0 takes a pool and no mode: tests/test_trace_policy.py checks it
QS_IDS = sorted(i for i in gym.registry if i.startswith("QuantSplit") and i != envs.TRACE_ENV_ID)


@pytest.fixture(scope="module")
def rand12(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("profiles") / "rand12.json"
    random_profile(12, np.random.default_rng(3), name="rand12").save(path)
    return str(path)


def _rollout(env: gym.Env, seed: int, n: int) -> list:
    env.action_space.seed(seed)
    out = []
    obs, _ = env.reset(seed=seed)
    for _ in range(n):
        a = env.action_space.sample()
        _obs2, r, term, trunc, info = env.step(a)
        out.append((obs.tobytes(), a.tobytes(), r, term, trunc, info["cost"], info["plan"]))
        obs, _ = env.reset()
    return out


def test_registration_is_idempotent_with_string_entry_point() -> None:
    assert ENV_ID in QS_IDS
    assert gym.spec(ENV_ID).entry_point == "envs.quantsplit:QuantSplitEnv"
    envs.register_envs()
    importlib.reload(envs)
    assert gym.spec(ENV_ID).entry_point == "envs.quantsplit:QuantSplitEnv"


@pytest.mark.parametrize("env_id", QS_IDS)
@pytest.mark.parametrize("mode", ["repair", "penalty"])
def test_gymnasium_and_sb3_checkers(env_id: str, mode: str, rand12: str) -> None:
    for model in ("toy3", rand12):
        env = gym.make(env_id, model=model, mode=mode)
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=True)


def test_default_model_env_checks() -> None:
    if "resnet18" not in builtin_profile_names():
        pytest.skip("resnet18 profile not shipped yet")
    env = gym.make(ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space.nvec[0] == load_profile("resnet18").n_units + 1


def test_spaces_and_info(rand12: str) -> None:
    env = gym.make(ENV_ID, model=rand12, compute_regret=True, reward_reference="server_only")
    L = 12
    assert env.action_space.nvec.tolist() == [L + 1, 7] + [7] * L
    assert env.observation_space.shape == (21,) and env.observation_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "eps_pp" in info
    _, _r, term, trunc, info = env.step(env.action_space.sample())
    assert term and not trunc
    for k in ("latency_s", "energy_j", "cost", "drop_pp", "payload_reduction", "plan",
              "repaired", "violation", "regret", "opt_cost"):
        assert k in info
    assert is_feasible(info["drop_pp"], info["eps_pp"])
    assert info["regret"] >= -1e-12


def test_same_seed_same_rollout(rand12: str) -> None:
    a = _rollout(gym.make(ENV_ID, model=rand12), 11, 30)
    b = _rollout(gym.make(ENV_ID, model=rand12), 11, 30)
    c = _rollout(gym.make(ENV_ID, model=rand12), 12, 30)
    assert a == b
    assert a != c


def test_resolved_kwargs_rebuild_the_same_env(rand12: str) -> None:
    env = QuantSplitEnv(model=rand12, mode="penalty", reward_scale="linear", penalty=2.0,
                        bits=(4, 8, 32))
    kw = env.resolved_kwargs()
    assert kw["model"] == rand12 and kw["profile_sha256"] == env.profile.sha256()
    assert kw["scenario"] == load_scenario("default").to_dict()
    clone = QuantSplitEnv(**{k: v for k, v in kw.items() if k != "profile_sha256"})
    assert clone.resolved_kwargs() == kw
    assert _rollout(env, 4, 20) == _rollout(clone, 4, 20)
    named = QuantSplitEnv(model=load_profile(rand12)).resolved_kwargs()
    assert named["model"] == "rand12"


def test_pickle_round_trip(rand12: str) -> None:
    env = gym.make(ENV_ID, model=rand12)
    env.reset(seed=5)
    clone = pickle.loads(pickle.dumps(env))
    action = env.action_space.sample()
    r1 = env.step(action)
    r2 = clone.step(action)
    assert r1[1] == r2[1] and r1[4]["plan"] == r2[4]["plan"]
    assert _rollout(env, 3, 5) == _rollout(clone, 3, 5)


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_make_vec(mode: str) -> None:
    vec = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode=mode, model="toy3")
    try:
        obs, _ = vec.reset(seed=0)
        assert obs.shape == (2, 21)
        acts = np.stack([vec.single_action_space.sample() for _ in range(2)])
        _obs2, rew, term, trunc, _ = vec.step(acts)
        assert rew.shape == (2,) and term.all() and not trunc.any()
        single = gym.make(ENV_ID, model="toy3")
        o, _ = single.reset(seed=0)
        np.testing.assert_array_equal(o, obs[0])
        assert single.step(acts[0])[1] == pytest.approx(rew[0], abs=0)
    finally:
        vec.close()


def test_optimizer_as_policy_has_zero_regret(rand12: str) -> None:
    env = gym.make(ENV_ID, model=rand12, compute_regret=True, reward_scale="linear")
    u: QuantSplitEnv = env.unwrapped
    env.reset(seed=0)
    for _ in range(40):
        sol = solve(u.profile, u.request)
        _, r, _, _, info = env.step(u.codec.encode(sol.plan))
        assert info["regret"] == pytest.approx(0.0, abs=1e-12)
        assert r == pytest.approx(0.0, abs=1e-12)
        assert not info["repaired"] and info["plan"] == sol.plan
        env.reset()


def test_repair_and_penalty_modes(rand12: str) -> None:
    rep = gym.make(ENV_ID, model=rand12, mode="repair")
    pen = gym.make(ENV_ID, model=rand12, mode="penalty", penalty=2.5)
    n_rep = n_pen = 0
    all2 = np.zeros(14, dtype=np.int64)
    for seed in range(60):
        all2[0] = 12
        rep.reset(seed=seed)
        pen.reset(seed=seed)
        _, r1, _, _, i1 = rep.step(all2)
        _, r2, _, _, i2 = pen.step(all2)
        assert is_feasible(i1["drop_pp"], i1["eps_pp"])
        n_rep += i1["repaired"]
        if i2["violation"]:
            n_pen += 1
            assert r2 == -2.5 and i2["drop_pp"] > i2["eps_pp"]
            assert i1["repaired"]
        else:
            assert r1 == r2
    assert n_rep == n_pen > 0


def test_server_only_reference() -> None:
    env = gym.make(ENV_ID, model="toy3", reward_reference="server_only")
    env.reset(seed=0)
    _, r, *_ = env.step(np.zeros(5, dtype=np.int64))
    assert r == pytest.approx(0.0, abs=1e-12)     # the table and direct sums round alike to an ulp


def test_explicit_request_option_and_render() -> None:
    from system.scenario import sample_requests

    req = sample_requests(load_scenario(), np.random.default_rng(0), 1)[0]
    env = gym.make(ENV_ID, model="toy3", render_mode="ansi")
    env.reset(options={"request": req})
    assert "no step" in env.render()
    assert env.unwrapped.request == req
    env.step(np.array([3, 0, 6, 6, 6]))
    assert "cut 3/3" in env.render()


def test_action_masks_keep_feasible_options(rand12: str) -> None:
    env = gym.make(ENV_ID, model=rand12)
    u: QuantSplitEnv = env.unwrapped
    for seed in range(20):
        env.reset(seed=seed)
        m = u.action_masks()
        assert m.shape == (int(u.codec.nvec.sum()),) and m.dtype == bool
        sol = solve(u.profile, u.request)
        a = u.codec.encode(sol.plan)
        offsets = np.concatenate([[0], np.cumsum(u.codec.nvec)[:-1]])
        used = [0, 1, *range(2, 2 + sol.plan.cut)]
        assert all(m[offsets[i] + a[i]] for i in used)     # the optimum is never masked


def test_pool_env_and_npz_round_trip(tmp_path: Path) -> None:
    profile = load_profile("toy3")
    pool = RequestPool.build(profile, load_scenario(), 30, seed=1, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("pool-*.npz"))) == 1
    again = RequestPool.build(profile, load_scenario(), 30, seed=1, cache_dir=tmp_path)
    assert again.requests == pool.requests
    np.testing.assert_array_equal(again.obs, pool.obs)
    np.testing.assert_array_equal(again.opt_action, pool.opt_action)
    env = gym.make(ENV_ID, model="toy3", pool=pool, compute_regret=True)
    u: QuantSplitEnv = env.unwrapped
    env.reset(seed=0)
    for _ in range(10):
        i = pool.requests.index(u.request)
        _, _r, _, _, info = env.step(pool.opt_action[i])
        assert info["regret"] == pytest.approx(0.0, abs=1e-12)
        assert info["opt_cost"] == pool.opt_cost[i]
        env.reset()
    with pytest.raises(QsplitInputError, match="pool"):
        gym.make(ENV_ID, model=random_profile(4, np.random.default_rng(0)), pool=pool)


def _bad_scenario(**edit: object) -> dict:
    d = load_scenario("default").to_dict()
    d.update(edit)
    return d


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"model": "resnet1000"}, "unknown profile 'resnet1000'"),
    ({"scenario": "nowhere"}, "unknown scenario 'nowhere'"),
    ({"scenario": _bad_scenario(colour="red")}, "unknown key"),
    ({"scenario": _bad_scenario(eps_pp={"dist": "uniform", "min": 2.0, "max": 1.0})},
     "inverted"),
    ({"scenario": _bad_scenario(reuse={"dist": "log_uniform", "min": 10.0, "max": 10.0})},
     "empty range"),
    ({"scenario": _bad_scenario(devices={})}, "devices"),
    ({"mode": "lenient"}, "mode"),
    ({"reward_reference": "oracle"}, "reward_reference"),
    ({"reward_scale": "sqrt"}, "reward_scale"),
    ({"penalty": -1.0}, "penalty"),
    ({"bits": [4, 8]}, "must contain 32"),
])
def test_bad_input_fails_at_construction(kwargs: dict, needle: str) -> None:
    kwargs = {"model": "toy3", **kwargs}
    with pytest.raises(QsplitInputError) as exc:
        gym.make(ENV_ID, **kwargs)
    assert needle in str(exc.value)


def test_step_without_reset_is_refused() -> None:
    env = QuantSplitEnv(model="toy3")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(5, dtype=np.int64))
    env.reset(seed=0)
    env.step(np.zeros(5, dtype=np.int64))
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(5, dtype=np.int64))


def test_evaluation_executes_actions_as_the_env_does(rand12: str) -> None:
    from agents.evaluation import evaluate_actions

    profile = load_profile(rand12)
    pool = RequestPool.build(profile, load_scenario(), 40, seed=2)
    rng = np.random.default_rng(0)
    acts = np.stack([np.array([rng.integers(0, n) for n in [13, 7] + [7] * 12])
                     for _ in range(40)])
    m = evaluate_actions(profile, pool, acts)
    env = gym.make(ENV_ID, model=rand12, compute_regret=True)
    for i, req in enumerate(pool.requests):
        env.reset(options={"request": req})
        _, _, _, _, info = env.step(acts[i])
        assert info["regret"] == pytest.approx(m["regrets"][i], rel=1e-9, abs=1e-12)
    assert m["violations"] == 0


def test_pool_does_not_depend_on_the_number_of_workers() -> None:
    from envs.pool import build_pool

    profile = load_profile("toy3")
    one = build_pool(profile, load_scenario(), 25, seed=4, workers=1, chunk=10)
    two = build_pool(profile, load_scenario(), 25, seed=4, workers=2, chunk=10)
    assert one.requests == two.requests and len(one) == 25
    np.testing.assert_array_equal(one.opt_cost, two.opt_cost)
    with pytest.raises(QsplitInputError, match="pool size"):
        build_pool(profile, load_scenario(), 0, seed=4)
