"""SB3 callbacks: qsplit metrics in TensorBoard (under ``qsplit/``), atomic checkpoints.

* :class:`RolloutInfoCallback`: means of the env's ``info`` over each rollout (repair rate,
  latency, energy, payload reduction, regret when the env reports it).
* :class:`RegretEvalCallback`: every ``eval_freq`` steps, the deterministic policy on a fixed
  held-out pool, regret against the exact optimum (:mod:`agents.evaluation`); appends to
  ``evaluations.json`` (the learning curve) and keeps ``best_model.zip``.
* :class:`AtomicCheckpointCallback`: ``checkpoints/model_<steps>_steps.zip`` written to a
  temporary name and renamed, so a crash never leaves half a checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from agents.evaluation import evaluate_actions, pool_masks, predict_actions
from envs.pool import RequestPool
from system.atomic import atomic_write_text
from system.profiles import ModelProfile

PREFIX = "qsplit/"


def save_model_atomic(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` to a temporary name in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.zip")
    model.save(tmp)
    os.replace(tmp, path)
    return path


class RolloutInfoCallback(BaseCallback):
    """Average the env's per-episode info over each rollout and record it."""

    KEYS = ("repaired", "latency_s", "energy_j", "payload_reduction", "regret", "violation")

    def _on_rollout_start(self) -> None:
        self._acc: dict[str, list[float]] = {k: [] for k in self.KEYS}

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", []):
            for k in self.KEYS:
                if k in info:
                    self._acc[k].append(float(info[k]))
        return True

    def _on_rollout_end(self) -> None:
        names = {"repaired": "train_repair_rate", "violation": "train_violation_rate"}
        for k, v in self._acc.items():
            if v:
                self.logger.record(PREFIX + names.get(k, f"train_{k}"), float(np.mean(v)))


class RegretEvalCallback(BaseCallback):
    """Regret of the deterministic policy on a held-out pool every ``eval_freq`` env steps."""

    def __init__(self, profile: ModelProfile, pool: RequestPool, eval_freq: int,
                 run_dir: str | Path | None = None, mode: str = "repair",
                 use_masks: bool = False, verbose: int = 0,
                 on_eval: Callable[[dict[str, Any]], None] | None = None) -> None:
        super().__init__(verbose)
        self.on_eval = on_eval
        self.profile = profile
        self.pool = pool
        self.eval_freq = int(eval_freq)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.mode = mode
        self.masks = pool_masks(profile, pool) if use_masks else None
        self.history: list[dict[str, Any]] = []
        self.best = np.inf
        self._last_eval = -1
        self._t0 = time.perf_counter()

    def evaluate(self) -> dict[str, Any]:
        """Run the evaluation now, record it and return the summary."""
        acts = predict_actions(self.model, self.pool.obs, self.masks)
        m = evaluate_actions(self.profile, self.pool, acts, mode=self.mode)
        steps = int(self.num_timesteps)
        row = {"steps": steps, "wall_s": round(time.perf_counter() - self._t0, 2),
               **{k: v for k, v in m.items() if k != "regrets"}}
        self.history.append(row)
        for k in ("regret_mean", "regret_p95", "violations", "repair_rate", "mean_latency_s",
                  "mean_energy_j", "mean_payload_reduction", "cut_accuracy"):
            self.logger.record(PREFIX + k, row[k])
        if self.run_dir is not None:
            atomic_write_text(self.run_dir / "evaluations.json",
                              json.dumps(self.history, indent=1) + "\n")
            if m["regret_mean"] < self.best:
                save_model_atomic(self.model, self.run_dir / "best_model.zip")
        self.best = min(self.best, m["regret_mean"])
        if self.verbose:
            print(f"[qsplit eval] steps {steps}: mean regret {m['regret_mean']:.4%} p95 "
                  f"{m['regret_p95']:.4%} repair rate {m['repair_rate']:.3f}", flush=True)
        self._last_eval = steps
        if self.on_eval is not None:
            self.on_eval(row)
        return row

    def _on_training_start(self) -> None:
        if not self.history:
            self.evaluate()
            self.logger.dump(self.num_timesteps)

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps - self._last_eval >= self.eval_freq:
            self.evaluate()
        return True

    def _on_training_end(self) -> None:
        if self.num_timesteps != self._last_eval:
            self.evaluate()
            self.logger.dump(self.num_timesteps)


class AtomicCheckpointCallback(BaseCallback):
    """Save ``<folder>/model_<steps>_steps.zip`` every ``save_freq`` env steps, atomically."""

    def __init__(self, save_freq: int, folder: str | Path, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.save_freq = int(save_freq)
        self.folder = Path(folder)
        self._last = 0

    def _on_step(self) -> bool:
        if self.save_freq > 0 and self.num_timesteps - self._last >= self.save_freq:
            self._last = self.num_timesteps
            p = save_model_atomic(self.model,
                                  self.folder / f"model_{self.num_timesteps}_steps.zip")
            if self.verbose:
                print(f"[qsplit] checkpoint {p}", flush=True)
        return True
