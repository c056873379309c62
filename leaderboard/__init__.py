"""The leaderboard: every decider on the same fixed requests, scored against the exact optimum.

A suite (:mod:`leaderboard.suites`, ``configs/eval/<name>.yaml``) fixes a model profile, the
deciders and cases. :mod:`leaderboard.run` decides and costs every case's requests and writes
the output folder; :mod:`leaderboard.summary` reduces the records to the leaderboard's figures,
:mod:`leaderboard.claims` measures the seeds' claims (``claims.yaml``) on them,
:mod:`leaderboard.records` and :mod:`leaderboard.replay` write, read and re-cost ``records.csv``,
and :mod:`leaderboard.plots` draws them. ``evaluate.py`` is the command line.

leaderboard -> agents, runtime, system.
"""
