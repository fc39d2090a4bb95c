#!/usr/bin/env bash
# Issue 14 (g), the regime: the 30-label pick statistics of k-center, uniform, the faithful
# bilevel and the embedding variant when the round model is stronger (3x the MixMatch steps),
# on development seeds. Not run yet (2026-12-08): ~30 min of one core per seed for the training.
# Usage (repository root): results/active_learning/pick_stats_dev/run_regime.sh SEEDS [LANE]
set -u
SEEDS=${1:-100,101}
LANE=${2:-g}
CORE=${CORE:-1}
LEAKY='"ntk_activation":"leaky_relu","ntk_leaky_slope":0.1,"ntk_final_activation":true'
V='{"uniform":{"strategy":"uniform"},"kcenter":{"strategy":"kcenter"},'\
'"bilevel_faithful":{"strategy":"bilevel","block":{"solver":"exact","loss_reduction":"sum",'"$LEAKY"'}},'\
'"bilevel_embed_exact_sum":{"strategy":"bilevel_embed","block":{"solver":"exact","loss_reduction":"sum"}}}'
mkdir -p runs
taskset -c "$CORE" nice -n 5 python -m experiments.pick_stats --config=experiments/configs/pick_stats.py:cpu \
  --config.seeds="$SEEDS" --config.labeled.num_labels=30 --config.train.steps=3000 \
  --config.variants="$V" --workdir=runs/pick_stats_dev_$LANE > runs/pick_dev_regime_$LANE.log 2>&1
