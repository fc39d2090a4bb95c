"""Agreement of solver="exact" with the exact NumPy reference (`bilevel/reference.py`).

For each problem (Gaussian-cluster features: seeds x m x c; a real FSDD depth-10 WRN-NTK Nystrom
problem), each l2, loss_reduction and float dtype: the whole greedy pick sequence of
`select_batch(..., solver="exact")` against the reference's (inner problem by dense Newton to
the float64 rounding level, v by a dense solve), and the recorded per-pick diagnostics: inner
gradient norm relative to ||grad F(0)||, Newton steps, CG iterations and the true relative
inverse-HVP residual; also the reference's own gradient norms and residuals, and the smallest
relative gap between the reference's best and second-best score (how close a pick is to a tie).

  python -m benchmarks.selection_exact_agreement --out=benchmarks/results/selection_exact_agreement.json
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
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--ms", default="12,32,64")
  ap.add_argument("--cs", default="4,10")
  ap.add_argument("--pool", type=int, default=100)
  ap.add_argument("--b", type=int, default=5)
  ap.add_argument("--real", type=int, default=2, help="FSDD real-feature problems (seeds)")
  ap.add_argument("--data_root", default=os.environ.get("BILEVEL_JAX_DATA", "../shared/data"))
  args = ap.parse_args(argv)
  import jax

  jax.config.update("jax_enable_x64", True)
  from bilevel_jax.bilevel import reference
  from bilevel_jax.bilevel import select
  from bilevel_jax.utils import io
  from tests.bilevel import problems

  problems_list = []
  for seed in range(args.seeds):
    for m in [int(v) for v in args.ms.split(",")]:
      for c in [int(v) for v in args.cs.split(",")]:
        problems_list.append(
          (
            f"gauss_s{seed}_m{m}_c{c}",
            problems.make_problem(seed, p=args.pool, m=m, c=c, a=3, n_labeled=8),
          )
        )
  for seed in range(args.real):
    problems_list.append(
      (f"fsdd_ntk_s{seed}_m24_c10", problems.fsdd_ntk_problem(args.data_root, seed=seed))
    )
  rows = []
  for name, prob in problems_list:
    for l2 in (1e-2, 1e-4):
      for red in ("sum", "mean"):
        ref = reference.select(
          prob.pool_z,
          prob.pseudo,
          prob.labeled_idx,
          prob.labeled_labels,
          prob.pool_bank[prob.labeled_idx],
          prob.pool_bank,
          b=args.b,
          l2=l2,
          loss_reduction=red,
        )
        gaps = []
        for scores, pick in zip(ref.all_scores, ref.indices):
          rest = np.nanmax(np.delete(scores, pick))
          gaps.append(float((scores[pick] - rest) / abs(scores[pick])))
        for dtype in (np.float32, np.float64):
          fn, params = select.precomputed_bank(prob.pool_bank.astype(dtype))
          t = time.perf_counter()
          sel = select.select_batch(
            jax.random.key(0),
            prob.pool_z.astype(dtype),
            prob.pseudo.astype(dtype),
            prob.labeled_idx,
            prob.labeled_labels,
            prob.pool_bank[prob.labeled_idx].astype(dtype),
            fn,
            params,
            b=args.b,
            uniform_fraction=0.0,
            l2=l2,
            solver="exact",
            loss_reduction=red,
          )
          sel.indices.block_until_ready()
          wall = time.perf_counter() - t
          # ||grad F(0)|| of each solve (the tolerance's scale), from the reference.
          g0 = []
          c = prob.pseudo.shape[1]
          zs = [z for copies in prob.pool_bank[prob.labeled_idx] for z in copies]
          ys = [
            np.eye(c)[lab] for lab in prob.labeled_labels for _ in range(prob.pool_bank.shape[1])
          ]
          rw = 1.0 / prob.pool_bank.shape[1] if red == "sum" else None
          for pick in ref.indices:
            g0.append(
              np.linalg.norm(
                reference.inner_grad_hessian(
                  np.zeros((prob.pool_z.shape[1], c)), zs, ys, l2, row_weight=rw
                )[0]
              )
            )
            zs += list(prob.pool_bank[pick])
            ys += [prob.pseudo[pick]] * prob.pool_bank.shape[1]
          got = np.asarray(sel.indices).tolist()
          rows.append(
            {
              "problem": name,
              "l2": l2,
              "loss_reduction": red,
              "dtype": np.dtype(dtype).name,
              "picks": got,
              "reference_picks": ref.indices.tolist(),
              "agree": got == ref.indices.tolist(),
              "first_disagreement": next(
                (k for k, (a, b) in enumerate(zip(got, ref.indices.tolist())) if a != b), None
              ),
              "reference_min_rel_gap": min(gaps),
              "inner_grad_rel": (np.asarray(sel.inner_grad_norm) / np.array(g0)).tolist(),
              "newton_steps": np.asarray(sel.inner_iterations).tolist(),
              "ihvp_iterations": np.asarray(sel.ihvp_iterations).tolist(),
              "ihvp_residual": np.asarray(sel.cg_residual, np.float64).tolist(),
              "reference_grad_rel": (ref.grad_norms / np.array(g0)).tolist(),
              "reference_ihvp_residual": ref.ihvp_residuals.tolist(),
              "wall_s_with_compile": wall,
            }
          )
          r = rows[-1]
          io.atomic_write_json(args.out, {"partial": True, "runs": rows})  # resumable view
          print(
            f"{name} l2={l2} {red} {r['dtype']}: agree={r['agree']} gap={min(gaps):.2g} "
            f"grad_rel<={max(r['inner_grad_rel']):.2g} res<={max(r['ihvp_residual']):.2g} "
            f"newton={r['newton_steps']} cg={r['ihvp_iterations']}",
            flush=True,
          )
  summary = {}
  for dt in ("float32", "float64"):
    sub = [r for r in rows if r["dtype"] == dt]
    summary[dt] = {
      "agree": sum(r["agree"] for r in sub),
      "of": len(sub),
      "max_inner_grad_rel": max(max(r["inner_grad_rel"]) for r in sub),
      "max_ihvp_residual": max(max(r["ihvp_residual"]) for r in sub),
      "max_reference_grad_rel": max(max(r["reference_grad_rel"]) for r in sub),
      "max_reference_ihvp_residual": max(max(r["reference_ihvp_residual"]) for r in sub),
    }
  res = {
    "command": " ".join(
      [os.path.basename(sys.executable), "-m", "benchmarks.selection_exact_agreement"]
      + (argv if argv is not None else sys.argv[1:])
    ),
    "jax": jax.__version__,
    "settings": {
      "pool": args.pool,
      "b": args.b,
      "copies": 3,
      "labeled": 8,
      "inner_tol": 1e-6,
      "ihvp_rtol": 1e-4,
    },
    "summary": summary,
    "runs": rows,
  }
  io.atomic_write_json(args.out, res)
  print(summary)


if __name__ == "__main__":
  main()
