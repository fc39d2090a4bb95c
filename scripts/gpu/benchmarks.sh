#!/bin/bash
# Open GPU numbers of issues 5 and 7: bilevel selection at P = 85k (target < 1 s for b = 10,
# m = 2000) and S = 6 vmapped seeds against 6 sequential runs at paper scale (WRN-28-2).
source scripts/gpu/env.sh
timeout 200 python3 -m benchmarks.selection_speed --pools=85000 --landmarks=2000 \
  --classes=35,10 --no_anchor --numpy_max_pool=0 --rep_max_gib=0 --repeats=3 \
  --out=$OUT/selection_gpu_85k.json 2>&1 | grep -v "^I1\|^W1" | tail -8
timeout 330 python3 -m benchmarks.vmap_seeds --config=experiments/configs/mixmatch.py:paper \
  --seeds=6 --steps=300 --chunk=50 --arms=vmapped,sequential \
  --out=$OUT/vmap_seeds_gpu_paper.json 2>&1 | grep -v "^I1\|^W1" | tail -4 | cut -c1-400
