"""Where the paper mode's inner Adam step spends its time, one core vs two, side by side.

At the anchor size (bank of 19 slots x 16 copies, m = 2000, c = 10, minibatch 64) times 1000
steps of: the whole step (`inner.fit_inner_steps`, "sum"), the minibatch gradient alone (gather of
64 rows + `inner.xent_grad_t` + a plain update), the gather alone, and the optax Adam update alone
(fixed gradient). Each configuration runs in a child process (the CPU affinity must be set before
JAX starts): pinned to one core, so XLA runs single-threaded, and with every core of this process.
The children alternate, `--rounds` times, so load from other processes hits both alike.

  python -m benchmarks.inner_adam_step --out=benchmarks/results/inner_adam_step_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def _child(steps: int, repeats: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax import lax
  from bilevel_jax.bilevel import inner

  m, c, a, cap, n = 2000, 10, 16, 19, 15
  rng = np.random.default_rng(0)
  bank = inner.Bank(
    jnp.asarray(rng.normal(size=(cap, a, m)).astype(np.float32) / 40),
    jnp.asarray(np.eye(c, dtype=np.float32)[rng.integers(0, c, cap)]),
    jnp.arange(cap) < n,
  )
  lr, l2 = jnp.float32(1e-3), jnp.float32(1e-4)
  zflat = inner.bank_rows(bank, "sum")[0]
  slots, copies = inner.sample_pair_indices(
    jax.random.key(0), bank.valid, a, steps=steps, batch_size=64
  )
  rows = slots * a + copies
  adam = optax.scale_by_adam()

  def grad_only(wt):
    def step(wt, idx):
      g = inner.xent_grad_t(wt, zflat[idx[0]], bank.y[idx[1]], 0.01)[1]
      return wt - lr * g, None

    return lax.scan(step, wt, (rows, slots))[0]

  def gather_only(acc):
    return lax.scan(lambda acc, r: (acc + jnp.sum(zflat[r], axis=0), None), acc, rows)[0]

  def adam_only(wt):
    g = jnp.full_like(wt, 1e-3)

    def step(carry, _):
      u, opt = adam.update(g + 2 * l2 * carry[0], carry[1], carry[0])
      return (carry[0] - lr * u, opt), None

    return lax.scan(step, (wt, adam.init(wt)), None, length=steps)[0][0]

  state = inner.init_inner_state(jnp.zeros((m, c), jnp.float32))
  whole = jax.jit(
    lambda: (
      inner.fit_inner_steps(
        jax.random.key(0), state, bank, lr, l2, steps=steps, batch_size=64, reduction="sum"
      )[0].w
    )
  )
  wt0 = jnp.zeros((c, m), jnp.float32)
  fns = {
    "whole_step": whole,
    "gradient_only": lambda f=jax.jit(grad_only): f(wt0),
    "gather_only": lambda f=jax.jit(gather_only): f(jnp.zeros((m,), jnp.float32)),
    "adam_update_only": lambda f=jax.jit(adam_only): f(wt0),
  }
  out = {}
  for name, f in fns.items():
    jax.block_until_ready(f())
    ts = []
    for _ in range(repeats):
      s = time.perf_counter()
      jax.block_until_ready(f())
      ts.append(time.perf_counter() - s)
    out[name + "_us_per_step"] = min(ts) / steps * 1e6
  return out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out")
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.child:
    print(json.dumps(_child(args.steps, args.repeats)))
    return
  if not args.out:
    raise SystemExit("--out is required")
  from benchmarks.selection_anchor import _cpu_model
  from bilevel_jax.utils import io

  cores = sorted(os.sched_getaffinity(0))
  cmd = " ".join(
    [os.path.basename(sys.executable), "-m", "benchmarks.inner_adam_step"]
    + (argv if argv is not None else sys.argv[1:])
  )
  res = {
    "command": cmd,
    "cpu": _cpu_model(),
    "cpu_count": os.cpu_count(),
    "cores": cores,
    "loadavg_start": os.getloadavg(),
    "settings": {
      "m": 2000,
      "c": 10,
      "copies": 16,
      "slots": 19,
      "valid_slots": 15,
      "batch_size": 64,
      "steps": args.steps,
    },
    "rounds": [],
  }
  child = [
    sys.executable,
    "-m",
    "benchmarks.inner_adam_step",
    "--child",
    f"--steps={args.steps}",
    f"--repeats={args.repeats}",
  ]
  for r in range(args.rounds):
    entry = {"round": r, "loadavg": os.getloadavg()}
    for name, affinity in (("one_core", {cores[-1]}), ("all_cores", set(cores))):
      proc = subprocess.run(
        child,
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda a=affinity: os.sched_setaffinity(0, a),
      )
      entry[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    res["rounds"].append(entry)
    print(json.dumps(entry), flush=True)
    io.atomic_write_json(args.out, res)


if __name__ == "__main__":
  main()
