#!/bin/sh
# Ablation of the cpu-scale comparison: bilevel with the paper's selection settings (m = 2000
# Nystrom landmarks, 1000 inner Adam steps) instead of the cpu config's (256, 300); training,
# seeds, streams and round-0 models are those of results/active_learning/fsdd_cpu. Two
# single-core lanes of scripts/al_cpu_variant.sh (each its own workdir under
# runs/al_fsdd_cpu_bilevel_paper_selection/, round-0 models shared), resuming whatever is there;
# publish each lane with `python -m experiments.publish --run=.../laneN --partial
# --to=results/active_learning/fsdd_cpu_bilevel_paper_selection`.
#   scripts/al_cpu_bilevel_paper_selection.sh            # lane 0: seeds 0 1, lane 1: seeds 2 3
#   SEEDS0="0 1 4" SEEDS1="2 3 5" scripts/al_cpu_bilevel_paper_selection.sh
set -eu
cd "$(dirname "$0")/.."
run() {
  scripts/al_cpu_variant.sh bilevel_paper_selection "$1" "$2" bilevel \
    --config.bilevel.landmarks=2000 --config.bilevel.inner_steps=1000
}
run 0 "${SEEDS0:-0 1}" & p0=$!
run 1 "${SEEDS1:-2 3}" & p1=$!
status=0
wait "$p0" || { echo "lane 0 failed: see runs/al_bilevel_paper_selection_lane0.log" >&2; status=1; }
wait "$p1" || { echo "lane 1 failed: see runs/al_bilevel_paper_selection_lane1.log" >&2; status=1; }
exit "$status"
