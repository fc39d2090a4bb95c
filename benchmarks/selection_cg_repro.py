"""Reproducer: float32 CG inside the fused `select_batch` stalls with c = 35 on CPU.

Synthetic pool P = 3000, m = 500, c = 35, L = 50 labeled (one per class + 15), A = 16 copies,
paper settings (1000 Adam steps, batch 64, lr 1e-3, l2 1e-4, 30 CG steps). Runs
  (a) `select_batch` (one jitted program) in float32,
  (b) the same first greedy step with the inner solve and CG jitted separately, float32,
  (c) `select_batch` in float64 (set JAX_ENABLE_X64=1 in a child process),
and records the CG residuals and picks. A residual of ~1 means CG returned v = 0, so every
score is 0 and the argmax is the lowest available index (picks 0, 1, 2, ...).

  python -m benchmarks.selection_cg_repro --out=benchmarks/results/selection_cg_repro.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np


def _problem(dtype):
  import jax
  import jax.numpy as jnp
  from bilevel_jax.scaling import synthetic as syn

  p, m, c = 3000, 500, 35
  z, y, t = syn.pool(syn.SyntheticSpec(n=p, m=m, c=c, copies=16))
  rng = np.random.default_rng(0)
  lab = np.concatenate([rng.choice(np.flatnonzero(t == k), 1) for k in range(c)])
  lab = np.concatenate([lab, rng.choice(np.setdiff1d(np.arange(p), lab), 15, replace=False)])
  lab = lab.astype(np.int32)
  z, y = jnp.asarray(z, dtype), jnp.asarray(y, dtype)
  params = syn.bank_params(z, 16)
  bank = jnp.stack([syn.bank_fn(params, jax.random.key(10_000 + i), jnp.int32(i)) for i in lab])
  return z, y, t, lab, params, bank


def _fused(dtype, b):
  import jax
  from bilevel_jax.bilevel import select as S
  from bilevel_jax.scaling import synthetic as syn

  z, y, t, lab, params, bank = _problem(dtype)
  sel = S.select_batch(
    jax.random.key(1), z, y, lab, t[lab], bank, syn.bank_fn, params, b=b, uniform_fraction=0.0
  )
  return {
    "picks": np.asarray(sel.indices).tolist(),
    "cg_residual": np.asarray(sel.cg_residual, np.float64).tolist(),
  }


def _separate():
  import jax
  import jax.numpy as jnp
  from bilevel_jax.bilevel import ihvp, inner, outer

  z, y, t, lab, _, bank = _problem(jnp.float32)
  n_lab, c = len(lab), y.shape[1]
  cap = n_lab + 1
  onehot = jax.nn.one_hot(t[lab], c)
  bk = inner.Bank(
    jnp.zeros((cap,) + bank.shape[1:]).at[:n_lab].set(bank),
    jnp.zeros((cap, c)).at[:n_lab].set(onehot),
    jnp.arange(cap) < n_lab,
  )
  inner_key = jax.random.split(jax.random.key(1), 3)[0]
  st, _ = inner.fit_inner(
    jax.random.fold_in(inner_key, 0),
    inner.init_inner_state(jnp.zeros((z.shape[1], c))),
    bk,
    1e-3,
    1e-4,
    steps=1000,
    batch_size=64,
  )
  g = jax.jit(jax.grad(outer.outer_objective))(st.w, z, y.at[lab].set(onehot))
  cg = jax.jit(
    lambda w, g, bk: ihvp.inverse_hvp(
      lambda u: inner.bank_objective(u, bk, jnp.float32(1e-4)), w, g, steps=30
    )
  )(st.w, g, bk)
  return {"cg_residual_step0": float(cg.residual)}


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--b", type=int, default=3)
  ap.add_argument("--_x64", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args._x64:
    import jax.numpy as jnp

    print(json.dumps(_fused(jnp.float64, args.b)))
    return
  import jax
  import jax.numpy as jnp
  from bilevel_jax.utils import io

  res = {
    "command": "python -m benchmarks.selection_cg_repro "
    + " ".join(argv if argv is not None else sys.argv[1:]),
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
  }
  res["fused_float32"] = _fused(jnp.float32, args.b)
  res["separate_float32"] = _separate()
  proc = subprocess.run(
    [
      sys.executable,
      "-m",
      "benchmarks.selection_cg_repro",
      "--_x64",
      "--out",
      args.out,
      "--b",
      str(args.b),
    ],
    capture_output=True,
    text=True,
    env=dict(os.environ, JAX_ENABLE_X64="1"),
  )
  res["fused_float64"] = (
    json.loads(proc.stdout.strip().splitlines()[-1])
    if not proc.returncode
    else {"error": proc.stderr[-1500:]}
  )
  io.atomic_write_json(args.out, res)
  print(json.dumps(res, indent=1))


if __name__ == "__main__":
  main()
