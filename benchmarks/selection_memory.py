"""Peak memory of an in-memory selection against pool size, and the largest pool for a budget.

Each pool size runs in a fresh process (ru_maxrss is a high-water mark): synthetic features
(P, m) and pseudo-labels (P, c) are made, then one `select_batch` (b = 10) runs. Memory does
not depend on the number of inner steps, so `--inner_steps` may be cut to save time. A least-
squares line peak = a + k * P over the measured pools gives the largest P under `--budget_gib`.

  python -m benchmarks.selection_memory --pools=5000,20000,85000,200000 --m=2000 --c=35 \
      --out=benchmarks/results/selection_memory_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def _child(p, m, c, inner_steps):
  import jax
  import jax.numpy as jnp
  from bilevel_jax.bilevel import select as S
  from bilevel_jax.scaling import synthetic as syn

  rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  base = rss()
  spec = syn.SyntheticSpec(n=p, m=m, c=c, copies=16, seed=0)
  z = np.empty((p, m), np.float32)
  y = np.empty((p, c), np.float32)
  t = np.empty((p,), np.int32)
  for j in range(-(-p // syn.BLOCK)):  # block by block: no full-size temporaries
    lo, hi = j * syn.BLOCK, min((j + 1) * syn.BLOCK, p)
    zz, yy, tt = syn.block(spec, j)
    z[lo:hi], y[lo:hi], t[lo:hi] = (np.asarray(a)[: hi - lo] for a in (zz, yy, tt))
  zj, yj = jnp.asarray(z), jnp.asarray(y)
  del z, y
  data = rss()
  n_lab = 10 if c <= 10 else 50
  lab = np.arange(n_lab, dtype=np.int32)
  params = syn.bank_params(zj, 16)
  bank = jnp.stack([syn.bank_fn(params, jax.random.key(i), jnp.int32(i)) for i in lab])
  s = time.perf_counter()
  sel = S.select_batch(
    jax.random.key(1),
    zj,
    yj,
    lab,
    t[lab],
    bank,
    syn.bank_fn,
    params,
    b=10,
    inner_steps=inner_steps,
    validate=False,
  )
  jax.block_until_ready(sel.indices)
  return {
    "pool": p,
    "m": m,
    "c": c,
    "rss_gib_start": base,
    "rss_gib_after_data": data,
    "rss_gib_peak": rss(),
    "select_first_call_s": time.perf_counter() - s,
    "features_gib": p * m * 4 / 2**30,
  }


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--pools", default="5000,20000,85000,200000")
  ap.add_argument("--m", type=int, default=2000)
  ap.add_argument("--c", type=int, default=35)
  ap.add_argument("--inner_steps", type=int, default=100)
  ap.add_argument("--budget_gib", type=float, default=24.0)
  ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args._child:
    print(json.dumps(_child(int(args._child), args.m, args.c, args.inner_steps)))
    return
  try:
    pools = [int(v) for v in args.pools.split(",")]
  except ValueError:
    raise SystemExit(f"--pools must be comma-separated integers, got {args.pools!r}")
  if len(pools) < 2 or min(pools) < 100:
    raise SystemExit(f"--pools needs at least two sizes >= 100, got {args.pools!r}")
  from bilevel_jax.utils import io

  argv = argv if argv is not None else sys.argv[1:]
  res = {
    "command": "python -m benchmarks.selection_memory " + " ".join(argv),
    "cpu_count": os.cpu_count(),
    "runs": [],
  }
  for p in pools:
    proc = subprocess.run(
      [sys.executable, "-m", "benchmarks.selection_memory", "--_child", str(p)]
      + [a for a in argv if not a.startswith("--_")],
      capture_output=True,
      text=True,
    )
    if proc.returncode:
      res["runs"].append({"pool": p, "error": proc.stderr[-1500:]})
    else:
      res["runs"].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(res["runs"][-1], flush=True)
    io.atomic_write_json(args.out, res)
  ok = [r for r in res["runs"] if "rss_gib_peak" in r]
  if len(ok) >= 2:
    ps = np.array([r["pool"] for r in ok], float)
    peaks = np.array([r["rss_gib_peak"] for r in ok])
    k, a = np.polyfit(ps, peaks, 1)
    res["fit"] = {
      "gib_per_point": k,
      "intercept_gib": a,
      "bytes_per_point": k * 2**30,
      "largest_pool_for_budget": int((args.budget_gib - a) / k),
      "budget_gib": args.budget_gib,
    }
    print(res["fit"])
  io.atomic_write_json(args.out, res)


if __name__ == "__main__":
  main()
