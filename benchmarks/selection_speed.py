"""Selection-speed benchmark: jitted bilevel selection vs NumPy/SciPy vs representer formulation.

For every (pool size P, landmarks m, classes c) a fresh subprocess (clean peak-memory numbers):
  * ours: `bilevel.select.select_batch` end to end (compile time apart, then the median of
    `--repeats` runs with block_until_ready), and per stage, each stage jitted alone at the
    selection's shapes: inner Adam solve, outer gradient, CG, scoring (x n_bilevel greedy steps),
    Nystrom map (z = K_xU M for the pool, M from eigh of K_UU);
  * NumPy/SciPy (`benchmarks/selection_numpy.py`): same rule, same keys, per stage;
  * representer formulation (`bilevel/representer.py`): all pool points as candidates (needs the
    P x P kernel, so only while it fits `--rep_max_gib`) and the authors' 200-candidate variant;
  * picks of each against ours, peak RSS (and device peak bytes on GPU).
The NTK stage is kernel entries per second of `ntk.wrn_kernel` (WRN-28) measured once per run;
the pool-vs-landmark kernel is cached once per dataset, so its time is reported apart.

Synthetic Nystrom features (`scaling/synthetic.py`) stand in for real pools of every size. One
command, CPU or GPU, e.g. (H100, ~10 min):
  python -m benchmarks.selection_speed --out=benchmarks/results/selection_h100.json --grid=full
Quick CPU sweep (~10 min on 2 busy cores):
  python -m benchmarks.selection_speed --quick --out=benchmarks/results/selection_cpu_quick.json
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

FSDD_POOL = 2690


def _args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--out", required=True, help="result JSON path")
  ap.add_argument("--quick", action="store_true", help="small sweep for busy CPUs")
  ap.add_argument(
    "--grid",
    choices=("axes", "full"),
    default="axes",
    help="axes: pool sweep at m=2000 for each c + m sweep at the 3rd pool size; "
    "full: every (P, m, c)",
  )
  ap.add_argument("--pools", default="1000,5000,20000,85000")
  ap.add_argument("--landmarks", default="500,1000,2000,4000")
  ap.add_argument("--classes", default="10,35")
  ap.add_argument("--no_anchor", action="store_true", help="skip the FSDD anchor config")
  ap.add_argument("--b", type=int, default=10)
  ap.add_argument("--inner_steps", type=int, default=1000)
  ap.add_argument("--cg_steps", type=int, default=30)
  ap.add_argument("--copies", type=int, default=16, help="augmented copies per bank point (A)")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--numpy_max_pool", type=int, default=85000)
  ap.add_argument(
    "--rep_max_gib",
    type=float,
    default=8.0,
    help="memory cap (GiB, ~16 P^2 bytes) for the all-candidates representer",
  )
  ap.add_argument("--rep_candidates", type=int, default=200)
  ap.add_argument("--skip_stages", action="store_true")
  ap.add_argument(
    "--ntk",
    action="store_true",
    help="also time the WRN-28 NTK (entries/s); its compile takes minutes on CPU",
  )
  ap.add_argument(
    "--matmul_precision",
    default="highest",
    choices=("default", "high", "highest"),
    help="jax_default_matmul_precision (GPUs use TF32 for 'default')",
  )
  ap.add_argument("--_single", default=None, help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.b < 1 or args.inner_steps < 1 or args.cg_steps < 1 or args.repeats < 1:
    ap.error("--b, --inner_steps, --cg_steps and --repeats must be >= 1")
  return args


def _ints(text, flag):
  try:
    vals = [int(v) for v in text.split(",") if v]
  except ValueError:
    raise SystemExit(f"{flag} must be comma-separated integers, got {text!r}")
  if not vals or min(vals) < 1:
    raise SystemExit(f"{flag} needs positive integers, got {text!r}")
  return vals


def _configs(args):
  pools, ms, cs = (
    _ints(args.pools, "--pools"),
    _ints(args.landmarks, "--landmarks"),
    _ints(args.classes, "--classes"),
  )
  if args.quick:
    pools, ms, cs = [1000, 5000, 20000], [500, 1000, 2000], cs
  out = []
  if not args.no_anchor:
    out.append((FSDD_POOL, 2000, 10))
  if args.grid == "full":
    out += [(p, m, c) for c in cs for m in ms for p in pools]
  else:
    out += [(p, 2000 if 2000 in ms else ms[-1], c) for c in cs for p in pools]
    mid = pools[min(2, len(pools) - 1)]
    out += [(mid, m, cs[0]) for m in ms if (mid, m, cs[0]) not in out]
  seen, uniq = set(), []
  for cfg in out:
    if cfg not in seen:
      seen.add(cfg)
      uniq.append(cfg)
  return uniq


def _rss_gib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _timed(fn, repeats):
  """(first call seconds incl. compile, median steady seconds)."""
  import jax

  s = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - s
  runs = []
  for _ in range(repeats):
    s = time.perf_counter()
    jax.block_until_ready(fn())
    runs.append(time.perf_counter() - s)
  return first, float(np.median(runs))


def _single(args, p, m, c):
  import jax

  jax.config.update("jax_default_matmul_precision", args.matmul_precision)
  import jax.numpy as jnp
  from benchmarks import selection_numpy
  from bilevel_jax.bilevel import ihvp, inner, outer
  from bilevel_jax.bilevel import select as S
  from bilevel_jax.bilevel import representer as R
  from bilevel_jax.scaling import synthetic as syn

  res = {"pool": p, "m": m, "c": c}
  n_lab = 10 if c <= 10 else 50
  spec = syn.SyntheticSpec(n=p, m=m, c=c, copies=args.copies, seed=0)
  s = time.perf_counter()
  z, y, t = syn.pool(spec)
  res["data_seconds"] = time.perf_counter() - s
  rng = np.random.default_rng(0)
  lab = np.concatenate([rng.choice(np.flatnonzero(t == k), 1) for k in range(c) if np.any(t == k)])
  lab = np.concatenate(
    [lab, rng.choice(np.setdiff1d(np.arange(p), lab), n_lab - len(lab), replace=False)]
  ).astype(np.int32)
  z, y = jnp.asarray(z), jnp.asarray(y)
  params = syn.bank_params(z, args.copies)
  lab_bank = jnp.stack([syn.bank_fn(params, jax.random.key(10_000 + i), jnp.int32(i)) for i in lab])
  kw = dict(b=args.b, inner_steps=args.inner_steps, cg_steps=args.cg_steps, batch_size=64)
  key = jax.random.key(1)
  res["rss_gib_after_data"] = _rss_gib()

  def ours():
    return S.select_batch(
      key, z, y, lab, t[lab], lab_bank, syn.bank_fn, params, validate=False, **kw
    )

  first, steady = _timed(ours, args.repeats)
  sel = ours()
  picks = np.asarray(sel.indices)
  res["ours"] = {
    "first_call_s": first,
    "total_s": steady,
    "compile_s": max(first - steady, 0.0),
    "picks": picks.tolist(),
    "cg_residual": np.asarray(sel.cg_residual).tolist(),
    # float32 CG that stalled (residual ~1: v = 0, every score 0, pick = lowest index)
    "cg_breakdowns": int(np.sum(~(np.asarray(sel.cg_residual) < 0.5))),
  }
  res["rss_gib_after_ours"] = _rss_gib()
  dev = jax.devices()[0]
  if dev.platform != "cpu":
    stats = dev.memory_stats() or {}
    res["device_peak_gib_after_ours"] = stats.get("peak_bytes_in_use", 0) / 2**30
  n_bil, _ = S.split_batch(args.b, 0.1)

  if not args.skip_stages:
    st = {}
    cap = n_lab + n_bil
    mid = n_lab + n_bil // 2
    bz = jnp.zeros((cap, args.copies, m)).at[:n_lab].set(lab_bank)
    for i in range(n_lab, mid):  # half the picks made: the mid-selection bank
      bz = bz.at[i].set(syn.bank_fn(params, jax.random.key(i), jnp.int32(i)))
    # Labels as in the selection: one-hot true labels, then the picks' soft pseudo-labels
    # (a bank of all-one-class labels drives the softmax into saturation and times differently).
    by = jnp.zeros((cap, c)).at[:n_lab].set(jax.nn.one_hot(t[lab], c))
    by = by.at[n_lab:mid].set(y[n_lab:mid])
    bank = inner.Bank(bz, by, jnp.arange(cap) < mid)
    state = inner.init_inner_state(jnp.zeros((m, c)))
    fit = lambda: inner.fit_inner(
      key, state, bank, 1e-3, 1e-4, steps=args.inner_steps, batch_size=64
    )
    st["inner"] = _timed(fit, args.repeats)
    # The selection's own stage functions, in its transposed (c, m) layout.
    wt = fit()[0].w.T
    targets = y
    og = jax.jit(outer.outer_value_grad_t)
    st["outer_grad"] = _timed(lambda: og(wt, z, targets), args.repeats)
    _, g, probs = og(wt, z, targets)
    cgf = jax.jit(
      lambda wt, g, bank: (
        ihvp.cg_solve(inner.bank_hvp_t(wt, bank, jnp.float32(1e-4)), g, steps=args.cg_steps).x
      )
    )
    st["cg"] = _timed(lambda: cgf(wt, g, bank), args.repeats)
    v = cgf(wt, g, bank)
    avail = jnp.ones((p,), bool).at[lab].set(False)
    scf = jax.jit(
      lambda pr, v, z, y, a: jnp.argmax(jnp.where(a, outer.pool_scores_t(pr, v, z, y), -jnp.inf))
    )
    st["scoring"] = _timed(lambda: scf(probs, v, z, y, avail), args.repeats)
    k_xu = z  # any (P, m) matrix: the map is a matmul
    k_uu = z[:m].T @ z[:m] / p + jnp.eye(m)
    eig = jax.jit(
      lambda k: (lambda e, u: u * jnp.where(e > 1e-6 * e[-1], e, jnp.inf) ** -0.5 @ u.T)(
        *jnp.linalg.eigh(k)
      )
    )
    st["nystrom_eigh"] = _timed(lambda: eig(k_uu), 1)
    nmap = jax.jit(lambda k, mm: k @ mm)
    mm = eig(k_uu)
    st["nystrom_map"] = _timed(lambda: nmap(k_xu, mm), args.repeats)
    res["ours_stages"] = {
      k: {
        "compile_s": max(a - b_, 0.0),
        "per_call_s": b_,
        "per_selection_s": b_ * (n_bil if k in ("inner", "outer_grad", "cg", "scoring") else 1),
      }
      for k, (a, b_) in st.items()
    }
    del bz, bank, k_xu

  if p <= args.numpy_max_pool:
    try:
      s = time.perf_counter()
      ref = selection_numpy.select_batch(
        key,
        np.asarray(z),
        np.asarray(y),
        lab,
        t[lab],
        np.asarray(lab_bank),
        syn.bank_fn,
        params,
        **kw,
      )
      res["numpy"] = {
        "total_s": time.perf_counter() - s,
        "stages_s": ref.stage_seconds,
        "picks": ref.indices.tolist(),
        "picks_agree": int(np.sum(ref.indices[:n_bil] == picks[:n_bil])),
        "picks_same_set": int(len(set(ref.indices[:n_bil]) & set(picks[:n_bil]))),
      }
    except Exception as e:  # pylint: disable=broad-except
      res["numpy"] = {"error": repr(e)[-500:]}

  for name, cand in (
    ("representer_all", None),
    (f"representer_{args.rep_candidates}", args.rep_candidates),
  ):
    # XLA keeps about four P x P float32 buffers live (kernel, HVP tangents): 16 P^2 bytes.
    if cand is None and 16 * p * p / 2**30 > args.rep_max_gib:
      res[name] = {
        "skipped": f"needs ~{16 * p * p / 2**30:.1f} GiB (4 P x P float32) > --rep_max_gib"
      }
      continue
    try:
      kp = None
      entry = {}
      if cand is None:
        kfn = jax.jit(R.pool_kernel)
        entry["kernel_first_s"], entry["kernel_s"] = _timed(lambda: kfn(z), 1)
        kp = kfn(z)
      fn = lambda: R.select_batch(
        key,
        z,
        y,
        lab,
        t[lab],
        lab_bank,
        syn.bank_fn,
        params,
        k_pool=kp,
        candidates=cand,
        validate=False,
        **kw,
      )
      first, steady = _timed(fn, 1)
      rp = np.asarray(fn().indices)
      entry.update(
        {
          "first_call_s": first,
          "total_s": steady,
          "compile_s": max(first - steady, 0.0),
          "picks": rp.tolist(),
          "picks_agree": int(np.sum(rp[:n_bil] == picks[:n_bil])),
          "picks_same_set": int(len(set(rp[:n_bil]) & set(picks[:n_bil]))),
        }
      )
      res[name] = entry
      kp = None  # frees the P x P kernel before the next arm
    except Exception as e:  # pylint: disable=broad-except
      res[name] = {"error": repr(e)[-500:]}
  res["rss_gib_peak"] = _rss_gib()
  return res


def _ntk_throughput(repeats=2):
  import jax
  from bilevel_jax.ntk import wrn_kernel

  out = {}
  for t1, t2 in ((16, 128),):
    x1 = jax.random.normal(jax.random.key(0), (t1, 32, 32, 1))
    x2 = jax.random.normal(jax.random.key(1), (t2, 32, 32, 1))
    fn = lambda: wrn_kernel.wrn_kernel(x1, x2, depth=28).ntk
    first, steady = _timed(fn, repeats)
    out[f"{t1}x{t2}"] = {
      "compile_s": max(first - steady, 0.0),
      "seconds": steady,
      "entries_per_s": t1 * t2 / steady,
    }
  return out


def main(argv=None):
  args = _args(argv)
  if args._single:
    p, m, c = (int(v) for v in args._single.split(","))
    print(json.dumps(_single(args, p, m, c)))
    return
  import jax
  from bilevel_jax.utils import io

  cmd = " ".join(
    [os.path.basename(sys.executable), "-m", "benchmarks.selection_speed"]
    + (argv if argv is not None else sys.argv[1:])
  )
  result = {
    "command": cmd,
    "devices": [str(d) for d in jax.devices()],
    "device_kind": jax.devices()[0].device_kind,
    "platform": jax.devices()[0].platform,
    "cpu_count": os.cpu_count(),
    "cpu_affinity": len(os.sched_getaffinity(0)),
    "jax": jax.__version__,
    "matmul_precision": args.matmul_precision,
    "env": {
      k: os.environ[k]
      for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")
      if k in os.environ
    },
    "settings": {
      "b": args.b,
      "inner_steps": args.inner_steps,
      "cg_steps": args.cg_steps,
      "copies": args.copies,
      "batch_size": 64,
      "lr": 1e-3,
      "l2": 1e-4,
      "uniform_fraction": 0.1,
      "features": "synthetic Nystrom features",
    },
    "configs": [],
  }
  print(f"devices: {result['devices']}", flush=True)
  if args.ntk:
    result["ntk_wrn28"] = _ntk_throughput()
    print(f"ntk: {result['ntk_wrn28']}", flush=True)
  io.atomic_write_json(args.out, result)
  for p, m, c in _configs(args):
    print(f"--- P={p} m={m} c={c}", flush=True)
    child = [sys.executable, "-m", "benchmarks.selection_speed", "--_single", f"{p},{m},{c}"]
    child += [a for a in (argv if argv is not None else sys.argv[1:]) if not a.startswith("--_")]
    s = time.perf_counter()
    proc = subprocess.run(child, capture_output=True, text=True)
    if proc.returncode:
      entry = {"pool": p, "m": m, "c": c, "error": proc.stderr[-2000:]}
    else:
      entry = json.loads(proc.stdout.strip().splitlines()[-1])
    entry["wall_s"] = time.perf_counter() - s
    print(
      json.dumps({k: v for k, v in entry.items() if k not in ("ours_stages",)})[:1500], flush=True
    )
    result["configs"].append(entry)
    io.atomic_write_json(args.out, result)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
