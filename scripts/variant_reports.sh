#!/bin/sh
# Rebuilds every derived table of the issue-14 variant comparisons from the committed result
# JSONs (run after publishing new rounds): each variant's comparison.md against the cpu
# comparison, Table 1 / Figure 3 / paired.md of results/active_learning/fsdd_cpu/report with the
# variants' rows, and the gain-by-model-accuracy table. Reads and writes only results/.
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
REF=results/active_learning/fsdd_cpu
FAITHFUL="Bilevel (exact, sum, WRN kernel)"
EMBED="Bilevel-embed (exact, sum)"
"$PY" -m experiments.compare_runs --run=results/active_learning/fsdd_cpu_bilevel_faithful \
  --name="$FAITHFUL" --against=$REF \
  --out=results/active_learning/fsdd_cpu_bilevel_faithful/comparison.md > /dev/null
"$PY" -m experiments.compare_runs --run=results/active_learning/fsdd_cpu_bilevel_embed_exact \
  --strategy=bilevel_embed --name="$EMBED" --against=$REF \
  --out=results/active_learning/fsdd_cpu_bilevel_embed_exact/comparison.md > /dev/null
"$PY" -m experiments.report --results=$REF --out=$REF/report \
  --variant="results/active_learning/fsdd_cpu_bilevel_faithful:bilevel:$FAITHFUL" \
  --variant="results/active_learning/fsdd_cpu_bilevel_embed_exact:bilevel_embed:$EMBED"
"$PY" -m experiments.gain_by_accuracy --results=$REF \
  --variant="results/active_learning/fsdd_cpu_bilevel_faithful:bilevel:$FAITHFUL" \
  --variant="results/active_learning/fsdd_cpu_bilevel_embed_exact:bilevel_embed:$EMBED" \
  --strategy=bilevel --strategy="$FAITHFUL" --strategy="$EMBED" --strategy=kcenter \
  --strategy=max_entropy --out=$REF/report/gain_by_accuracy.md > /dev/null
