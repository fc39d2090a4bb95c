"""Our side of the neural-tangents comparison; runs in the main venv, called by compare.py.

python scripts/ntk_oracle/ours.py --n=64 --depth=28 --shortcut_size=1 --workdir=DIR
Writes DIR/x.npy (real FSDD log-mels), DIR/ours.npz (nngp, ntk) and DIR/ours.json (timings).
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import time

import jax
import numpy as np

from bilevel_jax.testing import inputs
from bilevel_jax.ntk import kernel_matrix as km


def _timed(fn, reps):
  fn()                                       # compile + warm up
  wall, cpu = [], []
  for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return float(np.median(wall)), float(np.median(cpu))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--n", type=int, default=64)
  ap.add_argument("--depth", type=int, default=28)
  ap.add_argument("--shortcut_size", type=int, default=1)
  ap.add_argument("--tile", type=int, nargs=2, default=list(km.DEFAULT_TILE))
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--workdir", required=True)
  a = ap.parse_args()
  work = pathlib.Path(a.workdir)
  work.mkdir(parents=True, exist_ok=True)
  x = inputs.fsdd_log_mels(a.n, seed=a.seed)
  np.save(work / "x.npy", x)
  kw = dict(depth=a.depth, shortcut_size=a.shortcut_size, tile=tuple(a.tile), progress=False)
  k = km.kernel_matrix(x, x, kind="both", **kw)
  np.savez(work / "ours.npz", nngp=k.nngp, ntk=k.ntk)
  cross = _timed(lambda: km.kernel_matrix(x, x, kind="both", **kw), a.reps)
  sym = _timed(lambda: km.kernel_matrix(x, kind="both", **kw), a.reps)
  entries = a.n * a.n
  res = dict(
      n=a.n, entries=entries, tile=a.tile, jax=jax.__version__,
      cross=dict(wall_s=cross[0], cpu_s=cross[1], entries_per_s=entries / cross[0],
                 entries_per_cpu_s=entries / cross[1]),
      symmetric=dict(wall_s=sym[0], cpu_s=sym[1], entries_per_s=entries / sym[0],
                     entries_per_cpu_s=entries / sym[1]),
      loadavg=os.getloadavg(), machine=platform.processor() or platform.machine())
  (work / "ours.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
  main()
