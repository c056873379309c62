"""Training and evaluation of qsplit policies (SB3 PPO / MaskablePPO on QuantSplit-v0).

agents -> envs, system. ``agents/export.py`` and ``agents/policy.py`` (the Policy protocol,
the export of a numpy bundle) are written elsewhere.
"""
