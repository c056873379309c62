#!/usr/bin/env bash
# The whole path on the built-in default, in a few minutes on a 2-core CPU:
#   1. a short PPO training run on QuantSplit-v0 (default model and scenario, configs/ppo.yml,
#      shortened with -n), into $OUT/runs/ppo/QuantSplit-v0_<n>/;
#   2. the leaderboard: that run against the exact optimizer and the baselines on the default
#      evaluation suite (configs/eval/default.yaml), tables printed, CSV, summary and plots
#      written to $OUT/eval/.
# Usage (from a clone after `pip install -e .[rl,dev]`; `make demo` runs this):
#   bash scripts/demo.sh
# Knobs (environment): PYTHON (default .venv/bin/python if present, else python), OUT
# (default out/demo), DEMO_TIMESTEPS (PPO env steps, default 20000), DEMO_REQUESTS
# (requests per suite case, default: the suite's own counts), SEED (default 0).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
OUT=${OUT:-out/demo}
STEPS=${DEMO_TIMESTEPS:-20000}
SEED=${SEED:-0}
mkdir -p "$OUT"
start=$(date +%s)

echo "== 1/2 training PPO for $STEPS env steps (log: $OUT/train.log)"
"$PY" train.py --algo ppo --env QuantSplit-v0 -conf configs/ppo.yml -n "$STEPS" \
  --seed "$SEED" -f "$OUT/runs" --eval-freq -1 | tee "$OUT/train.log"
RUN=$(tail -n 1 "$OUT/train.log")
[ -f "$RUN/model.zip" ] || { echo "demo: training wrote no $RUN/model.zip" >&2; exit 1; }

echo "== 2/2 evaluating $RUN against the optimizer and the baselines"
deciders=()
for d in optimal "ppo:$RUN" server_only device_only device_only_int8 partition_only uniform; do
  deciders+=(--decider "$d")
done
"$PY" evaluate.py --suite default "${deciders[@]}" --out "$OUT/eval" \
  ${DEMO_REQUESTS:+--requests "$DEMO_REQUESTS"}

echo "== demo done in $(( $(date +%s) - start )) s: plots and records in $OUT/eval/"
