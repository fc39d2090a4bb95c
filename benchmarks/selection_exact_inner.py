"""Optional exact inner solver: warm-started L-BFGS on the full bank instead of 1000 Adam steps.

The inner problem (L2 softmax regression on the bank of augmented copies) is small and strongly
convex, so a few full-batch quasi-Newton iterations from the previous greedy step's w reach its
minimiser. `bilevel.select` has no solver hook yet, so for this measurement its
`inner.fit_inner_steps` is swapped at trace time for `lbfgs_fit` (same signature, Adam state
passed through untouched); the paper's Adam settings stay the default everywhere else.
Side by side in one process: time of `select_batch` with Adam vs L-BFGS (K iterations), picks
agreement with Adam and with a long (K = 200) L-BFGS solve, and the final inner objective.

  python -m benchmarks.selection_exact_inner --out=benchmarks/results/selection_exact_inner.json
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def make_lbfgs_fit(iterations):
  import jax
  import jax.numpy as jnp
  import optax
  from bilevel_jax.bilevel import inner

  def lbfgs_fit(key, state, bank, lr, l2, *, steps, batch_size):
    del key, lr, steps, batch_size
    f = lambda w: inner.bank_objective(w, bank, l2)
    opt = optax.lbfgs()
    vg = optax.value_and_grad_from_state(f)

    def body(carry, _):
      w, st = carry
      value, grad = vg(w, state=st)
      upd, st = opt.update(grad, st, w, value=value, grad=grad, value_fn=f)
      return (optax.apply_updates(w, upd), st), value

    (w, _), values = jax.lax.scan(body, (state.w, opt.init(state.w)), None, length=iterations)
    return inner.InnerState(w, state.opt_state), values
  return lbfgs_fit


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--pool", type=int, default=2690)
  ap.add_argument("--m", type=int, default=2000)
  ap.add_argument("--c", type=int, default=10)
  ap.add_argument("--iterations", default="10,30")
  ap.add_argument("--seeds", type=int, default=3)
  args = ap.parse_args(argv)
  iters = [int(v) for v in args.iterations.split(",")]
  if min(iters) < 1 or args.seeds < 1:
    raise SystemExit("--iterations and --seeds need positive integers")
  import jax
  import jax.numpy as jnp
  from bilevel_jax.bilevel import inner
  from bilevel_jax.bilevel import select as S
  from bilevel_jax.scaling import synthetic as syn
  from bilevel_jax.utils import io

  spec = syn.SyntheticSpec(n=args.pool, m=args.m, c=args.c, copies=16, seed=0)
  z, y, t = syn.pool(spec)
  n_lab = 10 if args.c <= 10 else 50
  rng = np.random.default_rng(0)
  lab = np.concatenate([rng.choice(np.flatnonzero(t == k), 1) for k in range(args.c)])
  lab = np.concatenate([lab, rng.choice(np.setdiff1d(np.arange(args.pool), lab),
                                        n_lab - len(lab), replace=False)]).astype(np.int32)
  z, y = jnp.asarray(z), jnp.asarray(y)
  params = syn.bank_params(z, 16)
  bank = jnp.stack([syn.bank_fn(params, jax.random.key(10_000 + i), jnp.int32(i)) for i in lab])
  original = inner.fit_inner_steps

  def run(solver, seed):
    inner.fit_inner_steps = original if solver is None else make_lbfgs_fit(solver)
    try:
      fn = lambda: S.select_batch(jax.random.key(seed), z, y, lab, t[lab], bank, syn.bank_fn,
                                  params, b=10, validate=False)
      jax.clear_caches()                      # the swap happens at trace time
      s = time.perf_counter()
      sel = jax.block_until_ready(fn())
      first = time.perf_counter() - s
      s = time.perf_counter()
      sel = jax.block_until_ready(fn())
      return sel, first, time.perf_counter() - s
    finally:
      inner.fit_inner_steps = original

  res = {"command": "python -m benchmarks.selection_exact_inner " + " ".join(
      argv if argv is not None else sys.argv[1:]), "devices": [str(d) for d in jax.devices()],
         "pool": args.pool, "m": args.m, "c": args.c, "runs": []}
  for seed in range(args.seeds):
    ref, _, _ = run(200, seed)                # near-exact inner solves
    ref_picks = np.asarray(ref.indices)[:9]
    for solver in [None] + iters:
      sel, first, steady = run(solver, seed)
      picks = np.asarray(sel.indices)[:9]
      entry = {"seed": seed, "solver": "adam_1000" if solver is None else f"lbfgs_{solver}",
               "first_call_s": first, "total_s": steady, "picks": picks.tolist(),
               "inner_loss": np.asarray(sel.inner_loss).tolist(),
               "agree_with_lbfgs200": int(np.sum(picks == ref_picks)),
               "cg_residual_max": float(np.max(np.asarray(sel.cg_residual)))}
      res["runs"].append(entry)
      print({k: v for k, v in entry.items() if k not in ("picks", "inner_loss")}, flush=True)
      io.atomic_write_json(args.out, res)
  adam = {r["seed"]: r for r in res["runs"] if r["solver"] == "adam_1000"}
  for r in res["runs"]:
    a = adam[r["seed"]]["picks"]
    r["agree_with_adam"] = int(np.sum(np.asarray(r["picks"]) == np.asarray(a)))
    r["same_set_with_adam"] = len(set(r["picks"]) & set(a))
    r["first_pick_same_as_adam"] = bool(r["picks"][0] == a[0])
  io.atomic_write_json(args.out, res)


if __name__ == "__main__":
  main()
