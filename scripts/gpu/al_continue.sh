#!/bin/bash
# Continues the cpu-scale FSDD comparison (issue 6) on the GPU for at most $1 seconds: seeds
# trained vmapped, every finished round written at once; a cut run loses only its current round.
# Bilevel first: if time runs out, the strategy the comparison is about is the one furthest on.
# The results come back as one tarball ($OUT takes at most 8 files).
source scripts/gpu/env.sh
LIMIT=${1:-480}
SRC=results/active_learning/fsdd_cpu
W=runs/al_fsdd_cpu_gpu && mkdir -p $W/models && cp $SRC/*.json $W/ && cp $SRC/models/*.msgpack $W/models/
timeout $LIMIT python3 -m experiments.active_learning --config=experiments/configs/fsdd.py:cpu \
  --config.strategy=bilevel,kcenter,consistency,max_entropy \
  --config.vmap_seeds=True --config.progress=False --config.tensorboard=False \
  --config.report=False --workdir=$W --resume > $OUT/al_continue.log 2>&1
echo "exit $?"; grep "test accuracy" $OUT/al_continue.log | tail -40
rm -f $W/*.tmp* $W/models/*.tmp* 2>/dev/null
(cd $W && tar czf $OUT/al_fsdd_cpu.tar.gz $(ls *.json *.npz 2>/dev/null) models/)
ls -la $OUT
