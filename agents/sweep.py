"""Train many policies at once on Ray Tune: one trial per (model, seed, configuration).

    python -m agents.sweep --models all --seeds 2                 # the default config, every model
    python -m agents.sweep --models resnet18 --search --num-samples 12   # Optuna through Tune
    python -m agents.sweep --address ray://head:10001 ...        # join an existing cluster
    python -m agents.sweep --out runs/sweep --resume              # continue an interrupted sweep

Why Ray: a training run takes minutes on 2 cores, and a sweep over models, seeds and
hyperparameters outgrows one machine; Tune schedules the trials on whatever cluster
``--address`` names (default: a local one sized to this machine), and resumes.

Each trial is the project's own training (:func:`agents.train_lib.train`) with its usual run
folder, under ``<out>/runs/<trial>/``: its config (the base config with the trial's values, a
readable YAML), command, model, checkpoints and TensorBoard. A trial reports the held-out
regret and violations after every periodic evaluation, then its policy's figures on
``--held-out`` fresh test requests (:func:`agents.evaluation.held_out_figures`). The best
trial per model is the lowest test mean regret among those without violations.
``<out>/results.csv`` and ``<out>/results.md`` list every trial (written atomically).
The search space (``--search``): PPO learning rate, actor width, imitation data (requests
solved for the warm start) and imitation epochs; the base config's values are tried first.
"""

from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from system.atomic import atomic_write_text
from system.errors import QsplitInputError, cli_main
from system.loaders import parse_yaml, read_text
from system.profiles import builtin_profile_names

ENV_ID = "QuantSplit-v0"
#: What ``--search`` explores, in the trial config's names (see :func:`_trial_config_file`).
SEARCH_KEYS = ("learning_rate", "width", "train_pool", "bc_epochs")
#: Result columns, in order.
METRICS = ("test_regret_mean", "test_regret_p95", "test_violations", "val_regret_mean", "steps",
           "wall_s")
COLUMNS = ("model", "seed", *SEARCH_KEYS, *METRICS, "best", "run")


#: The actor's layers in a config's ``policy_kwargs``: what the width search rewrites.
_PI = re.compile(r"pi\s*=\s*\[[^\]]*\]")


def _base_values(conf_file: str) -> dict[str, Any]:
    """The searched knobs' values in the base config (the default configuration), read and
    checked by the trainer's own reader; ``width`` is the first actor layer of
    ``policy_kwargs``' ``net_arch=dict(pi=[...])`` (None without one: then no width search)."""
    import inspect

    from stable_baselines3 import PPO

    from agents.train_lib import load_config, safe_eval

    hyper, opts = load_config(conf_file, ENV_ID)
    width = None
    if "policy_kwargs" in hyper:
        arch = safe_eval(str(hyper["policy_kwargs"]), f"{conf_file}: policy_kwargs").get("net_arch")
        if isinstance(arch, dict) and arch.get("pi") and _PI.search(str(hyper["policy_kwargs"])):
            width = int(arch["pi"][0])
    lr = hyper.get("learning_rate", inspect.signature(PPO).parameters["learning_rate"].default)
    return {"learning_rate": float(lr), "width": width, "train_pool": opts.train_pool,
            "bc_epochs": opts.bc_epochs}


def _trial_config_file(conf: dict, values: dict[str, Any], path: Path) -> Path:
    """Write the base config with a trial's values applied; the run folder keeps a copy. A
    width w other than the base's makes the actor [w, w/2]; the critic and the activation
    stay the base's (the base's own width leaves its actor as it is)."""
    c = yaml.safe_load(yaml.safe_dump(conf))
    env = c[ENV_ID]
    env["learning_rate"] = float(values["learning_rate"])
    if values["width"] is not None:
        w, text = int(values["width"]), str(env["policy_kwargs"])
        m = _PI.search(text)
        if m is not None and ast.literal_eval(m.group(0).split("=", 1)[1])[0] != w:
            env["policy_kwargs"] = _PI.sub(f"pi=[{w}, {max(w // 2, 16)}]", text, count=1)
    q = c.setdefault("qsplit", {}).setdefault(ENV_ID, {})
    q["train_pool"] = int(values["train_pool"])
    q["bc_epochs"] = int(values["bc_epochs"])
    q["pool_cache"] = str(path.parent.parent.parent / "pools")   # <out>/pools: shared by trials
    # one process per trial: Tune runs trials side by side, and a fork inside its worker
    # (which holds threads) can deadlock the child
    q["pool_workers"] = 1
    atomic_write_text(path, yaml.safe_dump(c, sort_keys=False))
    return path


def run_trial(config: dict[str, Any]) -> dict[str, Any]:
    """One trial: train, reporting each held-out evaluation to Tune, then test the policy."""
    from ray import tune

    from agents.evaluation import held_out_figures
    from agents.train_lib import TrainArgs, train

    model, seed, tag = config["model"], int(config["seed"]), config["tag"]
    values = {k: config[k] for k in SEARCH_KEYS}
    trial_dir = Path(config["out"]) / "runs" / f"{tag}_{tune.get_context().get_trial_id()}"
    trial_dir.mkdir(parents=True, exist_ok=True)
    conf_file = _trial_config_file(config["base"], values, trial_dir / "config.yml")
    last: dict[str, Any] = {}

    def on_eval(row: dict[str, Any]) -> None:
        last.update(row)
        tune.report({"val_regret_mean": row["regret_mean"], "val_violations": row["violations"],
                     "steps": row["steps"], "done": False})

    t0 = time.perf_counter()
    argv = ("python -m agents.sweep", f"--model {model}", f"--seed {seed}",
            *(f"{k}={values[k]}" for k in SEARCH_KEYS))
    run = train(TrainArgs(algo="ppo", env=ENV_ID, seed=seed, conf_file=str(conf_file),
                          n_timesteps=int(config["n_timesteps"]),
                          env_kwargs={"model": model, "scenario": config["scenario"]},
                          log_folder=str(trial_dir), verbose=0, argv=argv), on_eval=on_eval)
    wall_s = time.perf_counter() - t0
    m = held_out_figures(run, model, config["scenario"], int(config["held_out"]), "best",
                         Path(config["out"]) / "pools", workers=1)
    final = {"test_regret_mean": float(m["regret_mean"]), "test_regret_p95": float(m["regret_p95"]),
             "test_violations": int(m["violations"]), "val_regret_mean": last.get("regret_mean"),
             "steps": last.get("steps", 0), "wall_s": round(wall_s, 1), "run": str(run),
             "done": True}
    atomic_write_text(run / "test.json", json.dumps(     # what agents.publish --metrics ships
        {"model": model, "seed": seed, **values, "held_out": int(config["held_out"]),
         **{k: v for k, v in final.items() if k not in ("done", "run")}}, indent=1) + "\n")
    tune.report(final)
    return final


def _param_space(models: list[str], seeds: int, base: dict[str, Any], conf: dict,
                 a: argparse.Namespace) -> dict[str, Any]:
    from ray import tune

    common = {"base": conf, "out": str(a.out.resolve()), "scenario": a.scenario,
              "held_out": a.held_out, "n_timesteps": a.n_timesteps}
    if a.search:
        def around(key: str, values: list[int]) -> Any:     # the base value is a choice too
            return tune.choice(sorted({*values, base[key]}))

        lr = base["learning_rate"]
        return {**common, "model": models[0], "seed": 0, "tag": f"{models[0]}_search",
                "learning_rate": tune.loguniform(min(3e-5, lr), max(1e-3, lr)),
                "width": around("width", [128, 256, 512]),
                "train_pool": around("train_pool", [20000, 40000, 80000]),
                "bc_epochs": around("bc_epochs", [20, 40, 60])}
    grid = [{"model": m, "seed": s, "tag": f"{m}_s{s}", **base} for m in models for s in range(seeds)]
    return {**common, "trial": tune.grid_search(grid)}


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    """A grid trial's config holds its (model, seed, values) under ``trial``."""
    return {**{k: v for k, v in config.items() if k != "trial"}, **config.get("trial", {})}


def _trainable(config: dict[str, Any]) -> dict[str, Any]:
    return run_trial(_flatten(config))


def results_rows(result_grid: Any) -> list[dict[str, Any]]:
    """One row per finished trial, ``best`` marked per model (no violations, least test regret)."""
    rows = []
    for r in result_grid:
        m = r.metrics or {}
        if not m.get("done"):
            continue
        c = _flatten(r.config)
        rows.append({"model": c["model"], "seed": c["seed"], **{k: c[k] for k in SEARCH_KEYS},
                     **{k: m.get(k) for k in METRICS}, "best": False, "run": m.get("run")})
    for model in {r["model"] for r in rows}:
        ok = [r for r in rows if r["model"] == model and r["test_violations"] == 0]
        if ok:
            min(ok, key=lambda r: r["test_regret_mean"])["best"] = True
    return sorted(rows, key=lambda r: (r["model"], r["test_regret_mean"]))


def write_results(rows: list[dict[str, Any]], out: Path) -> tuple[Path, Path]:
    """results.csv and results.md (regrets in %), each written atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "results.csv", buf.getvalue())
    head = ["model", "seed", "lr", "width", "imitation requests", "epochs", "test regret mean",
            "p95", "violations", "wall s", "best"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['learning_rate']:.2e} | {r['width']} | "
            f"{r['train_pool']} | {r['bc_epochs']} | {100 * r['test_regret_mean']:.3f}% | "
            f"{100 * r['test_regret_p95']:.3f}% | {r['test_violations']} | {r['wall_s']} | "
            f"{'yes' if r['best'] else ''} |")
    atomic_write_text(out / "results.md", "\n".join(lines) + "\n")
    return out / "results.csv", out / "results.md"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m agents.sweep", description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["resnet18"],
                   help="profile names, or 'all' (every shipped profile)")
    p.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per model and configuration")
    p.add_argument("--search", action="store_true",
                   help="search lr, width, imitation data and epochs (Optuna; one model)")
    p.add_argument("--num-samples", type=int, default=8, help="trials of --search")
    p.add_argument("-conf", "--conf-file", default="configs/ppo.yml", help="base config (rl-zoo schema)")
    p.add_argument("--scenario", default="default")
    p.add_argument("-n", "--n-timesteps", type=int, default=-1,
                   help="PPO env steps per trial (default: the config's)")
    p.add_argument("--held-out", type=int, default=10_000, help="test requests per trial")
    p.add_argument("--out", type=Path, default=Path("runs/sweep"), help="sweep folder")
    p.add_argument("--address", default=None,
                   help="Ray cluster to join (default: start a local one sized to this machine)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0)
    p.add_argument("--resume", action="store_true", help="continue the sweep in --out")
    return p


def _check(a: argparse.Namespace, base: dict[str, Any]) -> list[str]:
    known = builtin_profile_names()
    models = known if a.models == ["all"] else a.models
    for m in models:
        if m not in known:
            raise QsplitInputError(f"--models: unknown profile {m!r}; known: {known} or 'all'")
    for flag, v, lo in (("--seeds", a.seeds, 1), ("--num-samples", a.num_samples, 1),
                        ("--held-out", a.held_out, 1)):
        if not lo <= v <= 1_000_000:
            raise QsplitInputError(f"{flag}: {v} is outside the allowed range [{lo}, 1000000]")
    if not 0 < a.cpus_per_trial <= 1024:
        raise QsplitInputError(f"--cpus-per-trial: {a.cpus_per_trial} is outside (0, 1024] CPUs")
    if a.search and len(models) != 1:
        raise QsplitInputError("--search: give one model (--models NAME); a search per model")
    if a.search and base["width"] is None:
        raise QsplitInputError(f"--search: {a.conf_file} has no policy_kwargs with "
                               "net_arch=dict(pi=[...]); the width search rewrites that list")
    if a.resume and not (a.out / "ray").is_dir():
        raise QsplitInputError(f"--resume: no sweep in {a.out} (expected {a.out / 'ray'})")
    if a.out.exists() and not a.resume:
        if not a.out.is_dir():
            raise QsplitInputError(f"--out: {a.out} is a file, not a sweep folder")
        if any(a.out.iterdir()):
            raise QsplitInputError(f"--out: {a.out} is not empty; give a new folder, or --resume "
                                   "to continue the sweep in it")
    return models


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Run (or resume) a sweep, write the results table, print it."""
    a = _parser().parse_args(argv)
    base = _base_values(a.conf_file)
    models = _check(a, base)
    conf = parse_yaml(read_text(Path(a.conf_file), "--conf-file"), f"--conf-file {a.conf_file}")

    import ray
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ray.init(address=a.address, num_cpus=None if a.address else os.cpu_count(),
             include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    trainable = tune.with_resources(_trainable, {"cpu": a.cpus_per_trial})
    storage = str((a.out / "ray").resolve())
    if a.resume:
        tuner = tune.Tuner.restore(storage + "/sweep", trainable=trainable, resume_errored=True)
    else:
        search = OptunaSearch(points_to_evaluate=[base], seed=0) if a.search else None
        tuner = tune.Tuner(
            trainable, param_space=_param_space(models, a.seeds, base, conf, a),
            tune_config=tune.TuneConfig(metric="val_regret_mean", mode="min", search_alg=search,
                                        num_samples=a.num_samples if a.search else 1),
            run_config=tune.RunConfig(name="sweep", storage_path=storage, verbose=0))
    grid = tuner.fit()
    rows = results_rows(grid)
    csv_path, md_path = write_results(rows, a.out)
    print(md_path.read_text(), end="")
    print(f"wrote {csv_path} and {md_path}")
    ray.shutdown()
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
