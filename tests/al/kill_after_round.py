"""Runs `experiments.active_learning` and SIGKILLs it right after round K of a result is saved.

  python tests/al/kill_after_round.py K --config=... --workdir=...   (from the repository root)

Used by the resume test: a run killed between rounds must resume to the same selections.
"""

import os
import signal
import sys

from absl import app

from bilevel_jax.al import results
from experiments import active_learning


def main():
  try:
    after = int(sys.argv[1])
  except (IndexError, ValueError):
    raise SystemExit(f"usage: {sys.argv[0]} ROUND [active_learning flags]; got {sys.argv[1:]}")
  save = results.save

  def save_then_kill(path, record):
    save(path, record)
    if record["rounds"] and record["rounds"][-1]["round"] == after:
      sys.stdout.flush()
      sys.stderr.flush()
      os.kill(os.getpid(), signal.SIGKILL)

  results.save = save_then_kill
  sys.argv = [active_learning.__file__] + sys.argv[2:]
  active_learning.flags.mark_flags_as_required(["config"])
  app.run(active_learning.main)


if __name__ == "__main__":
  main()
