"""Publish a trained run as a shipped default policy: ``agents/data/policies/<model>/``.

    python -m agents.publish runs/bench/ppo/QuantSplit-v0_1 --model resnet18

copies from the run folder what evaluation, the exporter and the runtime need, small:

* ``model.zip``: the SB3 model (``best_model.zip`` by default) with the optimizer's running
  statistics dropped (a fresh optimizer: they matter only to continue training, and they
  would triple the file);
* ``env_kwargs.json``: the env's resolved arguments (profile and its hash, bits, mode,
  scenario, encoder: what evaluation and the exporter rebuild);
* ``config.yml`` and ``command.txt``: how it was trained; ``metrics.json`` if given.

Publishing loads the run's model with stable-baselines3's full loader (to drop the optimizer
state), which runs code the file holds: publish only runs you trained yourself, as for
``train.py -i``. Reading a shipped policy back (:func:`load_default_model`) unpickles
nothing (:mod:`agents.weights`) and refuses a policy whose profile hash differs from the
shipped profile's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from system.atomic import atomic_write_text
from system.errors import QsplitInputError
from system.loaders import parse_json, read_text

if TYPE_CHECKING:
    from agents.weights import RunModel

POLICY_ROOT = Path(__file__).resolve().parent / "data" / "policies"


def default_policy_dir(model: str) -> Path:
    """Where the shipped default policy of a profile lives."""
    return POLICY_ROOT / model


def publish(run: str | Path, model: str, checkpoint: str = "best_model.zip",
            metrics: dict[str, Any] | None = None, dest: str | Path | None = None) -> Path:
    """Copy a run's policy into ``dest`` (default :func:`default_policy_dir`).

    The run is trusted: its model is loaded by stable-baselines3 (see the module docstring).
    """
    from agents.callbacks import save_model_atomic
    from agents.export import ENV_KWARGS_FILE, load_run_model
    from agents.train_lib import algo_class
    from agents.weights import load_trusted_model

    run = Path(run)
    checked = load_run_model(run, checkpoint)      # the env's record and weights that fit it
    out = Path(dest) if dest is not None else default_policy_dir(model)
    out.mkdir(parents=True, exist_ok=True)
    algo = load_trusted_model(run / checkpoint,
                              algo_class("ppo_mask" if checked.algo == "MaskablePPO" else "ppo"))
    pol = algo.policy
    pol.optimizer = pol.optimizer_class(pol.parameters(), lr=algo.lr_schedule(1.0),
                                        **pol.optimizer_kwargs)
    save_model_atomic(algo, out / "model.zip")
    for name in (ENV_KWARGS_FILE, "config.yml", "command.txt"):
        shutil.copyfile(run / name, out / f".{name}.tmp")
        (out / f".{name}.tmp").replace(out / name)
    if metrics is not None:
        atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    return out


def load_default_model(model: str) -> RunModel:
    """The shipped policy for a profile (read without unpickling), checked against the
    shipped profile's hash."""
    from agents.export import load_run_model, read_env_kwargs
    from system.profiles import load_profile

    d = default_policy_dir(model)
    if not (d / "model.zip").is_file():
        raise QsplitInputError(f"model: no shipped policy for {model!r} under {POLICY_ROOT}")
    sha = read_env_kwargs(d)["profile_sha256"]
    if sha != load_profile(model).sha256():
        raise QsplitInputError(
            f"model: the shipped policy for {model!r} was trained on another version of the "
            f"profile (sha256 {sha[:12]}...); retrain it ({d / 'command.txt'})")
    return load_run_model(d, profile=load_profile(model))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Publish a run folder as a shipped policy.")
    p.add_argument("run", help="run folder (<log-folder>/<algo>/<env>_<n>)")
    p.add_argument("--model", required=True, help="profile name: the policy's folder name")
    p.add_argument("--checkpoint", default="best_model.zip")
    p.add_argument("--metrics", default="", help="a JSON file of measured figures to ship")
    a = p.parse_args(argv)
    try:
        metrics = parse_json(read_text(a.metrics, "--metrics"), "--metrics") if a.metrics else None
        print(publish(a.run, a.model, a.checkpoint, metrics))
    except (QsplitInputError, OSError) as exc:
        print(f"publish: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
