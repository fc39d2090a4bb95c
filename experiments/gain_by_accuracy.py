r"""Each selection rule's gain over baselines against the round model's pool accuracy
(`bilevel_jax.reports.regime`): does a rule that scores through pseudo-labels gain more when the
model is more accurate? Observational (pool accuracy grows with the round).

  python -m experiments.gain_by_accuracy --results=results/active_learning/fsdd_cpu \
      --variant=results/active_learning/fsdd_cpu_bilevel_embed_exact:bilevel_embed:Bilevel-embed \
      --strategy=bilevel --strategy=kcenter --strategy=Bilevel-embed \
      --out=results/active_learning/fsdd_cpu/report/gain_by_accuracy.md

Writes the markdown and a JSON next to it (with the command).
"""

from __future__ import annotations

import pathlib
import shlex
import sys

from absl import app
from absl import flags

from bilevel_jax.reports import regime
from bilevel_jax.reports import tables
from bilevel_jax.utils import io

_RESULTS = flags.DEFINE_multi_string("results", None, "Result folders or JSONs.", required=True)
_VARIANT = flags.DEFINE_multi_string(
  "variant", [], "PATH:STRATEGY:NAME: a strategy of another run added as NAME (as in report)."
)
_STRATEGY = flags.DEFINE_multi_string(
  "strategy", ["bilevel"], "A strategy (or variant name) analysed; repeat for several."
)
_BASELINES = flags.DEFINE_list("baselines", ["uniform", "kcenter"], "Baselines compared with.")
_OUT = flags.DEFINE_string("out", None, "Output markdown path (.md).", required=True)


def main(argv):
  del argv
  try:
    variants = [tables.parse_variant(v) for v in _VARIANT.value]
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  records = tables.with_variants(tables.load_results(_RESULTS.value), variants)
  known = {r["strategy"] for r in records}
  missing = sorted(set(_STRATEGY.value + _BASELINES.value) - known)
  if missing:
    raise app.UsageError(
      f"--strategy/--baselines name {missing}, not in the results (they hold {sorted(known)})."
    )
  summary = {
    "command": "python -m experiments.gain_by_accuracy "
    + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    "sources": sorted({r["_path"] for r in records}),
    "strategies": {},
  }
  parts = [
    "Test accuracy gain at round r + 1 (points; wins-losses over (seed, round) pairs) by the "
    "round-r model's accuracy on the pool. Observational: pool accuracy grows with the round."
  ]
  for name in _STRATEGY.value:
    table = regime.gain_by_accuracy(records, name, [b for b in _BASELINES.value if b != name])
    summary["strategies"][name] = table
    parts.append(regime.markdown(tables.DISPLAY.get(name, name), table))
  out = pathlib.Path(_OUT.value)
  out.parent.mkdir(parents=True, exist_ok=True)
  md = "\n\n".join(parts) + "\n"
  out.write_text(md)
  io.atomic_write_json(out.with_suffix(".json"), summary)
  print(md)


if __name__ == "__main__":
  app.run(main)
