"""Train a policy for QuantSplit-v0 (flags as rl-baselines3-zoo's train.py).

    python train.py --algo ppo --env QuantSplit-v0 -conf configs/ppo.yml --seed 0 \
        --env-kwargs model:resnet18 scenario:default -f runs -P

What happens, in order (agents/train_lib.py has the pieces):
1. The hyperparameters for --env are read from -conf (rl-zoo schema; the ``qsplit:`` section
   adds pool sizes, the imitation warm start and the held-out evaluation).
2. A run folder <-f>/<algo>/<env>_<n>/ is made; config.yml and command.txt go in first.
3. Two pools of requests are drawn from the scenario and solved exactly: a training pool
   (the reward's reference cost, and the imitation targets) and a held-out pool (seeded
   apart) on which the deterministic policy's regret is measured every --eval-freq steps.
4. Optionally the actor imitates the optimizer (behaviour cloning) on the training pool.
5. PPO (or MaskablePPO) trains on n_envs copies of the env; TensorBoard scalars under
   qsplit/ (regret, repair rate, latency, energy, payload reduction); checkpoints every
   --save-freq steps; model.zip at the end. -i resumes from a saved model.

Bad input (unknown model or scenario, a malformed config) ends with one line and exit 2.
"""

from __future__ import annotations

import argparse
import sys

from agents.train_lib import ALGOS, TrainArgs, parse_kv, train
from system.errors import QsplitInputError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--algo", default="ppo", choices=ALGOS, help="RL algorithm")
    p.add_argument("--env", default="QuantSplit-v0", help="environment id")
    p.add_argument("-n", "--n-timesteps", type=int, default=-1,
                   help="PPO env steps (default: the config's n_timesteps)")
    p.add_argument("--seed", type=int, default=-1, help="random seed (< 0: draw one)")
    p.add_argument("-conf", "--conf-file", default="configs/ppo.yml",
                   help="hyperparameter YAML (rl-zoo schema)")
    p.add_argument("--env-kwargs", nargs="+", default=None,
                   help="env keyword arguments, key:value (e.g. model:digits_cnn)")
    p.add_argument("-params", "--hyperparams", nargs="+", default=None,
                   help="override hyperparameters, key:value (e.g. learning_rate:1e-4)")
    p.add_argument("-tb", "--tensorboard-log", default="",
                   help="TensorBoard folder (default: <run folder>/tb)")
    p.add_argument("-f", "--log-folder", default="runs", help="where run folders go")
    p.add_argument("-i", "--trained-agent", default="", help="model .zip to resume from")
    p.add_argument("--save-freq", type=int, default=-1,
                   help="checkpoint every n env steps (< 0: none)")
    p.add_argument("--eval-freq", type=int, default=0,
                   help="held-out regret every n env steps (0: the config's; < 0: start/end)")
    p.add_argument("--num-threads", type=int, default=-1, help="torch threads (<= 0: one, fastest here)")
    p.add_argument("--vec-env", default="dummy", choices=("dummy", "subproc"))
    p.add_argument("-P", "--progress", action="store_true", help="show a progress bar")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2))
    a = p.parse_args(argv)
    try:
        run = train(TrainArgs(
            algo=a.algo, env=a.env, n_timesteps=a.n_timesteps, seed=a.seed,
            conf_file=a.conf_file, env_kwargs=parse_kv(a.env_kwargs, "--env-kwargs"),
            hyperparams=parse_kv(a.hyperparams, "-params"), tensorboard_log=a.tensorboard_log,
            log_folder=a.log_folder, trained_agent=a.trained_agent, save_freq=a.save_freq,
            eval_freq=a.eval_freq, num_threads=a.num_threads, vec_env=a.vec_env,
            progress=a.progress, verbose=a.verbose, argv=("train.py", *argv)))
    except QsplitInputError as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
