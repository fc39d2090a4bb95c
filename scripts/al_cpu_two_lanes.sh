#!/bin/sh
# Continues the cpu-scale FSDD comparison (results/active_learning/fsdd_cpu) in two processes,
# one per CPU core: on the 2-core machine two single-core trainings finish more steps per second
# together than one training spread over both cores (see results/active_learning/README.md).
# The lanes split the strategies, so no result file has two writers; round-0 models are shared
# through the workdir's model cache. Resumes whatever is already there.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORKDIR=${WORKDIR:-results/active_learning/fsdd_cpu}
mkdir -p runs
lane() {  # lane CORE STRATEGIES
  taskset -c "$1" "$PY" -m experiments.active_learning --config=experiments/configs/fsdd.py:cpu \
    --config.strategy="$2" --config.tensorboard=False --config.report=False \
    --workdir="$WORKDIR" --resume > "runs/al_lane$1.log" 2>&1
}
lane 0 "${LANE0:-bilevel,kcenter}" &
lane 1 "${LANE1:-max_entropy,consistency}" &
wait
