r"""One strategy of one AL experiment against the strategies of another, seed by seed.

For ablations: e.g. bilevel with the paper's selection settings against the cpu-scale
comparison it was branched from (same seeds, pools, streams and round-0 models):

  python -m experiments.compare_runs \
      --run=results/active_learning/fsdd_cpu_bilevel_paper_selection \
      --name="Bilevel (m=2000, 1000 steps)" --against=results/active_learning/fsdd_cpu \
      --out=results/active_learning/fsdd_cpu_bilevel_paper_selection/comparison.md

Writes a markdown file (and a JSON next to it) with the mean accuracy per round of both runs
and the paired differences (`bilevel_jax.reports.tables.paired`).
"""

from __future__ import annotations

import pathlib
import shlex
import sys

from absl import app
from absl import flags

from bilevel_jax.reports import tables
from bilevel_jax.utils import io

_RUN = flags.DEFINE_string(
  "run", None, "Result folder (or JSON) of the run compared.", required=True
)
_STRATEGY = flags.DEFINE_string("strategy", "bilevel", "Strategy of --run compared.")
_NAME = flags.DEFINE_string("name", None, "Display name of --run's strategy.", required=True)
_AGAINST = flags.DEFINE_multi_string(
  "against", None, "Result folders (or JSONs) of the reference experiment.", required=True
)
_OUT = flags.DEFINE_string("out", None, "Output markdown path (.md).", required=True)


def compare(run: str, strategy: str, name: str, against: list[str]) -> tuple[str, dict]:
  """(markdown, summary) of `strategy` in `run`, renamed `name`, against every strategy in
  `against`. Raises ValueError when `run` holds no such strategy or the datasets differ."""
  base = tables.load_results(against)
  try:
    records = tables.with_variants(base, [tables.Variant(run, strategy, name)])
  except ValueError as e:
    raise ValueError(f"--run={run}: {e}") from e
  table = tables.aggregate(records)
  pairs = tables.paired(records, reference=name)
  md = (
    "Test accuracy %, mean ± sample std over seeds (n = seeds):\n\n"
    + tables.rounds_markdown(table)
    + "\n\n"
    + f"{name} minus each strategy of the reference "
    "run, same seeds: mean difference in points (wins-losses[-ties]).\n\n"
    + tables.paired_markdown(pairs, reference=name)
    + "\n"
  )
  summary = {
    "run": str(run),
    "strategy": strategy,
    "name": name,
    "against": list(against),
    "accuracy_percent": tables.cells_json(table),
    "paired": tables.cells_json(pairs),
  }
  return md, summary


def main(argv):
  del argv
  md, summary = compare(_RUN.value, _STRATEGY.value, _NAME.value, _AGAINST.value)
  out = pathlib.Path(_OUT.value)
  summary["command"] = "python -m experiments.compare_runs " + " ".join(
    shlex.quote(a) for a in sys.argv[1:]
  )
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(md)
  io.atomic_write_json(out.with_suffix(".json"), summary)
  print(md)


if __name__ == "__main__":
  app.run(main)
