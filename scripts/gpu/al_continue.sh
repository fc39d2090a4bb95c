#!/bin/bash
# Continues the cpu-scale FSDD comparison (issue 6) on the GPU for at most $1 seconds: seeds
# trained vmapped, every finished round written at once; a cut run loses only its current round.
source scripts/gpu/env.sh
LIMIT=${1:-480}
mkdir -p $OUT/fsdd_cpu && cp results/active_learning/fsdd_cpu/*.json $OUT/fsdd_cpu/
timeout $LIMIT python3 -m experiments.active_learning --config=experiments/configs/fsdd.py:cpu \
  --config.vmap_seeds=True --config.progress=False --config.tensorboard=False \
  --config.report=False --workdir=$OUT/fsdd_cpu --resume 2>&1 | grep "test accuracy" | tail -40
rm -f $OUT/fsdd_cpu/*.npz.tmp* 2>/dev/null; ls $OUT/fsdd_cpu | head -50
