r"""Table 1 (markdown + LaTeX), Figures 2-3 and the pick-rate figure (misclassified-pick rate
vs pool error rate per round, `bilevel_jax.reports.pick_rates`) from AL result JSON files.

  python -m experiments.report --results=results/active_learning/fsdd_cpu \
      --out=results/active_learning/fsdd_cpu/report \
      --variant=results/active_learning/fsdd_cpu_bilevel_embed_exact:bilevel_embed:Bilevel-embed

`--variant` adds a strategy of another run (same seeds and pools) as a row of its own.

Figure 2 is drawn from the round-0 file `<dataset>_<strategy>_seed<k>_round0.npz` written by the
AL loop next to the JSON (git-ignored; a fresh t-SNE), else from the committed t-SNE points
`figure2_points.json` of that same file in --out or in `report/` next to the JSON; without
either only the tables and Figure 3 are made.
"""

from __future__ import annotations

import shlex
import sys

from absl import app
from absl import flags

from bilevel_jax import reports

_RESULTS = flags.DEFINE_multi_string(
  "results", None, "Result JSON files or folders of them.", required=True
)
_OUT = flags.DEFINE_string("out", None, "Output folder for tables and figures.", required=True)
_FIG2_STRATEGY = flags.DEFINE_string("figure2_strategy", "bilevel", "Strategy of Figure 2.")
_FIG2_SEED = flags.DEFINE_integer("figure2_seed", 0, "Seed of Figure 2.")
_REFERENCE = flags.DEFINE_string(
  "reference", "bilevel", "Strategy compared seed by seed with each other (paired.md)."
)
_VARIANT = flags.DEFINE_multi_string(
  "variant",
  [],
  "PATH:STRATEGY:NAME: the strategy STRATEGY of the results in PATH (a variant or ablation "
  "on the same seeds) added as row NAME, with its own section in paired.md.",
)


def main(argv):
  del argv
  command = "python -m experiments.report " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  try:
    variants = [reports.tables.parse_variant(v) for v in _VARIANT.value]
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  out = reports.write_report(
    _RESULTS.value,
    _OUT.value,
    command=command,
    figure2_strategy=_FIG2_STRATEGY.value,
    figure2_seed=_FIG2_SEED.value,
    reference=_REFERENCE.value,
    variants=variants,
  )
  print(out["table_markdown"])
  print()
  print(out["rounds_markdown"])
  if out["paired_markdown"]:
    print()
    print(out["paired_markdown"])
  print(
    f"\nwritten: {out['table1']}, {out['figure3']}"
    + (f", {out['figure2']}" if "figure2" in out else "")
    + (f", {out['pick_rates']}" if "pick_rates" in out else "")
  )
  if "figure2_counts" in out:
    c = out["figure2_counts"]
    print(
      f"Figure 2: first-round picks cover {c['classes_covered']} classes, "
      f"{c['misclassified']}/{c['num_picks']} misclassified by the initial model."
    )


if __name__ == "__main__":
  app.run(main)
