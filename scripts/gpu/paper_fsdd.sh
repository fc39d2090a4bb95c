#!/bin/bash
# Advances the paper-scale FSDD comparison (WRN-28-2, 1e5 MixMatch steps per round, 5 strategies
# x 6 seeds x 6 rounds) by one device call of BUDGET_S seconds, resumable across calls:
#
#   bash scripts/gpu/paper_fsdd.sh BUDGET_S        (device call; carry .whl .devdata .devstate)
#   DRY_RUN=1 MODE=tiny bash scripts/gpu/paper_fsdd.sh BUDGET_S   (CPU rehearsal, no GPU)
#
# Order: bilevel and uniform first (seeds in order, all rounds), then kcenter, consistency and
# max_entropy. The state (result JSON, round-0 models, the newest checkpoint of the training in
# progress) comes in as .devstate/paper_fsdd/ and goes back as $OUT/state.tar.part-* (15 MB
# pieces, the tool returns at most 8 files of 16 MB); unpack them for the next call with
#   rm -rf .devstate/paper_fsdd && mkdir -p .devstate/paper_fsdd &&
#   cat <files_at>/state.tar.part-* | tar xf - -C .devstate/paper_fsdd
# Exit status: 0 the comparison is complete, 75 the budget ran out (call again), else an error.
set -u -o pipefail
BUDGET=${1:?usage: paper_fsdd.sh BUDGET_S}
MODE=${MODE:-paper}
PHASES=${PHASES:-"bilevel,uniform kcenter,consistency,max_entropy"}
MARGIN=${MARGIN:-60}  # seconds kept for packing the state and the transfer back
STATE=${STATE:-.devstate/paper_fsdd}
W=${WORK:-runs/paper_fsdd}
START=$(date +%s)
if [ -z "${DRY_RUN:-}" ]; then
  source scripts/gpu/env.sh  # carried wheels (also a CUDA jax build, if carried) and paths
  python3 -c "import jax; assert jax.default_backend() == 'gpu', jax.devices()" \
    || { echo "no GPU jax: carry the jax CUDA wheels in .whl (scripts/gpu/README.md)"; exit 1; }
else
  OUT=${OUT:-$(mktemp -d)}
fi
PY=${PYTHON:-python3}
rm -rf "$W" && mkdir -p "$W" "$OUT"
[ -d "$STATE" ] && cp -r "$STATE"/. "$W"/
echo "state in: $(ls "$W"/*.json 2>/dev/null | wc -l) result files, $(du -sh "$W" | cut -f1)"

rc=0
for strategies in $PHASES; do
  left=$((BUDGET - MARGIN - ($(date +%s) - START)))
  if [ $left -le 0 ]; then rc=75; break; fi
  # timeout: a hard stop well after the budget, should a selection or evaluation overrun it.
  timeout $((left + ${HARD_EXTRA:-$((MARGIN / 2))})) $PY -m experiments.active_learning \
    --config=experiments/configs/fsdd.py:$MODE --config.strategy=$strategies \
    --config.progress=False --config.tensorboard=False --config.report=False \
    --workdir="$W" --resume --time_budget=$left >> "$OUT/paper_fsdd.log" 2>&1
  rc=$?
  echo "phase $strategies: exit $rc"
  [ $rc -eq 0 ] || break
done
grep -h "test accuracy\|Stopped" "$OUT/paper_fsdd.log" | tail -20

# Only the newest checkpoint of a training is needed to resume it.
for d in "$W"/checkpoints/*/checkpoints; do
  [ -d "$d" ] || continue
  newest=$(ls "$d" | grep -E '^[0-9]+$' | sort -n | tail -1)
  for s in $(ls "$d" | grep -E '^[0-9]+$'); do [ "$s" = "$newest" ] || rm -rf "$d/$s"; done
done
rm -f "$W"/*.tmp* "$W"/models/*.tmp* 2>/dev/null
# The carried tree is at most 64 MB (FSDD's WAVs alone are 27 MB): keep the round-0 model of
# the seed in progress (the newest) and retrain an older seed's when phase 2 reaches it.
if [ "${KEEP_MODELS:-newest}" = newest ] && [ -d "$W/models" ]; then
  ls -t "$W"/models/*.msgpack 2>/dev/null | tail -n +2 | xargs -r rm -f
fi
(cd "$W" && tar cf - $(ls -d *.json *.npz models checkpoints logs 2>/dev/null)) \
  | split -b 15M -d - "$OUT/state.tar.part-"
parts=$(ls "$OUT"/state.tar.part-* | wc -l)
echo "state out: $parts part(s), $(du -ch "$OUT"/state.tar.part-* | tail -1 | cut -f1)"
if [ "$parts" -gt 7 ]; then echo "state too large for one device call's 8 files"; exit 1; fi
exit $rc
