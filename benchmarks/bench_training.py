"""Train with the default config and measure the policy on 10,000 held-out requests.

    PYTHONPATH=. python benchmarks/bench_training.py --model resnet18 --seed 0

Trains exactly as ``train.py --algo ppo -conf configs/ppo.yml`` does (request pools solved
exactly, imitation warm start, PPO fine-tuning), then draws a fresh held-out set from the
same scenario with a seed used nowhere in training or model selection, runs the policy
deterministically (repair mode, as the env and the runtime execute it) and prints, as its
last line, one JSON object:

    model, steps (PPO env steps), wall_s (training: pools + imitation + PPO), regret_mean,
    regret_p95, regret_max, violations, repair_rate (regret of a request = its cost / optimal
    cost - 1), and context: checkpoint, train_pool, bc_epochs, held_out, eval_s, mean
    latency, energy and payload reduction.

The learning curve (held-out validation regret against imitation epochs, then against PPO
steps) goes to docs/img/learning_curve.png; the JSON also to ``<run>/bench.json``, which
``python -m agents.publish <run> --model <m> --metrics <run>/bench.json`` ships with the
policy. ``--replot RUN [--plain-run RUN2]`` redraws the curve of a finished run without
training (RUN2: a PPO run without imitation, overlaid).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agents.evaluation import held_out_figures  # noqa: E402
from agents.train_lib import TrainArgs, train  # noqa: E402
from system.atomic import atomic_write_bytes  # noqa: E402

#: Seed of the 10,000 test requests: not a training seed (those are small integers) and not
#: the validation pool's (configs/ppo.yml qsplit.eval_seed), which picks best_model.zip.


def plot_curve(run: Path, out: Path, test: dict, title: str, plain: Path | None = None) -> None:
    """Validation regret vs imitation epochs (left) and vs PPO steps (right).

    ``plain``: a run folder of PPO without the warm start, overlaid on the right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = json.loads((run / "evaluations.json").read_text())
    bc_path = run / "bc.json"
    bc = json.loads(bc_path.read_text()).get("curve", []) if bc_path.is_file() else []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True,
                             gridspec_kw={"width_ratios": [1, 2]})
    for ax, xs, rows, xlabel in (
            (axes[0], [r["epoch"] for r in bc], bc, "imitation epoch (optimizer as teacher)"),
            (axes[1], [r["steps"] for r in evals], evals, "PPO env steps (after imitation)")):
        if rows:
            ax.plot(xs, [100 * r["regret_mean"] for r in rows], "o-", label="mean regret")
            ax.plot(xs, [100 * r["regret_p95"] for r in rows], "s--", label="p95 regret")
        if plain is not None and ax is axes[1]:
            pe = json.loads((plain / "evaluations.json").read_text())
            ax.plot([r["steps"] for r in pe], [100 * r["regret_mean"] for r in pe], "^-",
                    color="tab:red", label="mean regret, PPO without imitation")
        ax.axhline(1.0, color="grey", lw=0.8, ls=":", label="target: mean 1%")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("regret vs exact optimum (%)")
    axes[0].set_yscale("log")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{title}: test on {test['held_out']} held-out requests: mean "
                 f"{100 * test['regret_mean']:.2f}%, p95 {100 * test['regret_p95']:.2f}%, "
                 f"{test['violations']} violations", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(out, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="resnet18")
    p.add_argument("--scenario", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-n", "--steps", type=int, default=-1,
                   help="PPO env steps (default: the config's n_timesteps)")
    p.add_argument("-conf", "--conf-file", default=str(ROOT / "configs" / "ppo.yml"))
    p.add_argument("--held-out", type=int, default=10_000)
    p.add_argument("-f", "--log-folder", default=str(ROOT / "runs" / "bench"))
    p.add_argument("--checkpoint", choices=("best", "final"), default="best",
                   help="best: lowest validation regret (best_model.zip); final: model.zip")
    p.add_argument("--curve", default=str(ROOT / "docs" / "img" / "learning_curve.png"),
                   help="learning-curve PNG ('' to skip)")
    p.add_argument("--plain-run", default="",
                   help="run folder of a PPO run without imitation, overlaid on the curve")
    p.add_argument("--replot", default="", metavar="RUN",
                   help="only redraw the curve of a finished run folder (its bench.json)")
    a = p.parse_args(argv)

    if a.replot:
        run = Path(a.replot)
        out = json.loads((run / "bench.json").read_text())
        plot_curve(run, Path(a.curve), out, f"{out['model']}, {a.scenario} scenario",
                   Path(a.plain_run) if a.plain_run else None)
        print(f"wrote {a.curve}")
        return 0

    t0 = time.perf_counter()
    run = train(TrainArgs(algo="ppo", n_timesteps=a.steps, seed=a.seed, conf_file=a.conf_file,
                          env_kwargs={"model": a.model, "scenario": a.scenario},
                          log_folder=a.log_folder, verbose=1,
                          argv=("benchmarks/bench_training.py", *(argv or sys.argv[1:]))))
    wall_s = time.perf_counter() - t0

    t1 = time.perf_counter()
    m = held_out_figures(run, a.model, a.scenario, a.held_out, a.checkpoint,
                         Path(a.log_folder) / "pools")
    name = m["checkpoint"]
    eval_s = time.perf_counter() - t1
    cfg_steps = json.loads((run / "evaluations.json").read_text())[-1]["steps"]
    bc = json.loads((run / "bc.json").read_text()) if (run / "bc.json").is_file() else {}
    out = {
        "model": a.model, "steps": int(cfg_steps), "wall_s": round(wall_s, 1),
        "regret_mean": round(m["regret_mean"], 6), "regret_p95": round(m["regret_p95"], 6),
        "violations": m["violations"], "repair_rate": round(m["repair_rate"], 4),
        "regret_max": round(m["regret_max"], 6), "cut_accuracy": round(m["cut_accuracy"], 4),
        "mean_latency_s": round(m["mean_latency_s"], 6),
        "mean_energy_j": round(m["mean_energy_j"], 6),
        "mean_payload_reduction": round(m["mean_payload_reduction"], 4),
        "checkpoint": name, "bc_epochs": bc.get("epochs", 0),
        "train_pool": bc.get("samples", None), "held_out": a.held_out,
        "eval_s": round(eval_s, 1), "seed": a.seed, "run": str(run),
    }
    np.save(run / "test_regrets.npy", m["regrets"])
    atomic_write_bytes(run / "bench.json", (json.dumps(out, indent=1) + "\n").encode())
    if a.curve:
        plot_curve(run, Path(a.curve), out, f"{a.model}, {a.scenario} scenario",
                   Path(a.plain_run) if a.plain_run else None)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
