"""Optional exact inner solver: warm-started L-BFGS on the full bank instead of 1000 Adam steps.

The inner problem (L2 softmax regression on the bank of augmented copies) is small and strongly
convex, so a few full-batch quasi-Newton iterations from the previous greedy step's w reach its
minimiser. `select_batch(..., inner_solver=inner.LBFGSSolver(K))` swaps it in; the paper's Adam
(1000 steps, batch 64, lr 1e-3) stays the default. For each problem seed (synthetic FSDD-sized
pool, its own labeled set and key) one process times, side by side: Adam, L-BFGS with each K in
`--iterations`, and a long L-BFGS (K = `--reference`, treated as the exact inner minimiser), and
records picks, agreement with Adam's picks and with the exact picks, and F at the first greedy
step (same bank for every solver, so it shows how far 1000 Adam steps stop from the minimum).

  python -m benchmarks.selection_exact_inner --out=benchmarks/results/selection_exact_inner.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--pool", type=int, default=2690)
  ap.add_argument("--m", type=int, default=2000)
  ap.add_argument("--c", type=int, default=10)
  ap.add_argument("--iterations", default="10,20,30")
  ap.add_argument("--reference", type=int, default=200)
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--repeats", type=int, default=2, help="timed calls per solver (median)")
  args = ap.parse_args(argv)
  try:
    iters = [int(v) for v in args.iterations.split(",") if v]
  except ValueError:
    raise SystemExit(f"--iterations must be comma-separated ints, got {args.iterations!r}")
  if not iters or min(iters) < 1 or args.seeds < 1 or args.reference < 1 or args.repeats < 1:
    raise SystemExit("--iterations, --reference, --seeds and --repeats need positive integers")
  import jax
  import jax.numpy as jnp
  from bilevel_jax.bilevel import inner
  from bilevel_jax.bilevel import select as S
  from bilevel_jax.scaling import synthetic as syn
  from bilevel_jax.utils import io

  solvers = {"adam_1000": None}
  solvers.update({f"lbfgs_{k}": inner.LBFGSSolver(k) for k in iters})
  solvers[f"lbfgs_{args.reference}"] = inner.LBFGSSolver(args.reference)
  ref_name = f"lbfgs_{args.reference}"
  res = {
    "command": " ".join(
      [os.path.basename(sys.executable), "-m", "benchmarks.selection_exact_inner"]
      + (argv if argv is not None else sys.argv[1:])
    ),
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
    "settings": {
      "pool": args.pool,
      "m": args.m,
      "c": args.c,
      "copies": 16,
      "b": 10,
      "adam": "1000 steps, batch 64, lr 1e-3",
      "cg_steps": 30,
      "l2": 1e-4,
    },
    "runs": [],
  }
  compile_s = {}
  for seed in range(args.seeds):
    spec = syn.SyntheticSpec(n=args.pool, m=args.m, c=args.c, copies=16, seed=seed)
    z, y, t = syn.pool(spec)
    rng = np.random.default_rng(seed)
    lab = np.concatenate(
      [rng.choice(np.flatnonzero(t == k), 1) for k in range(args.c) if np.any(t == k)]
    )
    lab = np.concatenate(
      [
        lab,
        rng.choice(np.setdiff1d(np.arange(args.pool), lab), max(10 - len(lab), 0), replace=False),
      ]
    ).astype(np.int32)
    z, y = jnp.asarray(z), jnp.asarray(y)
    params = syn.bank_params(z, 16)
    bank = jnp.stack([syn.bank_fn(params, jax.random.key(10_000 + i), jnp.int32(i)) for i in lab])
    per = {}
    for name, solver in solvers.items():
      fn = lambda: S.select_batch(
        jax.random.key(seed),
        z,
        y,
        lab,
        t[lab],
        bank,
        syn.bank_fn,
        params,
        b=10,
        validate=False,
        inner_solver=solver,
      )
      s = time.perf_counter()
      sel = jax.block_until_ready(fn())
      first = time.perf_counter() - s
      times = []
      for _ in range(args.repeats):
        s = time.perf_counter()
        sel = jax.block_until_ready(fn())
        times.append(time.perf_counter() - s)
      steady = float(np.median(times))
      if name not in compile_s:
        compile_s[name] = max(first - steady, 0.0)
      per[name] = {
        "seed": seed,
        "solver": name,
        "total_s": steady,
        "picks": np.asarray(sel.indices)[:9].tolist(),
        "inner_loss": np.asarray(sel.inner_loss).tolist(),
        "cg_residual_max": float(np.max(np.asarray(sel.cg_residual))),
      }
    adam, ref = per["adam_1000"], per[ref_name]
    for name, entry in per.items():
      picks = np.asarray(entry["picks"])
      entry.update(
        {
          "speedup_vs_adam": adam["total_s"] / entry["total_s"],
          "agree_with_adam": int(np.sum(picks == np.asarray(adam["picks"]))),
          "same_set_with_adam": len(set(entry["picks"]) & set(adam["picks"])),
          "first_pick_same_as_adam": bool(entry["picks"][0] == adam["picks"][0]),
          "agree_with_exact": int(np.sum(picks == np.asarray(ref["picks"]))),
          "same_set_with_exact": len(set(entry["picks"]) & set(ref["picks"])),
          "first_step_inner_loss_minus_exact": entry["inner_loss"][0] - ref["inner_loss"][0],
        }
      )
      res["runs"].append(entry)
      print({k: v for k, v in entry.items() if k not in ("picks", "inner_loss")}, flush=True)
    res["compile_s"] = compile_s
    io.atomic_write_json(args.out, res)

  summary = {}
  for name in solvers:
    rows = [r for r in res["runs"] if r["solver"] == name]
    summary[name] = {
      "median_total_s": float(np.median([r["total_s"] for r in rows])),
      "median_speedup_vs_adam": float(np.median([r["speedup_vs_adam"] for r in rows])),
      "mean_same_set_with_adam_of_9": float(np.mean([r["same_set_with_adam"] for r in rows])),
      "mean_agree_with_adam_of_9": float(np.mean([r["agree_with_adam"] for r in rows])),
      "first_pick_same_as_adam": f"{sum(r['first_pick_same_as_adam'] for r in rows)}/{len(rows)}",
      "mean_same_set_with_exact_of_9": float(np.mean([r["same_set_with_exact"] for r in rows])),
      "median_first_step_inner_loss_minus_exact": float(
        np.median([r["first_step_inner_loss_minus_exact"] for r in rows])
      ),
    }
  res["summary"] = summary
  io.atomic_write_json(args.out, res)
  print(summary)


if __name__ == "__main__":
  main()
