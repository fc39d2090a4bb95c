"""Active learning on Speech Commands V2, 35 words (paper Section 3, Table 1 right column).

Needs the extracted V2 folder under the data root (`speech_commands_v2/` with
`validation_list.txt`, `testing_list.txt`, `_background_noise_/`); the 563-clip sample on these
machines has no training split, so only `tiny` runs without the full data (and fails clearly).

Modes: `paper` (50 -> 200 labels, b = 10, 6 seeds, WRN-28-2 with 1e5 MixMatch steps per
round, 2000 landmarks; accelerator), `cpu` (same protocol at the MixMatch `cpu` scale).

  python -m experiments.active_learning --config=experiments/configs/speech_commands.py:paper \
      --workdir=runs/al_speech_commands_paper

(Seeds one after another, the default: at paper scale vmapped seeds ran 0.61x as fast on an
H200, `benchmarks/results/vmap_seeds_h200_paper.json`.)
"""

from __future__ import annotations

import ml_collections

from experiments import configs
from experiments.configs import fsdd

MODES = ("tiny", "cpu", "paper")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  mode = configs.check_mode("speech_commands", arg, "paper", MODES)
  c = fsdd.get_config(mode)
  c.dataset = "speech_commands"
  c.al.update(initial=50, budget=200, batch_size_per_round=10)
  if mode == "tiny":
    c.al.update(initial=35, budget=45, batch_size_per_round=5)
    c.subset.update(train=500, test=200)
  return c
