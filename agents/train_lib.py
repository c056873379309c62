"""The pieces train.py is made of: config, run folder, pools, warm start, PPO, saving.

The config file is rl-baselines3-zoo's schema (``configs/ppo.yml``: one mapping per env id
with ``n_envs``, ``n_timesteps``, ``policy``, ``policy_kwargs`` and the algorithm's keyword
arguments), so ``python -m rl_zoo3.train -conf configs/ppo.yml`` reads the same file. What
only qsplit's trainer knows (request pools, imitation warm start, the held-out regret
evaluation) sits under a top-level ``qsplit:`` key, also keyed by env id, which rl_zoo3
ignores.

Run folder (rl-zoo layout): ``<log-folder>/<algo>/<env_id>_<n>/`` holding ``config.yml``,
``command.txt``, ``model.zip``, ``best_model.zip`` (lowest held-out regret seen),
``env_kwargs.json`` (the env's resolved arguments: profile name and hash, bits, mode, reward
options, scenario, encoder; what export and evaluation rebuild),
``evaluations.json`` (the learning curve), ``bc.json`` (imitation losses), ``checkpoints/``
and ``tb/`` (TensorBoard, scalars under ``qsplit/``). No VecNormalize: observations are
normalised by the encoder's fixed formulas, so no statistics pickle is ever needed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from agents.hyperparams import (
    QSPLIT,
    check_env_kwargs,
    check_section,
    check_seed,
    check_value,
    parse_kv,
    prepare_hyperparams,
    safe_eval,
)
from system.atomic import atomic_write_text
from system.errors import QsplitInputError
from system.loaders import parse_yaml, read_text

__all__ = ["ALGOS", "QsplitOptions", "Start", "TrainArgs", "algo_class", "check_start",
           "load_config", "new_run_dir", "parse_kv", "parse_train_args", "prepare_hyperparams",
           "safe_eval", "train", "train_parser"]

ALGOS = ("ppo", "ppo_mask")


# ----------------------------------------------------------------------------- config

@dataclass
class QsplitOptions:
    """The ``qsplit:`` section of the config (all optional)."""

    train_pool: int = 20000        # requests solved once for the reward and for imitation
    eval_pool: int = 2000          # held-out requests for the periodic regret evaluation
    eval_seed: int = 20240601      # seed of the held-out pool (never a training seed)
    eval_freq: int = 20000         # env steps between regret evaluations (<= 0: start and end)
    bc_epochs: int = 0             # imitation epochs before PPO (0: plain PPO)
    bc_batch_size: int = 256
    bc_lr: float = 1e-3
    bc_eval_every: int = 0         # held-out regret every n imitation epochs (0: never)
    pool_workers: int = 2          # processes that solve the pools
    pool_cache: str = ""           # folder to cache solved pools in ("" = <log-folder>/pools)

    @classmethod
    def from_dict(cls, d: object, where: str) -> QsplitOptions:
        """Strict: unknown keys and values outside :data:`agents.hyperparams.HYPERPARAMS`'s
        ranges are refused."""
        return cls(**check_section(d or {}, (QSPLIT,), lambda k: f"{where}.{k}", where))


def load_config(conf_file: str | Path, env_id: str) -> tuple[dict[str, Any], QsplitOptions]:
    """The env's hyperparameters (rl-zoo schema) and its qsplit options."""
    p = Path(conf_file)
    data = parse_yaml(read_text(p, "-conf"), f"-conf {p.name}")
    if not isinstance(data, dict) or env_id not in data:
        known = sorted(str(k) for k in data if k != "qsplit") if isinstance(data, dict) else []
        raise QsplitInputError(f"-conf {p}: no hyperparameters for {env_id!r}; has {known}")
    hyper, qsplit = data[env_id] or {}, data.get("qsplit") or {}
    for name, value in ((env_id, hyper), ("qsplit", qsplit)):
        if not isinstance(value, dict):
            raise QsplitInputError(f"{p}: {name}: expected a mapping of key: value, got "
                                   f"{type(value).__name__}")
    return dict(hyper), QsplitOptions.from_dict(qsplit.get(env_id), f"{p}: qsplit.{env_id}")


# ----------------------------------------------------------------------------- run folder

def new_run_dir(log_folder: str | Path, algo: str, env_id: str) -> Path:
    """``<log_folder>/<algo>/<env_id>_<n>`` with n one more than the largest there (from 1)."""
    base = Path(log_folder) / algo
    base.mkdir(parents=True, exist_ok=True)
    pat = re.compile(rf"^{re.escape(env_id)}_(\d+)$")
    ids = [int(m.group(1)) for d in base.iterdir() if (m := pat.match(d.name))]
    for n in range(max(ids, default=0) + 1, max(ids, default=0) + 1000):
        run = base / f"{env_id}_{n}"
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
    raise QsplitInputError(f"-f: cannot create a run folder under {base}")


def _yamlable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _yamlable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_yamlable(v) for v in x]
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    if isinstance(x, type):
        return f"{x.__module__}.{x.__qualname__}"
    return repr(x)


# ----------------------------------------------------------------------------- training

def _flag(*flags: str, help: str, **argparse_kw: Any) -> dict[str, Any]:
    """A :class:`TrainArgs` field's command-line flag: names, help, argparse's choices."""
    return {"flags": flags, "help": help, **argparse_kw}


@dataclass
class TrainArgs:
    """train.py's settings; its command line is generated from these fields (:func:`train_parser`).

    Flag spellings are rl-baselines3-zoo's train.py's. A ``key:value`` flag
    (``kv=True``) is parsed by :func:`parse_kv` into a dict.
    """

    algo: str = field(default="ppo", metadata=_flag("--algo", help="RL algorithm", choices=ALGOS))
    env: str = field(default="QuantSplit-v0", metadata=_flag("--env", help="environment id"))
    n_timesteps: int = field(default=-1, metadata=_flag(
        "-n", "--n-timesteps", help="PPO env steps (default: the config's n_timesteps)"))
    seed: int = field(default=-1, metadata=_flag("--seed", help="random seed (< 0: draw one)"))
    conf_file: str = field(default="configs/ppo.yml", metadata=_flag(
        "-conf", "--conf-file", help="hyperparameter YAML (rl-zoo schema)"))
    env_kwargs: dict[str, Any] | None = field(default=None, metadata=_flag(
        "--env-kwargs", kv=True, help="env keyword arguments, key:value (e.g. model:digits_cnn)"))
    hyperparams: dict[str, Any] | None = field(default=None, metadata=_flag(
        "-params", "--hyperparams", kv=True,
        help="override hyperparameters, key:value (e.g. learning_rate:1e-4)"))
    tensorboard_log: str = field(default="", metadata=_flag(
        "-tb", "--tensorboard-log", help="TensorBoard folder (default: <run folder>/tb)"))
    log_folder: str = field(default="runs", metadata=_flag(
        "-f", "--log-folder", help="where run folders go"))
    trained_agent: str = field(default="", metadata=_flag(
        "-i", "--trained-agent",
        help="model .zip to resume from. TRUSTED CODE: stable-baselines3 unpickles it, so a "
             "crafted file runs commands; give only a run folder's model you made yourself"))
    save_freq: int = field(default=-1, metadata=_flag(
        "--save-freq", help="checkpoint every n env steps (< 0: none)"))
    eval_freq: int = field(default=0, metadata=_flag(
        "--eval-freq", help="held-out regret every n env steps (0: the config's; < 0: start/end)"))
    num_threads: int = field(default=-1, metadata=_flag(
        "--num-threads", help="torch threads (<= 0: one, fastest here)"))
    vec_env: str = field(default="dummy", metadata=_flag(
        "--vec-env", help="vectorised env class", choices=("dummy", "subproc")))
    progress: bool = field(default=False, metadata=_flag(
        "-P", "--progress", help="show a progress bar"))
    verbose: int = field(default=1, metadata=_flag(
        "--verbose", help="0: quiet, 1: progress lines, 2: SB3's log too", choices=(0, 1, 2)))
    argv: tuple[str, ...] = ()     # the command as run, for command.txt


def train_parser(description: str = "") -> argparse.ArgumentParser:
    """train.py's argument parser, one flag per :class:`TrainArgs` field that names flags."""
    p = argparse.ArgumentParser(description=description)
    for f in fields(TrainArgs):
        meta = dict(f.metadata)
        if not meta:
            continue
        flags = meta.pop("flags")
        if meta.pop("kv", False):
            meta["nargs"] = "+"
        elif isinstance(f.default, bool):
            meta["action"] = "store_true"
        else:
            meta["type"] = type(f.default)
        p.add_argument(*flags, dest=f.name, default=f.default, **meta)
    return p


def parse_train_args(argv: list[str], prog: str = "train.py", description: str = "") -> TrainArgs:
    """The :class:`TrainArgs` of a command line (``key:value`` flags parsed by :func:`parse_kv`)."""
    values = vars(train_parser(description).parse_args(argv))
    for f in fields(TrainArgs):
        if f.metadata.get("kv") and values[f.name] is not None:
            values[f.name] = parse_kv(values[f.name], f.metadata["flags"][0])
    return TrainArgs(**values, argv=(prog, *argv))


def train(args: TrainArgs, on_eval: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run one training as ``args`` says; returns the run folder. ``on_eval`` receives each
    held-out evaluation's row (a sweep reports it to its scheduler)."""
    import torch
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.utils import set_random_seed
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    import envs  # noqa: F401  (registers QuantSplit-v0)
    from agents.bc import behaviour_clone
    from agents.callbacks import (
        AtomicCheckpointCallback,
        RegretEvalCallback,
        RolloutInfoCallback,
        save_model_atomic,
    )
    from agents.evaluation import evaluate_actions, pool_masks, predict_actions
    from agents.export import write_env_kwargs
    from agents.weights import load_trusted_model
    from envs.pool import build_pool

    start = check_start(args)
    hyper_raw, opts, env_kwargs, seed, probe = (start.hyper_raw, start.opts, start.env_kwargs,
                                                start.seed, start.probe)
    # One thread by default: the nets are small, and on a busy 2-core machine two torch
    # threads were measured 30x slower per step than one (they spin waiting for each other).
    torch.set_num_threads(args.num_threads if args.num_threads > 0 else 1)
    set_random_seed(seed)
    say = print if args.verbose else (lambda *a, **k: None)

    # The pools the env needs, the vectorised env and the model; only then the run folder,
    # so a start that fails leaves none behind.
    profile, scenario, encoder = probe.profile, probe.scenario, probe.encoder
    cache = opts.pool_cache or str(Path(args.log_folder) / "pools")
    t0 = time.perf_counter()
    train_pool = build_pool(profile, scenario, opts.train_pool, seed, encoder,
                            probe.codec.bits, cache, opts.pool_workers)
    eval_pool = build_pool(profile, scenario, opts.eval_pool, opts.eval_seed, encoder,
                           probe.codec.bits, cache, opts.pool_workers)
    say(f"[qsplit] pools: {len(train_pool)} training, {len(eval_pool)} held-out requests "
        f"solved in {time.perf_counter() - t0:.1f} s", flush=True)
    vec_cls = SubprocVecEnv if args.vec_env == "subproc" else DummyVecEnv
    vec = make_vec_env(args.env, n_envs=start.n_envs, seed=seed, vec_env_cls=vec_cls,
                       env_kwargs={"render_mode": None, **env_kwargs, "pool": train_pool})
    if args.trained_agent:
        model = load_trusted_model(args.trained_agent, start.algo_cls, env=vec, seed=seed)
        say(f"[qsplit] resumed from {args.trained_agent} at {model.num_timesteps} steps")
    else:
        model = start.algo_cls(env=vec, seed=seed, verbose=0, device="cpu", **start.hyper)

    run = new_run_dir(args.log_folder, args.algo, args.env)
    tb_dir = (Path(args.tensorboard_log) / run.name) if args.tensorboard_log else run / "tb"
    atomic_write_text(run / "command.txt", shlex.join(args.argv or sys.argv) + "\n")
    config = {"algo": args.algo, "env_id": args.env, "seed": seed,
              "n_timesteps": start.n_timesteps, "conf_file": str(args.conf_file),
              "hyperparams": _yamlable(hyper_raw), "env_kwargs": _yamlable(env_kwargs),
              "qsplit": asdict(opts), "trained_agent": args.trained_agent or None}
    atomic_write_text(run / "config.yml", yaml.safe_dump(config, sort_keys=False))
    write_env_kwargs(run, probe)
    say(f"[qsplit] run folder {run}", flush=True)
    model.set_logger(configure(str(tb_dir), ["tensorboard", "csv"] +
                               (["stdout"] if args.verbose > 1 else [])))

    if opts.bc_epochs > 0 and not args.trained_agent:
        t0 = time.perf_counter()
        curve: list[dict[str, Any]] = []

        def bc_log(ep: int, loss: float) -> None:
            msg = f"[qsplit] imitation epoch {ep + 1}/{opts.bc_epochs}: loss {loss:.4f}"
            if opts.bc_eval_every > 0 and ((ep + 1) % opts.bc_eval_every == 0
                                           or ep + 1 == opts.bc_epochs):
                m = evaluate_actions(profile, eval_pool, predict_actions(
                    model, eval_pool.obs, masks), mode=probe.mode, figures=False)
                curve.append({"epoch": ep + 1, "loss": loss,
                              "wall_s": round(time.perf_counter() - t0, 2),
                              **{k: m[k] for k in ("regret_mean", "regret_p95",
                                                   "repair_rate", "cut_accuracy")}})
                msg += f", held-out mean regret {m['regret_mean']:.4%}"
            say(msg, flush=True)

        masks = pool_masks(profile, eval_pool) if args.algo == "ppo_mask" else None
        losses = behaviour_clone(
            model.policy, train_pool.obs, train_pool.opt_action, profile.n_units,
            len(probe.codec.bits), epochs=opts.bc_epochs, batch_size=opts.bc_batch_size,
            lr=opts.bc_lr, seed=seed, log=bc_log)
        atomic_write_text(run / "bc.json", json.dumps(
            {"epochs": opts.bc_epochs, "samples": len(train_pool), "losses": losses,
             "curve": curve, "wall_s": round(time.perf_counter() - t0, 2)}, indent=1))

    eval_freq = args.eval_freq if args.eval_freq != 0 else opts.eval_freq
    callbacks = [RolloutInfoCallback(),
                 RegretEvalCallback(profile, eval_pool, eval_freq, run,
                                    mode=probe.mode, use_masks=args.algo == "ppo_mask",
                                    verbose=args.verbose, on_eval=on_eval)]
    if args.save_freq > 0:
        callbacks.append(AtomicCheckpointCallback(args.save_freq, run / "checkpoints"))
    model.learn(total_timesteps=start.n_timesteps, callback=callbacks, progress_bar=args.progress,
                reset_num_timesteps=not args.trained_agent)
    save_model_atomic(model, run / "model.zip")
    vec.close()
    say(f"[qsplit] saved {run / 'model.zip'}", flush=True)
    return run


@dataclass
class Start:
    """What a training starts from, every part checked (:func:`check_start`)."""

    algo_cls: type
    hyper_raw: dict[str, Any]       # the config's env-id mapping with -params applied, as given
    hyper: dict[str, Any]           # the algorithm's keyword arguments, checked
    opts: QsplitOptions
    n_envs: int
    n_timesteps: int
    env_kwargs: dict[str, Any]
    seed: int
    probe: Any                      # the env, built once to check and record its arguments


def check_start(args: TrainArgs) -> Start:
    """Check everything a training needs before anything is built or written: the algorithm,
    every hyperparameter (:data:`agents.hyperparams.HYPERPARAMS`), the env's arguments (by
    building the env once) and the ``-i`` model (read without unpickling, see
    :mod:`agents.weights`). Errors name the key as the user wrote it."""
    import inspect

    from agents.weights import read_policy
    from envs.quantsplit import QuantSplitEnv

    if args.algo not in ALGOS:
        raise QsplitInputError(f"--algo: {args.algo!r} is not one of {list(ALGOS)}")
    hyper_raw, opts = load_config(args.conf_file, args.env)
    where = f"{args.conf_file}: {args.env}"
    hyper, meta = prepare_hyperparams(hyper_raw, args.hyperparams, where)
    hyper_raw.update(args.hyperparams or {})
    n_timesteps = check_value("n_timesteps", args.n_timesteps, "-n") if args.n_timesteps > 0 \
        else meta["n_timesteps"]
    if n_timesteps is None:
        raise QsplitInputError(f"{where}.n_timesteps: missing (give it there or with -n)")
    known = [k for k in inspect.signature(QuantSplitEnv).parameters
             if k not in ("pool", "render_mode")]
    env_kwargs = {**check_env_kwargs(meta["env_kwargs"], known, f"{where}.env_kwargs"),
                  **check_env_kwargs(args.env_kwargs, known, "--env-kwargs")}
    seed = check_seed(args.seed)
    seed = seed if seed >= 0 else int(np.random.SeedSequence().generate_state(1)[0])
    try:
        probe = QuantSplitEnv(**env_kwargs)
    except QsplitInputError:
        raise
    except (TypeError, ValueError, AttributeError) as exc:
        raise QsplitInputError(f"env_kwargs: {' '.join(str(exc).split())[:300]}") from None
    if args.trained_agent:
        found = read_policy(args.trained_agent, probe.encoder, probe.codec.nvec,
                            where=f"-i {args.trained_agent}")
        want = "MaskablePPO" if args.algo == "ppo_mask" else "PPO"
        if found.algo != want:
            raise QsplitInputError(f"-i {args.trained_agent}: a {found.algo} model; --algo "
                                   f"{args.algo} resumes a {want} one")
    return Start(algo_cls=algo_class(args.algo), hyper_raw=hyper_raw, hyper=hyper, opts=opts,
                 n_envs=meta["n_envs"], n_timesteps=int(n_timesteps), env_kwargs=env_kwargs,
                 seed=seed, probe=probe)


def algo_class(algo: str) -> type:
    """The stable-baselines3 (or sb3-contrib) class of ``--algo``."""
    if algo == "ppo_mask":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    from stable_baselines3 import PPO

    return PPO
