"""Train a trace policy for QuantSplitTrace-v0: imitate the clairvoyant, then PPO on the
realised reward.

    python -m agents.trace_train --model resnet18 --out runs/trace/resnet18

The config (``configs/ppo_trace.yml``) is keyed by env id in rl-baselines3-zoo's schema; its
``qsplit:`` section names the training and held-out routes and the pools. The run folder is
published whole (atomically) and holds ``config.yml``, ``command.txt``, ``model.zip`` (the
PPO policy), ``bc_model.zip`` (after imitation only), ``evaluations.json`` (held-out regret
on the training routes after each phase), ``bc.json`` and ``tb/`` (TensorBoard).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.hyperparams import HYPERPARAMS, check_value
from system.atomic import atomic_write_text, publish_folder, staging_folder
from system.bits import DEFAULT_BITS
from system.errors import QsplitInputError, check_keys, cli_main, shown
from system.loaders import parse_yaml, read_text

ENV_ID = "QuantSplitTrace-v0"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONF = REPO / "configs" / "ppo_trace.yml"


@dataclass(frozen=True)
class TraceOptions:
    """The ``qsplit:`` section for QuantSplitTrace-v0."""

    train_routes: tuple[str, ...]
    test_routes: tuple[str, ...]
    scenario: str = "default"
    train_pool: int = 12000
    eval_pool: int = 1000
    eval_seed: int = 20261207
    bc_epochs: int = 40
    bc_batch_size: int = 256
    bc_lr: float = 1e-3
    ce_input: bool = False         # the observation ends with the CE optimizer's plan


def load_trace_config(path: str | Path) -> tuple[dict[str, Any], TraceOptions]:
    """The env-id mapping (PPO's arguments) and the qsplit options of a trace config."""
    p = Path(path)
    doc = parse_yaml(read_text(p, "config"), f"config {p.name}")
    if not isinstance(doc, dict) or ENV_ID not in doc:
        raise QsplitInputError(f"{p}: expected a mapping with key {ENV_ID!r}")
    section = doc.get("qsplit") or {}
    if not isinstance(section, dict):
        raise QsplitInputError(f"{p}: qsplit: expected a mapping keyed by env id")
    where = f"{p}: qsplit.{ENV_ID}"
    names = list(TraceOptions.__dataclass_fields__)
    q = dict(check_keys(where, section.get(ENV_ID), ["train_routes", "test_routes"], names))
    for k, v in q.items():
        at = f"{where}.{k}"
        if k in HYPERPARAMS:                 # the pools' and imitation's knobs: train.py's rules
            q[k] = check_value(k, v, at)
        elif k.endswith("_routes"):
            if not isinstance(v, list) or not v or \
                    not all(isinstance(r, str) and r for r in v):
                raise QsplitInputError(f"{at}: expected a non-empty list of FOLDER or "
                                       f"FOLDER:NAME[,NAME] strings, got {shown(v)}")
            q[k] = tuple(v)
        elif not isinstance(v, type(getattr(TraceOptions, k))):   # scenario, ce_input
            raise QsplitInputError(f"{at}: expected a {type(getattr(TraceOptions, k)).__name__},"
                                   f" got {shown(v)}")
    return dict(doc[ENV_ID]), TraceOptions(**q)


def run_ce_input(run: str | Path) -> bool:
    """Whether a run folder's (or a published policy's) policy takes the CE optimizer's plan
    as input: its config.yml's ``qsplit.ce_input``; False when it has no config."""
    cfg = Path(run) / "config.yml"
    if not cfg.is_file():
        return False
    d = parse_yaml(read_text(cfg, "run config"), str(cfg))
    return bool(isinstance(d, dict) and (d.get("qsplit") or {}).get("ce_input", False))


def pools(profile: Any, opts: TraceOptions, seed: int, cache: Path | None,
          which: str = "train") -> Any:
    """The training pool (``seed``), the held-out pool on the training routes
    (``eval_seed``) or the test pool on the held-out routes (``which``)."""
    from envs.trace_pool import build_trace_pool
    from system.linktrace import load_routes
    from system.scenario import load_scenario

    routes = load_routes(opts.test_routes if which == "test" else opts.train_routes, REPO)
    n = {"train": opts.train_pool, "eval": opts.eval_pool, "test": opts.eval_pool}[which]
    s = {"train": seed, "eval": opts.eval_seed, "test": opts.eval_seed + 1}[which]
    return build_trace_pool(profile, load_scenario(opts.scenario), routes, n, s,
                            cache_dir=cache, ce_input=opts.ce_input)


def _held_out(model: Any, profile: Any, pool: Any) -> dict[str, float]:
    from agents.trace_eval import policy_plans, summary
    from envs.trace_pool import realise_plans

    c, _, m = realise_plans(profile, pool.sit, policy_plans(model, profile, pool.sit, pool.obs))
    return summary(c, pool.clair_cost, m)


def train(model_name: str, out: Path, conf: Path = DEFAULT_CONF, seed: int = 0,
          n_timesteps: int = 0, cache: Path | None = None, verbose: bool = True) -> Path:
    """One training (see the module doc); returns the published run folder."""
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed

    import envs  # noqa: F401  (registers QuantSplitTrace-v0)
    from agents.bc import behaviour_clone
    from agents.callbacks import save_model_atomic
    from agents.hyperparams import prepare_hyperparams
    from envs.trace_pool import TracePool
    from system.profiles import load_profile

    say = print if verbose else (lambda *a, **k: None)
    hyper_raw, opts = load_trace_config(conf)
    hyper, meta = prepare_hyperparams(dict(hyper_raw), None, f"{conf}: {ENV_ID}")
    steps = n_timesteps or int(meta["n_timesteps"])
    torch.set_num_threads(1)
    set_random_seed(seed)
    profile = load_profile(model_name)
    t0 = time.perf_counter()
    train_pool: TracePool = pools(profile, opts, seed, cache, "train")
    eval_pool: TracePool = pools(profile, opts, seed, cache, "eval")
    say(f"[trace] pools {len(train_pool)} + {len(eval_pool)} in {time.perf_counter() - t0:.0f} s",
        flush=True)
    kw = {**meta["env_kwargs"], "model": profile, "pool": train_pool, "render_mode": None}
    vec = make_vec_env(ENV_ID, n_envs=meta["n_envs"], seed=seed, env_kwargs=kw)
    model = PPO(env=vec, seed=seed, verbose=0, device="cpu", **hyper)
    tmp = staging_folder(out)
    model.set_logger(configure(str(tmp / "tb"), ["tensorboard", "csv"]))
    atomic_write_text(tmp / "command.txt", shlex.join(sys.argv) + "\n")
    atomic_write_text(tmp / "config.yml", yaml.safe_dump(
        {"env_id": ENV_ID, "model": profile.name, "profile_sha256": profile.sha256(),
         "seed": seed, "n_timesteps": steps, "hyperparams": hyper_raw,
         "qsplit": {k: list(v) if isinstance(v, tuple) else v
                    for k, v in opts.__dict__.items()}}, sort_keys=False))
    evals: dict[str, Any] = {"ce_optimal": {"regret_mean": float(np.mean(
        eval_pool.ce_cost / eval_pool.clair_cost - 1)), "miss_rate": float(np.mean(
            eval_pool.ce_miss))}}
    t0 = time.perf_counter()
    losses = behaviour_clone(model.policy, train_pool.obs, train_pool.clair_action,
                             profile.n_units, len(DEFAULT_BITS),
                             epochs=opts.bc_epochs, batch_size=opts.bc_batch_size,
                             lr=opts.bc_lr, seed=seed)
    atomic_write_text(tmp / "bc.json", json.dumps({"losses": losses, "wall_s": round(
        time.perf_counter() - t0, 1)}, indent=1))
    save_model_atomic(model, tmp / "bc_model.zip")
    evals["imitation"] = _held_out(model, profile, eval_pool)
    say(f"[trace] imitation: {evals['imitation']}", flush=True)
    model.learn(total_timesteps=steps)
    save_model_atomic(model, tmp / "model.zip")
    evals["ppo"] = _held_out(model, profile, eval_pool)
    say(f"[trace] ppo: {evals['ppo']}", flush=True)
    atomic_write_text(tmp / "evaluations.json", json.dumps(evals, indent=1))
    vec.close()
    publish_folder(tmp, out, replace=lambda _p: False, what="run folder")
    return out


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(prog="python -m agents.trace_train", description=__doc__)
    ap.add_argument("--model", default="resnet18", help="shipped profile name")
    ap.add_argument("--out", required=True, help="run folder to publish (must not exist)")
    ap.add_argument("--conf", default=str(DEFAULT_CONF))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-n", "--n-timesteps", type=int, default=0, help="PPO steps (0: config)")
    ap.add_argument("--cache", default="runs/pools", help="folder for solved pools")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if out.exists():
        raise QsplitInputError(f"--out: {out} exists; give a new folder")
    print(train(a.model, out, Path(a.conf), a.seed, a.n_timesteps, Path(a.cache)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
