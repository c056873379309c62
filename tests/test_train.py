"""Tests of train.py and agents/: smoke runs (train.py and rl_zoo3), run folder, resume,
seeding, config parsing, imitation warm start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from agents.train_lib import TrainArgs, parse_kv, parse_train_args, safe_eval, train, train_parser
from envs.quantsplit import QuantSplitEnv
from system.errors import QsplitInputError
from system.profiles import builtin_profile_names
from system.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
TINY = {
    "QuantSplit-v0": {
        "env_kwargs": {"model": "toy3", "scenario": "default"},
        "n_envs": 2, "n_timesteps": 256, "policy": "MlpPolicy", "n_steps": 64,
        "batch_size": 64, "n_epochs": 2, "gamma": 0.0, "learning_rate": 3e-4,
        "policy_kwargs": "dict(net_arch=dict(pi=[32, 32], vf=[32, 32]))",
    },
    "qsplit": {"QuantSplit-v0": {"train_pool": 300, "eval_pool": 100, "eval_freq": 128,
                                 "bc_epochs": 2, "pool_workers": 1}},
}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture()
def tiny_conf(tmp_path: Path) -> Path:
    p = tmp_path / "tiny.yml"
    p.write_text(yaml.safe_dump(TINY))
    return p


def test_train_py_smoke_run_and_resume(tmp_path: Path, tiny_conf: Path) -> None:
    cmd = [sys.executable, str(ROOT / "train.py"), "--algo", "ppo", "--env", "QuantSplit-v0",
           "-n", "256", "--seed", "3", "-conf", str(tiny_conf), "-f", str(tmp_path / "logs"),
           "--save-freq", "128", "-P"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "logs" / "ppo" / "QuantSplit-v0_1"
    for name in ("config.yml", "command.txt", "model.zip", "best_model.zip", "env_kwargs.json",
                 "evaluations.json", "bc.json"):
        assert (run / name).is_file(), name
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "model_128_steps.zip", "model_256_steps.zip"]
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert not list(run.rglob(".*.tmp*"))
    cfg = yaml.safe_load((run / "config.yml").read_text())
    assert cfg["seed"] == 3 and cfg["env_kwargs"]["model"] == "toy3"
    kw = json.loads((run / "env_kwargs.json").read_text())
    rebuilt = QuantSplitEnv(**{k: v for k, v in kw.items() if k != "profile_sha256"})
    assert rebuilt.resolved_kwargs() == kw
    assert kw["model"] == "toy3" and kw["profile_sha256"] == rebuilt.profile.sha256()
    assert kw["scenario"] == load_scenario("default").to_dict()
    assert "train.py" in (run / "command.txt").read_text()
    curve = json.loads((run / "evaluations.json").read_text())
    assert curve[0]["steps"] == 0 and curve[-1]["steps"] >= 256
    assert all(r["violations"] == 0 for r in curve)
    tb = (run / "tb" / "progress.csv").read_text().splitlines()[0]
    for key in ("qsplit/regret_mean", "qsplit/repair_rate", "qsplit/mean_latency_s",
                "qsplit/mean_energy_j", "qsplit/mean_payload_reduction"):
        assert key in tb

    # publishing keeps the policy, drops the optimizer state, and loads back
    from stable_baselines3 import PPO

    from agents.publish import publish

    dest = publish(run, "toy3", dest=tmp_path / "policy", metrics={"regret_mean": 0.0})
    for name in ("model.zip", "env_kwargs.json", "config.yml", "command.txt", "metrics.json"):
        assert (dest / name).is_file(), name
    assert (dest / "model.zip").stat().st_size < (run / "best_model.zip").stat().st_size
    obs = np.random.default_rng(0).uniform(-1, 1, (32, 21)).astype(np.float32)
    a1, _ = PPO.load(run / "best_model.zip", device="cpu").predict(obs, deterministic=True)
    a2, _ = PPO.load(dest / "model.zip", device="cpu").predict(obs, deterministic=True)
    np.testing.assert_array_equal(a1, a2)

    resume = [*cmd[:cmd.index("-n")], "-n", "128", "-conf", str(tiny_conf), "-f",
              str(tmp_path / "logs"), "-i", str(run / "checkpoints" / "model_128_steps.zip")]
    out = subprocess.run(resume, capture_output=True, text=True, env=_env(), timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    run2 = tmp_path / "logs" / "ppo" / "QuantSplit-v0_2"
    curve2 = json.loads((run2 / "evaluations.json").read_text())
    assert curve2[0]["steps"] == 128 and curve2[-1]["steps"] >= 256
    assert yaml.safe_load((run2 / "config.yml").read_text())["trained_agent"].endswith(
        "model_128_steps.zip")


def test_shipped_policies_load_and_match_their_profiles() -> None:
    from agents.publish import POLICY_ROOT, load_default_model

    shipped = sorted(p.name for p in POLICY_ROOT.iterdir()) if POLICY_ROOT.is_dir() else []
    for name in shipped:
        if name not in builtin_profile_names():
            continue
        model = load_default_model(name)
        assert (POLICY_ROOT / name / "model.zip").stat().st_size < 600_000
        assert model.action_space.nvec[0] >= 2


def test_rl_zoo3_trains_the_env(tmp_path: Path) -> None:
    model = "resnet18" if "resnet18" in builtin_profile_names() else "toy3"
    cmd = [sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "QuantSplit-v0",
           "--gym-packages", "envs", "-conf", str(ROOT / "configs" / "ppo.yml"), "-n", "256",
           "--env-kwargs", f"model:'{model}'", "-params", "n_envs:2", "n_steps:64",
           "batch_size:64", "--eval-freq", "-1", "--save-freq", "-1", "-f",
           str(tmp_path / "zoo"), "--seed", "0", "--num-threads", "1"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert list((tmp_path / "zoo").rglob("QuantSplit-v0.zip"))


def test_ppo_mask_runs(tmp_path: Path, tiny_conf: Path) -> None:
    run = train(TrainArgs(algo="ppo_mask", n_timesteps=128, seed=0, conf_file=str(tiny_conf),
                          log_folder=str(tmp_path), verbose=0))
    assert (run / "model.zip").is_file() and run.parent.name == "ppo_mask"


def test_same_seed_same_policy(tmp_path: Path, tiny_conf: Path) -> None:
    from stable_baselines3 import PPO

    obs = np.random.default_rng(0).uniform(-1, 1, (64, 21)).astype(np.float32)
    outs = []
    for i in range(3):
        run = train(TrainArgs(n_timesteps=128, seed=0 if i < 2 else 1, eval_freq=-1,
                              conf_file=str(tiny_conf), log_folder=str(tmp_path / str(i)),
                              verbose=0))
        model = PPO.load(run / "model.zip", device="cpu")
        dist = model.policy.get_distribution(model.policy.obs_to_tensor(obs)[0])
        outs.append(np.concatenate([d.probs.detach().numpy() for d in dist.distribution], 1))
    np.testing.assert_array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_bad_input_exits_2_with_one_line(tmp_path: Path, tiny_conf: Path) -> None:
    base = [sys.executable, str(ROOT / "train.py"), "-n", "64", "-f", str(tmp_path), "-conf"]
    out = subprocess.run([*base, str(tiny_conf), "--env-kwargs", "model:nosuchnet"],
                         capture_output=True, text=True, env=_env(), timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "unknown profile 'nosuchnet'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    bad = dict(TINY, qsplit={"QuantSplit-v0": {"pool_size": 3}})
    (tmp_path / "bad.yml").write_text(yaml.safe_dump(bad))
    out = subprocess.run([*base, str(tmp_path / "bad.yml")], capture_output=True, text=True,
                         env=_env(), timeout=120, cwd=ROOT)
    assert out.returncode == 2 and "pool_size" in out.stderr


def test_flags_are_generated_from_train_args() -> None:
    assert parse_train_args([]) == TrainArgs(argv=("train.py",))
    argv = ["--algo", "ppo_mask", "-n", "512", "--seed", "4", "-conf", "c.yml",
            "--env-kwargs", "model:toy3", "mode:penalty", "-params", "learning_rate:1e-4",
            "-tb", "tb", "-f", "logs", "-i", "m.zip", "--save-freq", "64", "--eval-freq", "-1",
            "--num-threads", "2", "--vec-env", "subproc", "-P", "--verbose", "0"]
    assert parse_train_args(argv, "x.py") == TrainArgs(
        algo="ppo_mask", n_timesteps=512, seed=4, conf_file="c.yml",
        env_kwargs={"model": "toy3", "mode": "penalty"}, hyperparams={"learning_rate": 1e-4},
        tensorboard_log="tb", log_folder="logs", trained_agent="m.zip", save_freq=64,
        eval_freq=-1, num_threads=2, vec_env="subproc", progress=True, verbose=0,
        argv=("x.py", *argv))
    long_flags = {a.dest: a.option_strings[-1] for a in train_parser()._actions}
    assert long_flags["conf_file"] == "--conf-file" and long_flags["trained_agent"] == "--trained-agent"
    with pytest.raises(SystemExit):
        parse_train_args(["--algo", "dqn"])
    with pytest.raises(QsplitInputError, match="-params"):
        parse_train_args(["-params", "learning_rate"])


def test_config_expressions_are_evaluated_safely() -> None:
    from torch import nn

    v = safe_eval("dict(net_arch=dict(pi=[64, 64]), activation_fn=nn.ReLU, ortho_init=False)",
                  "policy_kwargs")
    assert v == {"net_arch": {"pi": [64, 64]}, "activation_fn": nn.ReLU, "ortho_init": False}
    with pytest.raises(QsplitInputError, match="unsupported expression"):
        safe_eval("__import__('os').system('true')", "policy_kwargs")
    with pytest.raises(QsplitInputError, match="not allowed"):
        safe_eval("dict(activation_fn=os.system)", "policy_kwargs")
    assert parse_kv(["model:'toy3'", "mode:penalty", "penalty:2.0"], "x") == {
        "model": "toy3", "mode": "penalty", "penalty": 2.0}
    with pytest.raises(QsplitInputError, match="key:value"):
        parse_kv(["model"], "--env-kwargs")


def test_shipped_config_matches_the_zoo_schema() -> None:
    from agents.train_lib import load_config, prepare_hyperparams

    hyper, opts = load_config(ROOT / "configs" / "ppo.yml", "QuantSplit-v0")
    kwargs, meta = prepare_hyperparams(hyper)
    assert meta["n_envs"] >= 1 and meta["n_timesteps"] > 0
    assert kwargs["policy"] == "MlpPolicy" and opts.bc_epochs >= 0


def test_imitation_masks_ignored_heads() -> None:
    import torch

    from agents.bc import imitation_loss, used_heads

    L, K = 3, 7
    acts = np.array([[0, 2, 1, 1, 1], [3, 4, 0, 6, 5], [2, 1, 3, 3, 0]])
    m = used_heads(acts, L)
    np.testing.assert_array_equal(m, [[1, 0, 0, 0, 0], [1, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    logits = torch.zeros(3, L + 1 + K + L * K)
    loss = imitation_loss(logits, torch.as_tensor(acts), torch.as_tensor(m), L, K)
    expect = (3 * np.log(L + 1) + (1 + 0 + 3 + 2) * np.log(K)) / 3
    assert float(loss) == pytest.approx(expect, rel=1e-6)
