"""Batch-1 latency the catalog's servers predict for every shipped network, whole on the server.

Why: at batch 1 a GPU is dominated by per-layer launch overhead, so the catalog's servers
carry a per-unit ``overhead_s`` (``system/data/hardware.json``, with its source). This prints,
per network and server, the predicted time of all units (``system.cost.unit_time``: the one
per-unit time of the cost model) and the part of it that is launches (units x overhead).
The last line printed is one JSON object.

    python benchmarks/bench_catalog_gpus.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from system.cost import unit_time  # noqa: E402
from system.hardware import get_server, processor_timing, server_names  # noqa: E402
from system.profiles import builtin_profile_names, load_profile  # noqa: E402


def main() -> int:
    out: dict[str, dict] = {}
    for name in builtin_profile_names():
        prof = load_profile(name)
        row = {"units": prof.n_units}
        for srv in server_names():
            total = float(np.sum(unit_time(prof, srv).seconds(get_server(srv).flops_per_s)))
            row[f"{srv}_ms"] = round(total * 1e3, 2)
            row[f"{srv}_launch_ms"] = round(prof.n_units * processor_timing(srv).overhead_s * 1e3, 2)
        out[name] = row
        print(f"{name:>14} ({prof.n_units:>2} units): " + ", ".join(
            f"{s} {row[f'{s}_ms']} ms ({row[f'{s}_launch_ms']} launches)" for s in server_names()))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
