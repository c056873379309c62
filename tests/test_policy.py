"""Tests of agents/policy.py: one Policy protocol, adapters that decide as their source does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.policy import (
    BundlePolicy,
    DeciderPolicy,
    Policy,
    PPOPolicy,
    known_specs,
    make_policy,
    split_label,
)
from system.accuracy import is_feasible
from system.baselines import DECIDERS
from system.codec import ActionCodec, ObservationEncoder
from system.cost import evaluate_plans
from system.errors import QsplitInputError
from system.profiles import load_profile, random_profile
from system.repair import repair
from system.scenario import load_scenario, sample_requests


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("prof") / "rand6.json"
    random_profile(6, np.random.default_rng(3), name="rand6").save(path)
    return path


@pytest.fixture(scope="module")
def requests() -> list:
    return sample_requests(load_scenario("default"), np.random.default_rng(11), 60)


@pytest.mark.parametrize("name", sorted(DECIDERS))
def test_decider_adapters_give_the_deciders_plans(name: str, profile_path: Path,
                                                  requests: list) -> None:
    prof = load_profile(profile_path)
    pol = make_policy(name, prof)
    assert isinstance(pol, DeciderPolicy) and isinstance(pol, Policy) and not pol.batched
    want = [DECIDERS[name](prof, r) for r in requests]
    assert pol.decide_batch(requests) == want
    assert [pol.decide(r) for r in requests[:5]] == want[:5]


def test_labels() -> None:
    assert split_label("ppo:runs/x") == ("ppo", "ppo:runs/x")
    assert split_label("fast=uniform") == ("fast", "uniform")
    assert split_label("optimal") == ("optimal", "optimal")
    with pytest.raises(QsplitInputError, match="LABEL=SPEC"):
        split_label("=uniform")


def test_labelled_decider_keeps_its_label(profile_path: Path) -> None:
    pol = make_policy("best=optimal", load_profile(profile_path))
    assert pol.name == "best"


@pytest.mark.parametrize("spec", ["oracle", "optimal:x", "ppox", "bundlex:1", "", "ppo:"])
def test_unknown_decider_is_named(spec: str, profile_path: Path) -> None:
    with pytest.raises(QsplitInputError) as exc:
        make_policy(spec, load_profile(profile_path))
    msg = str(exc.value)
    assert repr(spec) in msg and "optimal" in msg and "\n" not in msg
    assert "ppo:<run folder>" in known_specs()


def test_run_folder_without_model_is_named(tmp_path: Path, profile_path: Path) -> None:
    with pytest.raises(QsplitInputError) as exc:
        make_policy(f"ppo:{tmp_path}", load_profile(profile_path))
    assert str(tmp_path) in str(exc.value) and "model.zip" in str(exc.value)


def test_missing_bundle_is_named(tmp_path: Path, profile_path: Path) -> None:
    with pytest.raises(QsplitInputError) as exc:
        make_policy(f"bundle:{tmp_path / 'nothing'}", load_profile(profile_path))
    assert "nothing" in str(exc.value)


# ------------------------------------------------------------------ a PPO run

def _make_run(folder: Path, profile_path: Path, maskable: bool, mode: str = "repair") -> Path:
    """A tiny run folder holding model.zip and the env's resolved arguments, as train.py writes."""
    from agents.export import write_env_kwargs
    from envs.quantsplit import QuantSplitEnv

    folder.mkdir(parents=True)
    env = QuantSplitEnv(model=str(profile_path), scenario="default", mode=mode)
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    model = (MaskablePPO if maskable else PPO)(
        "MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0,
        policy_kwargs={"net_arch": [16]}, device="cpu")
    write_env_kwargs(folder, env)
    model.learn(64)
    model.save(folder / "model.zip")
    return folder


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory: pytest.TempPathFactory, profile_path: Path) -> Path:
    return _make_run(tmp_path_factory.mktemp("runs") / "ppo" / "QuantSplit-v0_1", profile_path,
                     maskable=False)


def test_ppo_adapter_is_predict_then_the_envs_repair(ppo_run: Path, profile_path: Path,
                                                     requests: list) -> None:
    from stable_baselines3 import PPO

    prof = load_profile(profile_path)
    pol = make_policy(f"ppo:{ppo_run}", prof)
    assert isinstance(pol, PPOPolicy) and pol.batched and pol.name == "ppo"
    plans = pol.decide_batch(requests)
    # independently: SB3's own predict on the encoder's features, decode, system.repair
    model = PPO.load(ppo_run / "model.zip", device="cpu")
    codec = ActionCodec(prof.n_units)
    obs = ObservationEncoder().encode_batch(requests)
    actions, _ = model.predict(obs, deterministic=True)
    n_repaired = 0
    for r, a, plan in zip(requests, actions, plans, strict=True):
        res = repair(prof, r, codec.decode(a))
        n_repaired += res.repaired
        assert plan == res.plan
        assert is_feasible(evaluate_plans(prof, r, [plan]).drop_pp[0], r.eps_pp)
    assert pol.decide(requests[0]) == plans[0]
    assert pol.decide_batch([]) == []
    assert n_repaired > 0          # an untrained policy proposes infeasible plans: repair runs


def test_ppo_run_for_another_model_is_refused(ppo_run: Path) -> None:
    with pytest.raises(QsplitInputError, match="rand6"):
        make_policy(f"ppo:{ppo_run}", random_profile(6, np.random.default_rng(4), name="other"))


@pytest.mark.parametrize(("maskable", "mode"), [(True, "repair"), (False, "penalty")])
def test_ppo_run_decides_as_the_env_steps(tmp_path: Path, profile_path: Path, requests: list,
                                          maskable: bool, mode: str) -> None:
    from sb3_contrib import MaskablePPO
    from stable_baselines3 import PPO

    from envs.quantsplit import QuantSplitEnv

    run = _make_run(tmp_path / "run" / "QuantSplit-v0_1", profile_path, maskable, mode)
    prof = load_profile(profile_path)
    plans = make_policy(f"ppo:{run}", prof).decide_batch(requests)
    model = (MaskablePPO if maskable else PPO).load(run / "model.zip", device="cpu")
    env = QuantSplitEnv(model=str(profile_path), mode=mode)
    infeasible = 0
    for r, plan in zip(requests, plans, strict=True):
        obs, _ = env.reset(options={"request": r})
        kw = {"action_masks": env.action_masks()} if maskable else {}
        a, _ = model.predict(obs, deterministic=True, **kw)
        info = env.step(a)[4]
        assert plan == info["plan"]
        infeasible += info["violation"]
    assert mode == "repair" or infeasible > 0      # penalty mode: infeasible plans stay


def test_bundle_adapter_matches_the_dispatcher(ppo_run: Path, profile_path: Path,
                                               requests: list, tmp_path: Path) -> None:
    from agents.export import export_run
    from runtime import Dispatcher

    out = export_run(ppo_run, tmp_path / "bundle")
    prof = load_profile(profile_path)
    pol = make_policy(f"mine=bundle:{out}", prof)
    assert isinstance(pol, BundlePolicy) and pol.batched and pol.name == "mine"
    assert pol.decide_batch(requests) == Dispatcher.load(out).decide_batch(requests)
    ppo_plans = make_policy(f"ppo:{ppo_run}", prof).decide_batch(requests)
    # the dispatcher without its guards decides as the network does (the untrained network
    # here is often beaten by a trivial plan, which the default guard returns instead)
    bare = Dispatcher.load(out, fallback="none", trivial_guard=False).decide_batch(requests)
    same = np.mean([a == b for a, b in zip(bare, ppo_plans, strict=True)])
    assert same >= 0.95            # float32 torch vs float64 numpy may flip a near-tie


def test_ppo_checkpoint_in_the_spec(ppo_run: Path, profile_path: Path, requests: list) -> None:
    prof = load_profile(profile_path)
    a = make_policy(f"ppo:{ppo_run / 'model.zip'}", prof).decide_batch(requests[:10])
    assert a == make_policy(f"ppo:{ppo_run}", prof).decide_batch(requests[:10])
    with pytest.raises(QsplitInputError, match=r"no best_model\.zip"):
        make_policy(f"ppo:{ppo_run / 'best_model.zip'}", prof)
