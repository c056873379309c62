"""Train a policy for QuantSplit-v0 (flags as rl-baselines3-zoo's train.py).

    python train.py --algo ppo --env QuantSplit-v0 -conf configs/ppo.yml --seed 0 \
        --env-kwargs model:resnet18 scenario:default -f runs -P

What happens, in order (agents/train_lib.py has the pieces):
1. The hyperparameters for --env are read from -conf (rl-zoo schema; the ``qsplit:`` section
   adds pool sizes, the imitation warm start and the held-out evaluation) and checked, with
   the env's arguments and the -i model, before anything is built (agents/hyperparams.py
   holds every key's range).
2. Two pools of requests are drawn from the scenario and solved exactly: a training pool
   (the reward's reference cost, and the imitation targets) and a held-out pool (seeded
   apart) on which the deterministic policy's regret is measured every --eval-freq steps.
3. A run folder <-f>/<algo>/<env>_<n>/ is made once the model is built; command.txt,
   config.yml and env_kwargs.json (the env's resolved arguments, which export and
   evaluation read back) go in first.
4. Optionally the actor imitates the optimizer (behaviour cloning) on the training pool.
5. PPO (or MaskablePPO) trains on n_envs copies of the env; TensorBoard scalars under
   qsplit/ (regret, repair rate, latency, energy, payload reduction); checkpoints every
   --save-freq steps; model.zip at the end. -i resumes from a saved model: that file is
   trusted code (stable-baselines3 unpickles it); export and evaluation never unpickle one.

Bad input (unknown model or scenario, a malformed config, a hyperparameter outside its
range, an unknown env argument, a missing or unreadable -i file) ends with one line and
exit 2, and leaves no run folder.
"""

from __future__ import annotations

import sys

from agents.train_lib import parse_train_args, train
from system.errors import cli_main


@cli_main
def main(argv: list[str] | None = None) -> int:
    """Parse the flags (generated from :class:`agents.train_lib.TrainArgs`) and train."""
    argv = list(sys.argv[1:] if argv is None else argv)
    run = train(parse_train_args(argv, "train.py", __doc__.split("\n")[0]))
    print(run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
