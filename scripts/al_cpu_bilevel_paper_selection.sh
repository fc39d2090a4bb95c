#!/bin/sh
# Ablation of the cpu-scale comparison: bilevel with the paper's selection settings (m = 2000
# Nystrom landmarks, 1000 inner Adam steps) instead of the cpu config's (256, 300); training,
# seeds, streams and round-0 models are those of results/active_learning/fsdd_cpu (its models/
# are copied in, so round 0 is the very same model). Two single-core lanes, each running its
# seeds one after another; resumes whatever is already there; a new workdir starts from the
# committed results. Workdir under runs/ (git-ignored); publish with `python -m
# experiments.publish --run=runs/al_fsdd_cpu_bilevel_paper_selection --partial
# --to=results/active_learning/fsdd_cpu_bilevel_paper_selection`.
#   scripts/al_cpu_bilevel_paper_selection.sh            # lane 0: seeds 0 1, lane 1: seeds 2 3
#   SEEDS0="0 1 4" SEEDS1="2 3 5" scripts/al_cpu_bilevel_paper_selection.sh
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKDIR=${WORKDIR:-runs/al_fsdd_cpu_bilevel_paper_selection}
FROM=${FROM:-results/active_learning/fsdd_cpu_bilevel_paper_selection}
MODELS=${MODELS:-runs/al_fsdd_cpu/models}   # the cpu comparison's round-0 models
if [ ! -d "$WORKDIR" ] && [ -d "$FROM" ]; then
  mkdir -p "$WORKDIR" && cp "$FROM"/*.json "$WORKDIR"/
fi
mkdir -p runs "$WORKDIR/models"
cp -n "$MODELS"/*.msgpack "$WORKDIR/models/" 2>/dev/null || true
lane() {  # lane CORE "SEEDS"
  for seed in $2; do
    taskset -c "$1" "$PY" -m experiments.active_learning --config=experiments/configs/fsdd.py:cpu \
      --config.strategy=bilevel --config.seed="$seed" --config.bilevel.landmarks=2000 \
      --config.bilevel.inner_steps=1000 --config.tensorboard=False --config.report=False \
      --workdir="$WORKDIR" --resume >> "runs/al_ablation_lane$1.log" 2>&1 || return 1
  done
}
lane 0 "${SEEDS0:-0 1}" & p0=$!
lane 1 "${SEEDS1:-2 3}" & p1=$!
status=0
wait "$p0" || { echo "lane 0 failed: see runs/al_ablation_lane0.log" >&2; status=1; }
wait "$p1" || { echo "lane 1 failed: see runs/al_ablation_lane1.log" >&2; status=1; }
exit "$status"
