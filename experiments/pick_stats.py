r"""Pick statistics of several selection variants on the same round model, pool and
pseudo-labels (issue 14's decisive experiments; see `bilevel_jax.al.pick_stats`).

  nice -n 10 python -m experiments.pick_stats --config=experiments/configs/pick_stats.py:cpu \
      --config.seeds=100-102 --workdir=runs/pick_stats_dev
  # other variants (JSON {name: {strategy, options, bilevel}}):
  python -m experiments.pick_stats --config=experiments/configs/pick_stats.py:cpu \
      --config.variants='{"cg100": {"strategy": "bilevel", "options": {"cg_steps": 100}}}' ...

Writes `<workdir>/pick_stats_<dataset>_seed<k>_<labeled set>.json` after every variant; rerun
the same command to resume. Round models are cached in `<workdir>/models/`.
"""

from __future__ import annotations

import logging
import shlex
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from bilevel_jax.al import pick_stats
from bilevel_jax.utils import io
from experiments import configs

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (pick_stats.py:MODE).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)


def main(argv):
  del argv
  logging.getLogger("bilevel_jax").setLevel(logging.INFO)
  command = "python -m experiments.pick_stats " + " ".join(shlex.quote(a) for a in sys.argv[1:])
  config = _CONFIG.value
  for path in pick_stats.run(config, _WORKDIR.value, command=command):
    rec = io.read_json(path)
    m = rec["model"]
    print(
      f"{path}: model test accuracy {m['test_accuracy']:.3f}, pool accuracy "
      f"{m['pool_accuracy']:.3f}"
    )
    for name, v in rec["variants"].items():
      d = v["pick_diagnostics"]
      proxy = (
        f", proxy pool acc {d['proxy_pool_accuracy']:.3f} agreement "
        f"{d['proxy_pseudo_agreement']:.3f}"
        if "proxy_pool_accuracy" in d
        else ""
      )
      retrained = (
        f", retrained test acc {v['retrained_test_accuracy']:.3f}"
        if "retrained_test_accuracy" in v
        else ""
      )
      print(
        f"  {name:>12}: {d['picks_misclassified']}/{d['num_picks']} picks misclassified "
        f"(pool error rate {d['pool_error_rate']:.3f}){proxy}{retrained}"
      )


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=configs.parse_flags)  # old config names: a clear error
