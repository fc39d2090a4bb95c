#!/bin/sh
# Continues the cpu-scale FSDD comparison (results/active_learning/fsdd_cpu) in two processes,
# one per CPU core: on the 2-core machine two single-core trainings finish more steps per second
# together than one training spread over both cores (see results/active_learning/README.md).
# The lanes split the strategies and, since a run holds its workdir's lock for the whole run,
# each lane has its own workdir ($WORKDIR/laneN); round-0 models are still shared: every lane's
# models/ links to $WORKDIR/models (each model file is written under its own lock). Resumes
# whatever is already there; a new lane workdir starts from the committed results of its
# strategies (their JSON), so the committed run continues where it stopped. The workdir is
# under runs/ (git-ignored); report over both lanes with
#   python -m experiments.report --results=$WORKDIR/lane0 --results=$WORKDIR/lane1 ...
# and publish finished results with experiments.publish (once per lane).
#   scripts/al_cpu_two_lanes.sh        # both lanes
#   scripts/al_cpu_two_lanes.sh 1      # lane 1 only (e.g. to restart one lane)
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKDIR=${WORKDIR:-runs/al_fsdd_cpu}
FROM=${FROM:-results/active_learning/fsdd_cpu}
mkdir -p runs
lane() {  # lane CORE STRATEGIES
  if [ ! -d "$WORKDIR/lane$1" ] && [ -d "$FROM" ]; then
    mkdir -p "$WORKDIR/lane$1"
    for s in $(echo "$2" | tr , ' '); do
      cp "$FROM"/fsdd_"$s"_seed*.json "$WORKDIR/lane$1"/ 2>/dev/null || true
    done
  fi
  mkdir -p "$WORKDIR/models" "$WORKDIR/lane$1"
  [ -e "$WORKDIR/lane$1/models" ] || ln -s ../models "$WORKDIR/lane$1/models"
  taskset -c "$1" "$PY" -m experiments.active_learning --config=experiments/configs/fsdd.py:cpu \
    --config.strategy="$2" --config.tensorboard=False --config.report=False \
    --workdir="$WORKDIR/lane$1" --resume >> "runs/al_lane$1.log" 2>&1
}
STRATEGIES0=${LANE0:-bilevel,kcenter}
STRATEGIES1=${LANE1:-max_entropy,consistency}
case "${1:-both}" in
  0) lane 0 "$STRATEGIES0" ;;
  1) lane 1 "$STRATEGIES1" ;;
  both)
    lane 0 "$STRATEGIES0" & p0=$!
    lane 1 "$STRATEGIES1" & p1=$!
    status=0
    wait "$p0" || { echo "lane 0 failed: see runs/al_lane0.log" >&2; status=1; }
    wait "$p1" || { echo "lane 1 failed: see runs/al_lane1.log" >&2; status=1; }
    exit "$status" ;;
  *) echo "usage: $0 [0|1]" >&2; exit 2 ;;
esac
