r"""First bilevel batch under the cpu config's selection settings vs the paper's (SPEC 3).

For each seed, the round-0 MixMatch model's soft predictions saved by the cpu-scale AL run
(`{workdir}/fsdd_{strategy}_seed{s}_round0.npz`: the same initial pool and model for every
strategy of a seed) are the pseudo-labels; the first batch (b = 10) is selected as the AL loop
does (same keys, same augmented-copy banks) with each setting, and we record how many classes
the picks cover and how many of them the initial model misclassifies (paper Fig. 2: 9 and 9),
plus the selection time.

  python -m experiments.first_batch_settings --workdir=runs/al_fsdd_cpu \
      --out=runs/first_batch_settings.json
  (committed: results/active_learning/first_batch_settings.json, made when this was
  scripts/probes/bilevel_settings_first_batch.py reading results/active_learning/fsdd_cpu)
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

import jax
import numpy as np

from bilevel_jax import strategies
from bilevel_jax.al import loop
from bilevel_jax.al import outputs as outputs_lib
from bilevel_jax.al import pool as pool_lib
from bilevel_jax.utils import io
from experiments.configs import fsdd

SETTINGS = {
  "cpu (m=256, 300 inner steps)": dict(landmarks=256, inner_steps=300),
  "paper (m=2000, 1000 inner steps)": dict(landmarks=2000, inner_steps=1000),
}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--workdir", default="runs/al_fsdd_cpu")
  ap.add_argument("--strategy", default="uniform", help="whose round-0 npz to read")
  ap.add_argument("--seeds", default="0,1,2,3,4,5")
  ap.add_argument("--out", default="runs/first_batch_settings.json")
  args = ap.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  files = {
    s: pathlib.Path(args.workdir) / f"fsdd_{args.strategy}_seed{s}_round0.npz" for s in seeds
  }
  missing = [str(p) for p in files.values() if not p.exists()]
  if missing:
    raise FileNotFoundError(f"round-0 outputs missing: {missing}; run the cpu AL config first.")

  base = fsdd.get_config("cpu")
  base.progress = True
  data = loop.load_data(base)
  out = {
    "command": " ".join([sys.executable] + sys.argv),
    "jax": jax.__version__,
    "device": str(jax.devices()[0].device_kind),
    "settings": {},
  }
  for name, overrides in SETTINGS.items():
    config = fsdd.get_config("cpu")
    config.progress = True
    config.bilevel.update(overrides)
    t0 = time.perf_counter()
    prepared = strategies.inputs.prepare("bilevel", config, data, progress=True)
    kernel_seconds = time.perf_counter() - t0
    rows = []
    for s in seeds:
      with np.load(files[s]) as f:
        probs, emb, labeled = f["probs"], f["embeddings"], f["labeled_idx"]
      outs = outputs_lib.ModelOutputs(probs=probs, embeddings=emb, aug_probs=None)
      st = pool_lib.streams(s)
      ctx = outputs_lib.round_context(
        outs, data.train_labels, labeled, **prepared.context(s, labeled, st.bank)
      )
      t0 = time.perf_counter()
      picks = np.asarray(
        strategies.select(
          "bilevel",
          pool_lib.round_key(st.select, 0),
          ctx,
          config.al.batch_size_per_round,
          **prepared.options,
        )
      )
      seconds = time.perf_counter() - t0
      pred = probs.argmax(-1)
      rows.append(
        dict(
          seed=s,
          picks=picks.tolist(),
          classes=int(len(set(data.train_labels[picks].tolist()))),
          misclassified=int(np.sum(pred[picks] != data.train_labels[picks])),
          select_seconds=seconds,
        )
      )
      print(name, rows[-1], flush=True)
    out["settings"][name] = dict(
      overrides=overrides,
      kernel_seconds=kernel_seconds,
      seeds=rows,
      mean_classes=float(np.mean([r["classes"] for r in rows])),
      mean_misclassified=float(np.mean([r["misclassified"] for r in rows])),
    )
    io.atomic_write_json(args.out, out)
  names = list(out["settings"])
  a, b = (out["settings"][n]["seeds"] for n in names)
  out["shared_picks_per_seed"] = [len(set(x["picks"]) & set(y["picks"])) for x, y in zip(a, b)]
  io.atomic_write_json(args.out, out)
  for n in names:
    v = out["settings"][n]
    print(f"{n}: classes {v['mean_classes']:.1f}, misclassified {v['mean_misclassified']:.1f}")


if __name__ == "__main__":
  main()
