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
import ast
import json
import re
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from system.atomic import atomic_write_text
from system.errors import QsplitInputError, check_keys

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
        """Strict: unknown keys are refused."""
        names = [f.name for f in fields(cls)]
        d = check_keys(where, d or {}, [], names)
        return cls(**d)


def load_config(conf_file: str | Path, env_id: str) -> tuple[dict[str, Any], QsplitOptions]:
    """The env's hyperparameters (rl-zoo schema) and its qsplit options."""
    p = Path(conf_file)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QsplitInputError(f"-conf: cannot read {p}: {exc.strerror or exc}") from None
    if not isinstance(data, dict) or env_id not in data:
        known = sorted(k for k in (data or {}) if k != "qsplit")
        raise QsplitInputError(f"-conf {p}: no hyperparameters for {env_id!r}; has {known}")
    hyper = dict(data[env_id])
    q = (data.get("qsplit") or {}).get(env_id, {})
    return hyper, QsplitOptions.from_dict(q, f"{p.name}: qsplit.{env_id}")


_SAFE_NAMES: dict[str, Any] = {}


def _safe_names() -> dict[str, Any]:
    if not _SAFE_NAMES:
        from torch import nn

        _SAFE_NAMES.update({"nn.Tanh": nn.Tanh, "nn.ReLU": nn.ReLU, "nn.ELU": nn.ELU,
                            "nn.LeakyReLU": nn.LeakyReLU, "nn.GELU": nn.GELU,
                            "nn.SiLU": nn.SiLU, "True": True, "False": False, "None": None})
    return _SAFE_NAMES


def safe_eval(text: str, where: str) -> Any:
    """Evaluate a config expression such as ``dict(net_arch=[64, 64], activation_fn=nn.Tanh)``.

    rl_zoo3 ``eval``s these strings; here only literals, ``dict(...)`` calls and a short
    list of torch activation names are allowed, so a config cannot run code.
    """
    def conv(node: ast.AST) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "dict" and not node.args:
            return {kw.arg: conv(kw.value) for kw in node.keywords}
        if isinstance(node, (ast.Attribute, ast.Name)):
            name = ast.unparse(node)
            if name in _safe_names():
                return _safe_names()[name]
            raise QsplitInputError(f"{where}: name {name!r} is not allowed in a config")
        if isinstance(node, ast.Dict):
            return {conv(k): conv(v) for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [conv(e) for e in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -conv(node.operand)
        if isinstance(node, ast.Constant):
            return node.value
        raise QsplitInputError(f"{where}: unsupported expression {ast.unparse(node)!r}")

    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        raise QsplitInputError(f"{where}: cannot parse {text!r}") from None
    return conv(tree.body)


def parse_kv(items: list[str] | None, where: str) -> dict[str, Any]:
    """rl-zoo's ``key:value`` arguments; a value that is not a literal is taken as a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        if ":" not in item:
            raise QsplitInputError(f"{where}: expected key:value, got {item!r}")
        key, value = item.split(":", 1)
        try:
            out[key] = safe_eval(value, f"{where} {key}")
        except QsplitInputError:
            out[key] = value
    return out


def prepare_hyperparams(hyper: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split rl-zoo keys (n_envs, n_timesteps, env_kwargs) from the algorithm's kwargs."""
    from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

    h = dict(hyper)
    meta = {"n_envs": int(h.pop("n_envs", 1)), "n_timesteps": int(float(h.pop("n_timesteps"))),
            "env_kwargs": dict(h.pop("env_kwargs", {}) or {})}
    for bad in ("normalize", "frame_stack", "env_wrapper", "vec_env_wrapper", "callback"):
        if bad in h:
            raise QsplitInputError(
                f"hyperparameter {bad!r} is not supported by train.py (observations are "
                f"normalised by the encoder; use rl_zoo3 for wrappers)")
    for key in ("learning_rate", "clip_range", "clip_range_vf"):
        v = h.get(key)
        if isinstance(v, str) and v.startswith("lin_"):
            h[key] = LinearSchedule(float(v[4:]), 0.0, 1.0)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0:
            h[key] = ConstantSchedule(float(v))
    if isinstance(h.get("policy_kwargs"), str):
        h["policy_kwargs"] = safe_eval(h["policy_kwargs"], "policy_kwargs")
    for key in ("batch_size", "n_steps", "n_epochs"):
        if key in h:
            h[key] = int(h[key])
    return h, meta


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
        "-i", "--trained-agent", help="model .zip to resume from"))
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


def train(args: TrainArgs) -> Path:
    """Run one training as ``args`` says; returns the run folder."""
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
    from envs.pool import build_pool
    from envs.quantsplit import QuantSplitEnv

    if args.algo not in ALGOS:
        raise QsplitInputError(f"--algo: {args.algo!r} is not one of {list(ALGOS)}")
    algo_cls = _algo_class(args.algo)
    hyper_raw, opts = load_config(args.conf_file, args.env)
    hyper_raw.update(args.hyperparams or {})
    hyper, meta = prepare_hyperparams(hyper_raw)
    n_timesteps = args.n_timesteps if args.n_timesteps > 0 else meta["n_timesteps"]
    env_kwargs = {**meta["env_kwargs"], **(args.env_kwargs or {})}
    seed = args.seed if args.seed >= 0 else int(np.random.SeedSequence().generate_state(1)[0])
    # One thread by default: the nets are small, and on a busy 2-core machine two torch
    # threads were measured 30x slower per step than one (they spin waiting for each other).
    torch.set_num_threads(args.num_threads if args.num_threads > 0 else 1)
    set_random_seed(seed)

    run = new_run_dir(args.log_folder, args.algo, args.env)
    tb_dir = (Path(args.tensorboard_log) / run.name) if args.tensorboard_log else run / "tb"
    atomic_write_text(run / "command.txt", shlex.join(args.argv or sys.argv) + "\n")
    config = {"algo": args.algo, "env_id": args.env, "seed": seed, "n_timesteps": n_timesteps,
              "conf_file": str(args.conf_file), "hyperparams": _yamlable(hyper_raw),
              "env_kwargs": _yamlable(env_kwargs), "qsplit": asdict(opts),
              "trained_agent": args.trained_agent or None}
    atomic_write_text(run / "config.yml", yaml.safe_dump(config, sort_keys=False))
    say = print if args.verbose else (lambda *a, **k: None)
    say(f"[qsplit] run folder {run}", flush=True)

    # The env (once, to resolve and record its arguments), then the pools it needs.
    probe = QuantSplitEnv(**env_kwargs)
    write_env_kwargs(run, probe)
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
    vec = make_vec_env(args.env, n_envs=meta["n_envs"], seed=seed, vec_env_cls=vec_cls,
                       env_kwargs={"render_mode": None, **env_kwargs, "pool": train_pool})
    if args.trained_agent:
        model = algo_cls.load(args.trained_agent, env=vec, device="cpu", seed=seed)
        say(f"[qsplit] resumed from {args.trained_agent} at {model.num_timesteps} steps")
    else:
        model = algo_cls(env=vec, seed=seed, verbose=0, device="cpu", **hyper)
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
                                    verbose=args.verbose)]
    if args.save_freq > 0:
        callbacks.append(AtomicCheckpointCallback(args.save_freq, run / "checkpoints"))
    model.learn(total_timesteps=n_timesteps, callback=callbacks, progress_bar=args.progress,
                reset_num_timesteps=not args.trained_agent)
    save_model_atomic(model, run / "model.zip")
    vec.close()
    say(f"[qsplit] saved {run / 'model.zip'}", flush=True)
    return run


def _algo_class(algo: str) -> type:
    if algo == "ppo_mask":
        from sb3_contrib import MaskablePPO

        return MaskablePPO
    from stable_baselines3 import PPO

    return PPO
