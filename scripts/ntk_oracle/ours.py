"""Our side of the neural-tangents comparison; runs in the main venv, called by compare.py.

python scripts/ntk_oracle/ours.py --n=64 --depth=28 --shortcut_size=1 --workdir=DIR
Writes DIR/x.npy (real FSDD log-mels), DIR/ours.npz (nngp, ntk; with --x64 also nngp64, ntk64
from the float64 one-shot kernel) and DIR/ours.json (timings; none with --reps=0).
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
from bilevel_jax.ntk import wrn_kernel as wk


def _timed(fn, reps):
  fn()  # compile + warm up
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
  ap.add_argument("--activation", default="relu", choices=wk.ACTIVATIONS)
  ap.add_argument("--leaky_slope", type=float, default=wk.TRAINED_LEAKY_SLOPE)
  ap.add_argument("--final_activation", type=int, default=0, choices=(0, 1))
  ap.add_argument("--x64", action="store_true", help="also the float64 kernel (nngp64, ntk64)")
  a = ap.parse_args()
  arch = dict(
    depth=a.depth,
    shortcut_size=a.shortcut_size,
    activation=a.activation,
    leaky_slope=a.leaky_slope,
    final_activation=bool(a.final_activation),
  )
  work = pathlib.Path(a.workdir)
  work.mkdir(parents=True, exist_ok=True)
  x = inputs.fsdd_log_mels(a.n, seed=a.seed)
  np.save(work / "x.npy", x)
  kw = dict(arch, tile=tuple(a.tile), progress=False)
  k = km.kernel_matrix(x, x, kind="both", **kw)
  out = dict(nngp=k.nngp, ntk=k.ntk)
  if a.x64:
    jax.config.update("jax_enable_x64", True)
    x64 = x.astype(np.float64)
    rows = [wk.wrn_kernel(x64[i : i + 8], x64, **arch) for i in range(0, a.n, 8)]
    out.update(
      nngp64=np.concatenate([np.asarray(r.nngp) for r in rows]),
      ntk64=np.concatenate([np.asarray(r.ntk) for r in rows]),
    )
    jax.config.update("jax_enable_x64", False)
  np.savez(work / "ours.npz", **out)
  if a.reps == 0:
    (work / "ours.json").write_text(json.dumps(dict(n=a.n, arch=arch, jax=jax.__version__)))
    return
  cross = _timed(lambda: km.kernel_matrix(x, x, kind="both", **kw), a.reps)
  sym = _timed(lambda: km.kernel_matrix(x, kind="both", **kw), a.reps)
  entries = a.n * a.n
  res = dict(
    n=a.n,
    entries=entries,
    tile=a.tile,
    jax=jax.__version__,
    cross=dict(
      wall_s=cross[0],
      cpu_s=cross[1],
      entries_per_s=entries / cross[0],
      entries_per_cpu_s=entries / cross[1],
    ),
    symmetric=dict(
      wall_s=sym[0],
      cpu_s=sym[1],
      entries_per_s=entries / sym[0],
      entries_per_cpu_s=entries / sym[1],
    ),
    loadavg=os.getloadavg(),
    machine=platform.processor() or platform.machine(),
  )
  (work / "ours.json").write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
  main()
