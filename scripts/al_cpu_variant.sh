#!/bin/sh
# One lane of a cpu-scale FSDD comparison of a selection variant against the committed
# comparison (results/active_learning/fsdd_cpu): the same config (`fsdd.py:cpu`), seeds,
# streams and round-0 models, with the variant's strategy and config overrides. A lane is one
# process pinned to one core that runs its seeds one after another in its own workdir
# ($WORKDIR/laneCORE: a run holds its workdir's lock); every lane of every variant shares the
# round-0 models in $MODELS (each model file is written under its own lock), so two lanes that
# run the seeds in different orders train each round-0 model once. Resumes whatever is there; a
# new lane workdir starts from the committed partial results in $FROM. Publish with
#   python -m experiments.publish --run=runs/al_fsdd_cpu_NAME/laneCORE --partial \
#     --to=results/active_learning/fsdd_cpu_NAME
# Environment: PY, WORKDIR, FROM, MODELS, CONFIG (default experiments/configs/fsdd.py:cpu).
# Usage: scripts/al_cpu_variant.sh NAME CORE "SEEDS" STRATEGY [--config.KEY=VALUE ...]
#   scripts/al_cpu_variant.sh bilevel_exact 0 "0 1 2" bilevel --config.bilevel.solver=exact
set -eu
cd "$(dirname "$0")/.."
if [ $# -lt 4 ]; then
  echo "usage: $0 NAME CORE \"SEEDS\" STRATEGY [--config.KEY=VALUE ...]" >&2
  exit 2
fi
NAME=$1; CORE=$2; SEEDS=$3; STRATEGY=$4; shift 4
PY=${PY:-.venv/bin/python}
WORKDIR=${WORKDIR:-runs/al_fsdd_cpu_$NAME}/lane$CORE
FROM=${FROM:-results/active_learning/fsdd_cpu_$NAME}
MODELS=${MODELS:-runs/al_fsdd_cpu/models}
CONFIG=${CONFIG:-experiments/configs/fsdd.py:cpu}
mkdir -p runs "$MODELS"
if [ ! -d "$WORKDIR" ]; then
  mkdir -p "$WORKDIR"
  for seed in $SEEDS; do
    cp "$FROM/fsdd_${STRATEGY}_seed$seed.json" "$WORKDIR"/ 2>/dev/null || true
  done
fi
[ -e "$WORKDIR/models" ] || ln -s "$(cd "$MODELS" && pwd)" "$WORKDIR/models"
for seed in $SEEDS; do
  taskset -c "$CORE" "$PY" -m experiments.active_learning --config="$CONFIG" \
    --config.strategy="$STRATEGY" --config.seed="$seed" --config.tensorboard=False \
    --config.report=False "$@" --workdir="$WORKDIR" --resume >> "runs/al_${NAME}_lane$CORE.log" 2>&1
done
