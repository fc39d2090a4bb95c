"""Side-by-side anchor: our jitted selection vs the paper authors' PyTorch code, same CPU, one run.

Writes one synthetic FSDD-sized problem (P = 2690 points, m = 2000 Nystrom features, c = 10,
L = 10 labeled, A = 16 cached augmented copies per point) to .npy files, then alternates
  * ours: `bilevel.select.select_batch` with the copies looked up in the same table
    (`precomputed_bank`), b = 10 (9 greedy + 1 uniform); compile time apart, median of repeats;
    both with the paper's minibatch Adam (batch 64, our default) and with full-bank gradients
    and lambda halved (`--full_l2`), which is what the authors' code computes (full-batch
    Adam over all cached copies; weight decay 1e-4 = penalty 5e-5 ||w||^2), and with
    `--exact`: solver="exact" (Newton-CG to inner_tol, preconditioned CG to ihvp_rtol) in both
    loss conventions; the paper-settings variant is today's default (solver="paper", "mean");
  * theirs: `benchmarks/selection_anchor_torch.py` in the torch environment `--torch_python`,
    importing their `bilevel_coreset.py` from `--authors_repo` (9 greedy picks, 1000 Adam steps,
    SciPy CG capped at 30 iterations, kernel cached),
so load from other processes hits both alike. Timing ratios are reported per round. Without
`--authors_repo` only ours run (e.g. exact against paper settings on a machine without torch).

  .venv/bin/python -m benchmarks.selection_anchor --authors_repo=AUTHORS_REPO \
      --torch_python=TORCH_VENV/bin/python --out=benchmarks/results/selection_anchor_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True)
  ap.add_argument(
    "--authors_repo", default="", help="the authors' checkout; empty: time ours only (no torch)"
  )
  ap.add_argument("--torch_python", default="", help="python of a venv with torch installed")
  ap.add_argument("--pool", type=int, default=2690)
  ap.add_argument("--m", type=int, default=2000)
  ap.add_argument("--c", type=int, default=10)
  ap.add_argument("--copies", type=int, default=16)
  ap.add_argument("--inner_steps", type=int, default=1000)
  ap.add_argument("--cg_steps", type=int, default=30)
  ap.add_argument("--rounds", type=int, default=2, help="alternations ours / theirs")
  ap.add_argument("--repeats", type=int, default=3, help="timed calls of ours per round")
  ap.add_argument("--full_l2", type=float, default=5e-5)
  ap.add_argument(
    "--torch_threads",
    default="1,2",
    help="torch thread counts to run theirs with; the fastest is the anchor (on a "
    "loaded 2-core machine 2 threads can be several times slower than 1)",
  )
  ap.add_argument("--data", default=None, help="folder for the .npy problem (temp by default)")
  ap.add_argument(
    "--exact", action="store_true", help="also time solver='exact' (loss_reduction sum and mean)"
  )
  ap.add_argument("--skip_fullbank", action="store_true", help="leave out ours_fullbank")
  ap.add_argument(
    "--ours_one_core",
    action="store_true",
    help="pin this process (ours) to one core before JAX starts, so XLA runs "
    "single-threaded like torch with 1 thread; the torch children keep "
    "every core of the original affinity",
  )
  args = ap.parse_args(argv)
  cores = sorted(os.sched_getaffinity(0))
  if args.ours_one_core:
    if "jax" in sys.modules:
      raise SystemExit("--ours_one_core must be set before JAX is imported (run as a script)")
    os.sched_setaffinity(0, {cores[-1]})
  if args.authors_repo and not os.path.isfile(
    os.path.join(args.authors_repo, "bilevel_coreset.py")
  ):
    raise SystemExit(f"--authors_repo={args.authors_repo!r} has no bilevel_coreset.py")
  if args.authors_repo and not os.access(args.torch_python, os.X_OK):
    raise SystemExit(f"--torch_python={args.torch_python!r} is not an executable")
  try:
    threads_list = [int(v) for v in args.torch_threads.split(",") if v]
  except ValueError:
    raise SystemExit(f"--torch_threads must be comma-separated ints, got {args.torch_threads!r}")
  if args.authors_repo and (not threads_list or min(threads_list) < 1):
    raise SystemExit(f"--torch_threads needs positive thread counts, got {args.torch_threads!r}")
  if min(args.rounds, args.repeats, args.inner_steps, args.cg_steps) < 1:
    raise SystemExit("--rounds, --repeats, --inner_steps and --cg_steps must be >= 1")

  import jax
  import jax.numpy as jnp
  from bilevel_jax.bilevel import select as S
  from bilevel_jax.scaling import synthetic as syn
  from bilevel_jax.utils import io

  data = args.data or tempfile.mkdtemp(prefix="selection_anchor_")
  os.makedirs(data, exist_ok=True)
  spec = syn.SyntheticSpec(n=args.pool, m=args.m, c=args.c, copies=args.copies, seed=0)
  z, y, t = syn.pool(spec)
  rng = np.random.default_rng(0)
  lab = np.concatenate([rng.choice(np.flatnonzero(t == k), 1) for k in range(args.c)])
  lab = np.concatenate(
    [lab, rng.choice(np.setdiff1d(np.arange(args.pool), lab), max(10 - len(lab), 0), replace=False)]
  ).astype(np.int32)
  params = syn.bank_params(jnp.asarray(z), args.copies)
  pool_bank = np.asarray(
    jax.jit(jax.vmap(lambda i: syn.bank_fn(params, jax.random.fold_in(jax.random.key(7), i), i)))(
      jnp.arange(args.pool)
    )
  )
  targets = y.copy()
  targets[lab] = np.eye(args.c, dtype=targets.dtype)[t[lab]]
  for name, arr in (
    ("pool_z", z),
    ("pool_bank", pool_bank),
    ("targets", targets),
    ("labeled_idx", lab),
    ("labels", t),
  ):
    np.save(os.path.join(data, f"{name}.npy"), arr)

  bank_fn, bank_params = S.precomputed_bank(pool_bank)
  zj, yj = jnp.asarray(z), jnp.asarray(y)
  lab_bank = pool_bank[lab]
  variants = {"ours_minibatch64": dict(batch_size=64, solver="paper", loss_reduction="mean")}
  if not args.skip_fullbank:
    variants["ours_fullbank"] = dict(
      batch_size=None, l2=args.full_l2, solver="paper", loss_reduction="mean"
    )
  if args.exact:
    variants["ours_exact_sum"] = dict(solver="exact", loss_reduction="sum")
    variants["ours_exact_mean"] = dict(solver="exact", loss_reduction="mean")

  def ours(kw):
    return S.select_batch(
      jax.random.key(1),
      zj,
      yj,
      lab,
      t[lab],
      lab_bank,
      bank_fn,
      bank_params,
      b=10,
      inner_steps=args.inner_steps,
      cg_steps=args.cg_steps,
      validate=False,
      **kw,
    )

  cmd = " ".join(
    [os.path.basename(sys.executable), "-m", "benchmarks.selection_anchor"]
    + (argv if argv is not None else sys.argv[1:])
  )
  res = {
    "command": cmd,
    "devices": [str(d) for d in jax.devices()],
    "jax": jax.__version__,
    "cores_ours": sorted(os.sched_getaffinity(0)),
    "cores_authors": cores,
    "loadavg_start": os.getloadavg(),
    "cpu": _cpu_model(),
    "cpu_count": os.cpu_count(),
    "authors_repo": args.authors_repo,
    "settings": {
      "pool": args.pool,
      "m": args.m,
      "c": args.c,
      "copies": args.copies,
      "labeled": len(lab),
      "b": 10,
      "n_bilevel": 9,
      "inner_steps": args.inner_steps,
      "cg_steps": args.cg_steps,
      "features": "synthetic Nystrom features (scaling/synthetic.py, seed 0)",
    },
    "rounds": [],
  }
  for name, kw in variants.items():
    s = time.perf_counter()
    sel = jax.block_until_ready(ours(kw))
    res[name] = {
      "first_call_s": time.perf_counter() - s,
      "kwargs": {k: v for k, v in kw.items()},
      "picks": np.asarray(sel.indices).tolist(),
      "inner_grad_norm": np.asarray(sel.inner_grad_norm).tolist(),
      "inner_iterations": np.asarray(sel.inner_iterations).tolist(),
      "ihvp_iterations": np.asarray(sel.ihvp_iterations).tolist(),
      "ihvp_residual": np.asarray(sel.cg_residual, np.float64).tolist(),
    }
  for r in range(args.rounds):
    entry = {"round": r, "loadavg": os.getloadavg()}
    for name, kw in variants.items():
      ts = []
      for _ in range(args.repeats):
        s = time.perf_counter()
        jax.block_until_ready(ours(kw))
        ts.append(time.perf_counter() - s)
      entry[name + "_s"] = float(np.median(ts))
    for threads in threads_list if args.authors_repo else ():
      out = os.path.join(data, f"torch_{r}_{threads}.json")
      proc = subprocess.run(
        [
          args.torch_python,
          os.path.join(os.path.dirname(__file__), "selection_anchor_torch.py"),
          f"--authors_repo={args.authors_repo}",
          f"--data={data}",
          f"--out={out}",
          f"--inner_steps={args.inner_steps}",
          f"--cg_steps={args.cg_steps}",
          f"--threads={threads}",
        ],
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, cores),
      )
      if proc.returncode:
        entry[f"authors_error_threads{threads}"] = proc.stderr[-3000:]
        continue
      with open(out) as f:
        theirs = json.load(f)
      entry[f"authors_torch_threads{threads}"] = theirs["runs"][0]
      res["authors_torch_env"] = {k: theirs[k] for k in ("torch", "settings")}
    done = [entry[k] for k in entry if k.startswith("authors_torch_threads")]
    if done:
      run = min(done, key=lambda x: x["total_s"])
      entry["authors_torch"] = run
      for name in variants:
        entry[f"speedup_{name}"] = run["total_s"] / entry[name + "_s"]
    res["rounds"].append(entry)
    print(
      json.dumps(
        {
          k: (v["total_s"] if isinstance(v, dict) and "total_s" in v else v)
          for k, v in entry.items()
        }
      ),
      flush=True,
    )
    io.atomic_write_json(args.out, res)
  ok = [e for e in res["rounds"] if "authors_torch" in e]
  if not args.authors_repo:  # ours only: the ratios of our variants, median over rounds
    res["summary"] = {
      name + "_s": float(np.median([e[name + "_s"] for e in res["rounds"]])) for name in variants
    }
    for name in variants:
      if name != "ours_minibatch64":
        res["summary"][f"ratio_{name}_over_minibatch64"] = float(
          np.median([e[name + "_s"] / e["ours_minibatch64_s"] for e in res["rounds"]])
        )
  if ok:
    theirs_picks = ok[0]["authors_torch"]["picks"]
    res["summary"] = {
      "authors_torch_s": float(np.median([e["authors_torch"]["total_s"] for e in ok]))
    }
    for threads in threads_list:
      runs = [
        e[f"authors_torch_threads{threads}"]["total_s"]
        for e in ok
        if f"authors_torch_threads{threads}" in e
      ]
      if runs:
        res["summary"][f"authors_torch_threads{threads}_s"] = float(np.median(runs))
    for name in variants:
      if name != "ours_minibatch64":
        res["summary"][f"ratio_{name}_over_minibatch64"] = float(
          np.median([e[name + "_s"] / e["ours_minibatch64_s"] for e in ok])
        )
      res["summary"][name + "_s"] = float(np.median([e[name + "_s"] for e in ok]))
      res["summary"]["speedup_" + name] = float(np.median([e["speedup_" + name] for e in ok]))
      res["summary"]["picks_same_set_as_authors_" + name] = len(
        set(theirs_picks) & set(res[name]["picks"][:9])
      )
  io.atomic_write_json(args.out, res)
  print(json.dumps(res.get("summary", {})))


def _cpu_model() -> str:
  try:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
  except OSError:
    return "unknown"
  return next(
    (line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
    "unknown",
  )


if __name__ == "__main__":
  main()
