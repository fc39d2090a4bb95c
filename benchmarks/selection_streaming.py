"""Pools larger than memory: a streamed selection over a synthetic 1M-point pool on disk, and the
chunked WRN-28 NTK -> Nystrom feature stream from waveforms on disk.

  # 1M pool, m = 500, c = 35, b = 10, paper inner/CG settings (CPU, ~1 h on 2 busy cores):
  python -m benchmarks.selection_streaming select --n=1000000 --m=500 --c=35 \
      --out=benchmarks/results/selection_stream_1m.json
  # chunked NTK features from cached waveforms (memory-light), small pool:
  python -m benchmarks.selection_streaming ntk --n=512 --m=32 \
      --out=benchmarks/results/selection_stream_ntk.json

`select` writes the synthetic features and pseudo-labels to `--workdir` (default: the cache root)
chunk by chunk, then runs `scaling.streaming.select_streamed`; neither phase holds more than a
few chunks in memory. Peak RSS (ru_maxrss) is reported per phase.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import sys
import time

import numpy as np


def _rss_gib():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _args(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("phase", choices=("select", "ntk"))
  ap.add_argument("--out", required=True)
  ap.add_argument("--workdir", default=None, help="where the pool .npy files go")
  ap.add_argument("--n", type=int, default=1_000_000)
  ap.add_argument("--m", type=int, default=500)
  ap.add_argument("--c", type=int, default=35)
  ap.add_argument("--b", type=int, default=10)
  ap.add_argument("--copies", type=int, default=16)
  ap.add_argument("--inner_steps", type=int, default=1000)
  ap.add_argument("--cg_steps", type=int, default=30)
  ap.add_argument("--chunk_rows", type=int, default=65536)
  ap.add_argument("--depth", type=int, default=28, help="WRN depth of the NTK (ntk phase)")
  args = ap.parse_args(argv)
  for name in ("n", "m", "c", "b", "copies", "inner_steps", "cg_steps", "chunk_rows"):
    if getattr(args, name) < 1:
      ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
  if args.c < 2:
    ap.error(f"--c must be >= 2, got {args.c}")
  return args


def _workdir(args):
  from bilevel_jax.utils import paths

  d = pathlib.Path(args.workdir) if args.workdir else paths.cache_root() / "stream_bench"
  d.mkdir(parents=True, exist_ok=True)
  return d


def run_select(args):
  import jax
  import jax.numpy as jnp
  from bilevel_jax.scaling import streaming, synthetic as syn

  d = _workdir(args)
  spec = syn.SyntheticSpec(n=args.n, m=args.m, c=args.c, copies=args.copies, seed=0)
  zp, yp = d / f"z_{args.n}_{args.m}_{args.c}.npy", d / f"y_{args.n}_{args.m}_{args.c}.npy"
  res = {
    "n": args.n,
    "m": args.m,
    "c": args.c,
    "chunk_rows": args.chunk_rows,
    "features_gib": args.n * args.m * 4 / 2**30,
  }
  s = time.perf_counter()
  labels = np.empty(args.n, np.int32)
  if not (zp.exists() and yp.exists()):
    wz, wy = streaming.RowWriter(zp, (args.n, args.m)), streaming.RowWriter(yp, (args.n, args.c))
    for j in range(-(-args.n // syn.BLOCK)):
      lo, hi = j * syn.BLOCK, min((j + 1) * syn.BLOCK, args.n)
      z, y, t = (np.asarray(a)[: hi - lo] for a in syn.block(spec, j))
      wz.append(z)
      wy.append(y)
      labels[lo:hi] = t
    wz.close()
    wy.close()
  else:
    for j in range(-(-args.n // syn.BLOCK)):
      lo, hi = j * syn.BLOCK, min((j + 1) * syn.BLOCK, args.n)
      labels[lo:hi] = np.asarray(syn.block(spec, j)[2])[: hi - lo]
  res["generate_s"], res["rss_gib_after_generate"] = time.perf_counter() - s, _rss_gib()
  print(
    f"generated {args.n} rows in {res['generate_s']:.1f}s, rss {_rss_gib():.2f} GiB", flush=True
  )

  zf, yf = streaming.RowFile(zp), streaming.RowFile(yp)
  rng = np.random.default_rng(0)
  n_lab = 10 if args.c <= 10 else 50
  lab = np.array([rng.choice(np.flatnonzero(labels[:200_000] == k)) for k in range(args.c)])
  lab = (
    np.concatenate(
      [lab, rng.choice(np.setdiff1d(np.arange(1000), lab), n_lab - args.c, replace=False)]
    )
    if n_lab > args.c
    else lab[:n_lab]
  )
  tau = jnp.float32(0.3)
  shape_carrier = jnp.zeros((args.copies,), jnp.int8)

  def copies_fn(key, index, row):
    del index
    return syn.bank_fn({"z": row[None], "tau": tau, "copies": shape_carrier}, key, 0)

  bank = np.stack(
    [
      np.asarray(
        copies_fn(
          jax.random.key(10_000 + int(i)), int(i), jnp.asarray(zf.read(int(i), int(i) + 1)[0])
        )
      )
      for i in lab
    ]
  )
  s = time.perf_counter()
  sel = streaming.select_streamed(
    jax.random.key(1),
    zf,
    yf,
    lab,
    labels[lab],
    bank,
    copies_fn,
    b=args.b,
    inner_steps=args.inner_steps,
    cg_steps=args.cg_steps,
    chunk_rows=args.chunk_rows,
    log=lambda m: print(m, flush=True),
  )
  res.update(
    {
      "select_s": time.perf_counter() - s,
      "stages_s": sel.stage_seconds,
      "picks": sel.indices.tolist(),
      "scores": sel.scores.tolist(),
      "cg_residual": sel.cg_residual.tolist(),
      "rss_gib_peak": _rss_gib(),
      "note": "first greedy step includes compilation of the chunk functions",
    }
  )
  return res


def run_ntk(args):
  import jax
  import jax.numpy as jnp
  from bilevel_jax import audio
  from bilevel_jax.al import kernel as al_kernel
  from bilevel_jax.ntk import wrn_kernel
  from bilevel_jax.scaling import streaming

  d = _workdir(args)
  wp = d / f"wav_{args.n}.npy"
  rng = np.random.default_rng(0)
  t = np.arange(16000) / 16000.0
  w = streaming.RowWriter(wp, (args.n, 16000))
  for s, e in streaming.chunks(args.n, 256):  # tones + noise stand in for cached waveforms
    f0 = rng.uniform(100, 2000, size=(e - s, 1))
    w.append(
      (0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.normal(size=(e - s, 16000))).astype(np.float32)
    )
  w.close()
  wf = streaming.RowFile(wp)
  kfn = lambda a, b: wrn_kernel.wrn_kernel(a, b, depth=args.depth, jit=False).ntk
  u = audio.featurize(jnp.asarray(wf.read(0, args.m)))
  s = time.perf_counter()
  k_uu = np.asarray(jax.jit(kfn)(u, u))
  kuu_s = time.perf_counter() - s
  mm = jnp.asarray(al_kernel.nystrom_map(k_uu), jnp.float32)
  info = streaming.stream_nystrom_features(
    wf, d / f"ntkz_{args.n}_{args.m}.npy", audio.featurize, kfn, u, mm, chunk_rows=args.chunk_rows
  )
  z = np.load(d / f"ntkz_{args.n}_{args.m}.npy", mmap_mode="r")
  recon = np.asarray(z[: args.m]) @ np.asarray(z[: args.m]).T  # Nystrom is exact on U
  return {
    "n": args.n,
    "m": args.m,
    "depth": args.depth,
    "chunk_rows": args.chunk_rows,
    "landmark_kernel_s": kuu_s,
    **info,
    "landmark_reconstruction_rel_err": float(np.linalg.norm(recon - k_uu) / np.linalg.norm(k_uu)),
    "rss_gib_peak": _rss_gib(),
  }


def main(argv=None):
  args = _args(argv)
  import jax
  from bilevel_jax.utils import io

  res = run_select(args) if args.phase == "select" else run_ntk(args)
  res.update(
    {
      "command": " ".join(
        ["python", "-m", "benchmarks.selection_streaming"]
        + (argv if argv is not None else sys.argv[1:])
      ),
      "devices": [str(x) for x in jax.devices()],
      "cpu_count": os.cpu_count(),
      "cpu_affinity": len(os.sched_getaffinity(0)),
    }
  )
  io.atomic_write_json(args.out, res)
  print({k: v for k, v in res.items() if k not in ("picks", "scores", "cg_residual")})


if __name__ == "__main__":
  main()
