"""Throughput of the WRN-28 infinite-width kernel (bilevel_jax.ntk) against tile size.

  python -m benchmarks.ntk_throughput --out=benchmarks/results/ntk_throughput.json
  # ~5-15 min on 2 busy CPU cores (compiles one program per tile shape, ~10 s each)

Times k(X1, X2) (NNGP and NTK together) of real FSDD log-mels with `kernel_matrix` (cross
kernel, no symmetry used), compile excluded, median of --reps, and reports entries/s in wall and
process-CPU time. From the best tile it estimates the paper-scale landmark kernel
k(train 2700, U) with m = 2000 landmarks (5.4M entries; landmarks are training points, so this
also yields K_UU).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import jax
import numpy as np

from bilevel_jax.testing import inputs
from bilevel_jax.ntk import kernel_matrix as km
from bilevel_jax.utils import io


def _time(fn, reps):
  t0 = time.perf_counter()
  fn()
  compile_s = time.perf_counter() - t0
  wall, cpu = [], []
  for _ in range(reps):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return compile_s, float(np.median(wall)), float(np.median(cpu))


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--n1", type=int, default=32)
  ap.add_argument("--n2", type=int, default=64)
  ap.add_argument("--depth", type=int, default=28)
  ap.add_argument(
    "--tiles", default="8x16,8x32,16x16,16x32,32x32", help="comma-separated T1xT2 tile shapes"
  )
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--train", type=int, default=2700, help="rows of the estimated k(X, U)")
  ap.add_argument("--m", type=int, default=2000, help="landmarks of the estimated k(X, U)")
  ap.add_argument("--out", required=True)
  a = ap.parse_args(argv)
  try:
    tiles = [tuple(int(v) for v in t.split("x")) for t in a.tiles.split(",")]
    assert all(len(t) == 2 and min(t) > 0 for t in tiles)
  except (ValueError, AssertionError):
    raise SystemExit(f"--tiles={a.tiles!r}; expected e.g. 8x16,16x16")
  x = inputs.fsdd_log_mels(a.n1 + a.n2, seed=0)
  x1, x2 = x[: a.n1], x[a.n1 :]
  entries = a.n1 * a.n2
  rows = []
  for t in tiles:
    c, w, p = _time(
      lambda: km.kernel_matrix(x1, x2, kind="both", depth=a.depth, tile=t, progress=False), a.reps
    )
    rows.append(
      dict(
        tile=list(t),
        compile_and_first_s=c,
        wall_s=w,
        cpu_s=p,
        entries_per_s=entries / w,
        entries_per_cpu_s=entries / p,
        us_per_entry=1e6 * w / entries,
      )
    )
    print(
      f"tile {t}: {entries / w:8.0f} entries/s wall, {entries / p:8.0f} per CPU-s, "
      f"compile+first {c:.1f}s",
      flush=True,
    )
  best = max(rows, key=lambda r: r["entries_per_s"])
  big = a.train * a.m
  res = dict(
    command="python -m benchmarks.ntk_throughput "
    + " ".join(sys.argv[1:] if argv is None else argv),
    what="k(X1, X2) NNGP+NTK of WRN-%d, real FSDD log-mels (32, 32, 1), float32" % a.depth,
    n1=a.n1,
    n2=a.n2,
    entries=entries,
    depth=a.depth,
    reps=a.reps,
    results=rows,
    best_tile=best["tile"],
    estimate=dict(
      entries=big,
      rows=a.train,
      landmarks=a.m,
      wall_s=big / best["entries_per_s"],
      wall_min=big / best["entries_per_s"] / 60,
    ),
    loadavg_at_end=os.getloadavg(),
    cpu_count=os.cpu_count(),
    jax=jax.__version__,
    machine=platform.processor() or platform.machine(),
  )
  io.atomic_write_json(a.out, res)
  print(f"best tile {best['tile']}: k({a.train}, U={a.m}) ~ {res['estimate']['wall_min']:.1f} min")


if __name__ == "__main__":
  main()
