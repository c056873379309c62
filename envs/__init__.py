"""The Gymnasium face of qsplit: ``import envs`` registers ``QuantSplit-v0`` and
``QuantSplitTrace-v0`` (requests placed in recorded traces, :mod:`envs.quantsplit_trace`).

Registration is idempotent and uses a string entry point, so ``gymnasium.make``,
``gymnasium.make_vec`` (sync and async) and ``python -m rl_zoo3.train --gym-packages envs``
all find the env. The encoder and codec come from ``system.codec`` (numpy only, shared with
the runtime); they are re-exported here for convenience.
"""

from __future__ import annotations

import gymnasium

from system.codec import ActionCodec, ObservationEncoder

ENV_ID = "QuantSplit-v0"
ENTRY_POINT = "envs.quantsplit:QuantSplitEnv"
TRACE_ENV_ID = "QuantSplitTrace-v0"
TRACE_ENTRY_POINT = "envs.quantsplit_trace:QuantSplitTraceEnv"


def register_envs() -> None:
    """Register the qsplit envs unless already registered (safe to call many times)."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=ENTRY_POINT)
    if TRACE_ENV_ID not in gymnasium.registry:
        gymnasium.register(id=TRACE_ENV_ID, entry_point=TRACE_ENTRY_POINT)


register_envs()

from envs.pool import RequestPool  # noqa: E402
from envs.quantsplit import QuantSplitEnv  # noqa: E402

__all__ = [
    "ENV_ID",
    "TRACE_ENV_ID",
    "ActionCodec",
    "ObservationEncoder",
    "QuantSplitEnv",
    "RequestPool",
    "register_envs",
]
