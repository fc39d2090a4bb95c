"""Does the inner Adam loop pay for living inside lax.scan on XLA:CPU? Side by side in one run.

On XLA:CPU (jax 0.10.2) the same ops can run much slower inside a while/scan body than in a
plain jitted function. This times 1000 inner Adam steps (batch 64, the FSDD anchor shapes:
m = 2000, c = 10, bank of 19 slots x 16 copies, 14 valid) written as
  * scan: `inner.fit_inner_steps` (one lax.scan, the selection's form);
  * scan_unroll: the same step function in lax.scan with `unroll=--unroll`;
  * host_chunks: a Python loop over one jitted function of `--chunk` unrolled steps;
and the whole 9-pick selection as one jitted program (lax.fori_loop over greedy steps) against
a Python loop over per-step jitted inner solves, so the choice of "one program per selection"
is measured rather than assumed. The minibatches are identical in every form.

  python -m benchmarks.selection_loop_forms --out=benchmarks/results/selection_loop_forms_cpu.json
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

import numpy as np


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--chunk", type=int, default=50)
  ap.add_argument("--unroll", type=int, default=4)
  ap.add_argument("--repeats", type=int, default=5)
  args = ap.parse_args(argv)
  if min(args.steps, args.chunk, args.unroll, args.repeats) < 1 or args.steps % args.chunk:
    raise SystemExit(
      "--steps, --chunk, --unroll, --repeats must be >= 1 and --chunk must "
      f"divide --steps (got {args.steps}, {args.chunk})"
    )
  import jax
  import jax.numpy as jnp
  from jax import lax
  import optax
  from bilevel_jax.bilevel import inner
  from bilevel_jax.utils import io

  m, c, a, cap, n_valid, bs = 2000, 10, 16, 19, 14, 64
  key = jax.random.key(0)
  bank = inner.Bank(
    3.0 * jax.random.normal(key, (cap, a, m)) / np.sqrt(m),
    jax.nn.softmax(jax.random.normal(jax.random.key(1), (cap, c)) * 3),
    jnp.arange(cap) < n_valid,
  )
  state = inner.init_inner_state(jnp.zeros((m, c)))
  lr, l2 = jnp.float32(1e-3), jnp.float32(1e-4)
  adam = optax.scale_by_adam()

  def step(carry, idx, zflat, y):
    wt, opt = carry
    rows, slot = idx
    _, g = inner.xent_grad_t(wt, zflat[rows], y[slot], jnp.float32(1.0 / bs))
    upd, opt = adam.update(g + 2.0 * l2 * wt, opt, wt)
    return (wt - lr * upd, opt), None

  def indices(key):
    slots, cps = inner.sample_pair_indices(key, bank.valid, a, steps=args.steps, batch_size=bs)
    return slots * a + cps, slots

  t_state = lambda st: (st.w.T, jax.tree.map(lambda x: x.T if x.ndim == 2 else x, st.opt_state))

  scan = jax.jit(functools.partial(inner.fit_inner_steps, steps=args.steps, batch_size=bs))

  @jax.jit
  def scan_unroll(key, st, bank):
    zflat = bank.z.reshape(-1, m)
    carry, _ = lax.scan(
      lambda cr, ix: step(cr, ix, zflat, bank.y), t_state(st), indices(key), unroll=args.unroll
    )
    return carry[0].T

  idx_fn = jax.jit(indices)

  @jax.jit
  def chunk(carry, rows, slots, bank):
    zflat = bank.z.reshape(-1, m)
    for t in range(args.chunk):
      carry, _ = step(carry, (rows[t], slots[t]), zflat, bank.y)
    return carry

  def host_chunks(key, st, bank):
    rows, slots = idx_fn(key)
    carry = t_state(st)
    for i in range(0, args.steps, args.chunk):
      carry = chunk(carry, rows[i : i + args.chunk], slots[i : i + args.chunk], bank)
    return carry[0].T

  forms = {
    "scan": lambda: scan(key, state, bank, lr, l2)[0].w,
    "scan_unroll": lambda: scan_unroll(key, state, bank),
    "host_chunks": lambda: host_chunks(key, state, bank),
  }

  # Whole selection: one program vs a host loop of jitted greedy-step pieces.
  n_greedy = 9

  @jax.jit
  def one_program(key, st, bank):
    def body(k, carry):
      st, bank = carry
      st, _ = inner.fit_inner_steps(
        jax.random.fold_in(key, k), st, bank, lr, l2, steps=args.steps, batch_size=bs
      )
      return st, bank._replace(valid=bank.valid.at[10 + k].set(True))

    return lax.fori_loop(0, n_greedy, body, (st, bank._replace(valid=jnp.arange(cap) < 10)))[0].w

  add_slot = jax.jit(lambda bank, k: bank._replace(valid=bank.valid.at[10 + k].set(True)))

  def host_loop(key, st, bank):
    bank = bank._replace(valid=jnp.arange(cap) < 10)
    for k in range(n_greedy):
      st, _ = scan(jax.random.fold_in(key, k), st, bank, lr, l2)
      bank = add_slot(bank, k)
    return st.w

  forms["selection_inner_one_program"] = lambda: one_program(key, state, bank)
  forms["selection_inner_host_loop"] = lambda: host_loop(key, state, bank)

  res = {
    "command": " ".join(
      [os.path.basename(sys.executable), "-m", "benchmarks.selection_loop_forms"]
      + (argv if argv is not None else sys.argv[1:])
    ),
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
    "cores": len(os.sched_getaffinity(0)),
    "loadavg_start": os.getloadavg(),
    "settings": {
      "steps": args.steps,
      "chunk": args.chunk,
      "unroll": args.unroll,
      "m": m,
      "c": c,
      "copies": a,
      "bank_slots": cap,
      "batch_size": bs,
    },
    "first_call_s": {},
    "seconds": {},
  }
  ref = {}
  for name, fn in forms.items():
    s = time.perf_counter()
    ref[name] = np.asarray(jax.block_until_ready(fn()))
    res["first_call_s"][name] = time.perf_counter() - s
  res["max_abs_w_diff_vs_scan"] = {
    n: float(np.max(np.abs(ref[n] - ref["scan"]))) for n in ("scan_unroll", "host_chunks")
  }
  res["max_abs_w_diff_one_program_vs_host_loop"] = float(
    np.max(np.abs(ref["selection_inner_one_program"] - ref["selection_inner_host_loop"]))
  )
  for _ in range(args.repeats):  # interleaved, so load hits every form alike
    for name, fn in forms.items():
      s = time.perf_counter()
      jax.block_until_ready(fn())
      res["seconds"].setdefault(name, []).append(time.perf_counter() - s)
  res["median_s"] = {n: float(np.median(v)) for n, v in res["seconds"].items()}
  res["loadavg_end"] = os.getloadavg()
  io.atomic_write_json(args.out, res)
  print(res["median_s"], res["max_abs_w_diff_vs_scan"])


if __name__ == "__main__":
  main()
