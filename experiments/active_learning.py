r"""Active learning with MixMatch: the paper's comparison of selection strategies.

  python -m experiments.active_learning --config=experiments/configs/fsdd.py:quick \
      --workdir=runs/al_fsdd_quick
  python -m experiments.active_learning --config=experiments/configs/fsdd.py:cpu \
      --config.strategy=bilevel --config.seed=0 --workdir=runs/al_fsdd_cpu [--resume]

Writes one result JSON per (dataset, strategy, seed) into the workdir after every round
(`bilevel_jax.al.results`); with `config.report` it ends by printing Table 1 (final budget,
every round, seed by seed) and saving Figure 3 into `<workdir>/report/`.

`--time_budget=SECONDS`: after that wall time the training in progress saves a checkpoint (in
`<workdir>/checkpoints/`) and the program exits with status 75 (EX_TEMPFAIL); rerun with
`--resume` to continue from it. Status 0: finished; anything else: an error.
"""

from __future__ import annotations

import logging
import shlex
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from bilevel_jax.al import loop
from bilevel_jax.utils import budget
from bilevel_jax.utils import locks
from experiments import configs

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (fsdd.py:MODE).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_RESUME = flags.DEFINE_bool("resume", False, "Continue partial result files in the workdir.")
_ON_ERROR = flags.DEFINE_enum(
  "on_error",
  "raise",
  ["raise", "skip"],
  "Bad audio files: 'raise' one error naming them all, or 'skip' them (logged).",
)
_TIME_BUDGET = flags.DEFINE_float(
  "time_budget",
  None,
  "Wall seconds; then checkpoint and exit with status "
  f"{budget.EXIT_TIME_BUDGET} (continue with --resume).",
)


def main(argv):
  del argv
  logging.getLogger("bilevel_jax").setLevel(logging.INFO)
  command = "python -m experiments.active_learning " + " ".join(
    shlex.quote(a) for a in sys.argv[1:]
  )
  config = _CONFIG.value
  loop.plan(config)  # a bad config fails before the workdir is created
  # One run per workdir, report included (the loop's lock is re-entrant).
  with locks.workdir_lock(_WORKDIR.value, command):
    _run_and_report(config, command)


def _run_and_report(config, command: str) -> None:
  deadline = budget.Deadline(_TIME_BUDGET.value)
  try:
    files = loop.run(
      config,
      _WORKDIR.value,
      resume=_RESUME.value,
      command=command,
      on_error=_ON_ERROR.value,
      deadline=deadline,
    )
  except budget.TimeBudgetExceeded as e:
    print(f"Stopped: {e}. Continue with --resume.", flush=True)
    sys.exit(budget.EXIT_TIME_BUDGET)
  if config.report:
    from bilevel_jax import reports  # pylint: disable=g-import-not-at-top

    out = reports.write_report(files, f"{_WORKDIR.value}/report", command=command)
    print(out["table_markdown"])
    print("\nEvery round:\n\n" + out["rounds_markdown"])
    if out["paired_markdown"]:
      print("\nSeed by seed (accuracy points, wins-losses):\n\n" + out["paired_markdown"])
    print(f"Figure 3: {out['figure3']}")
    if "figure2" in out:
      c = out["figure2_counts"]
      print(
        f"Figure 2: {out['figure2']} (first-round picks cover {c['classes_covered']} "
        f"classes, {c['misclassified']}/{c['num_picks']} misclassified by the initial model)"
      )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=configs.parse_flags)  # old config names: a clear error
