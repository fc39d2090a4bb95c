#!/usr/bin/env bash
# Issue 14 decisive experiments at 30 labels on development seeds: (a) the committed cpu
# settings, (b) exact selection, (c) sum vs mean, (c') the trained network's kernel (leaky ReLU,
# final activation), (d) SSL-embedding proxy, (e) semi-supervised proxy, (f) temperature.
# Usage (repository root): results/active_learning/pick_stats_dev/run30.sh SEEDS [LANE]
# Each lane is one process pinned to one core (two lanes share the 2 cores).
set -u
SEEDS=${1:-100-102}
LANE=${2:-a}
CORE=${CORE:-1}
LEAKY='"ntk_activation":"leaky_relu","ntk_leaky_slope":0.1,"ntk_final_activation":true'
V='{"uniform":{"strategy":"uniform"},"kcenter":{"strategy":"kcenter"},'\
'"bilevel":{"strategy":"bilevel"},'\
'"bilevel_sum":{"strategy":"bilevel","block":{"loss_reduction":"sum"}},'\
'"bilevel_exact_mean":{"strategy":"bilevel","block":{"solver":"exact"}},'\
'"bilevel_exact_sum":{"strategy":"bilevel","block":{"solver":"exact","loss_reduction":"sum"}},'\
'"bilevel_faithful":{"strategy":"bilevel","block":{"solver":"exact","loss_reduction":"sum",'"$LEAKY"'}},'\
'"bilevel_embed":{"strategy":"bilevel_embed"},'\
'"bilevel_embed_exact_sum":{"strategy":"bilevel_embed","block":{"solver":"exact","loss_reduction":"sum"}},'\
'"bilevel_ssl":{"strategy":"bilevel_ssl"},'\
'"tempered_T2":{"strategy":"bilevel_tempered","block":{"pseudo_temperature":2.0}}}'
mkdir -p runs
taskset -c "$CORE" nice -n 5 python -m experiments.pick_stats --config=experiments/configs/pick_stats.py:cpu \
  --config.seeds="$SEEDS" --config.labeled.num_labels=30 --config.variants="$V" \
  --workdir=runs/pick_stats_dev_$LANE > runs/pick_dev30_$LANE.log 2>&1
