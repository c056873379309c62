"""Training and evaluation of qsplit policies (SB3 PPO / MaskablePPO on QuantSplit-v0).

agents -> envs, system. The pieces: ``train_lib`` (train.py's settings and run folder),
``bc`` (imitation warm start), ``callbacks``, ``evaluation`` (regret on a request pool),
``policy`` (one Policy protocol for every decider), ``export`` (the numpy bundle the runtime
loads) and ``publish`` (shipped default policies).
"""
