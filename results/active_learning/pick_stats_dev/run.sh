#!/usr/bin/env bash
# Issue 14 decisive experiments on development seeds (pick statistics only).
set -u
V='{"uniform":{"strategy":"uniform"},"kcenter":{"strategy":"kcenter"},"bilevel":{"strategy":"bilevel"},"bilevel_embed":{"strategy":"bilevel_embed"},"tempered_T2":{"strategy":"bilevel_tempered","block":{"pseudo_temperature":2.0}},"tempered_T05":{"strategy":"bilevel_tempered","block":{"pseudo_temperature":0.5}},"bilevel_ssl":{"strategy":"bilevel_ssl"}}'
for n in 10 30; do
  nice -n 5 python -m experiments.pick_stats --config=experiments/configs/pick_stats.py:cpu \
    --config.seeds=100-102 --config.labeled.num_labels=$n --config.variants="$V" \
    --workdir=runs/pick_stats_dev > runs/pick_dev_$n.log 2>&1
done
