"""Times the paper authors' own PyTorch selection (`BilevelCoreset.build_with_nystrom_proxy`).

Runs in a separate Python environment with torch (no JAX needed) and imports the authors' code
from a checkout given on the command line; none of their code is in this repository. Driven by
`benchmarks/selection_anchor.py`, which writes the problem (.npy) and runs ours on the same data.

"Kernel already cached": the Nystrom features of every pool point and of its A augmented copies
are precomputed (`pool_z.npy`, `pool_bank.npy`), so the authors' `select_nystrom_batch` (landmark
kernel + SVD) is skipped and `map_to_nystrom_features` is a table look-up; everything else
(1000 full-batch Adam steps on the growing bank, SciPy CG with torch double-backward HVPs, scores
by a second backward over per-point weights, presampling of the picked point's copies) is theirs,
unchanged. The authors' dataset / loader plumbing is kept: items are (pool index, copy number).

  TORCH_VENV/bin/python benchmarks/selection_anchor_torch.py \
      --authors_repo=AUTHORS_REPO --data=ANCHOR_DIR --out=ANCHOR_DIR/torch.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument(
    "--authors_repo",
    required=True,
    help="checkout of zalanborsos/bilevel_coresets (bilevel_coreset.py, models.py)",
  )
  ap.add_argument("--data", required=True, help="folder written by selection_anchor.py")
  ap.add_argument("--out", required=True)
  ap.add_argument("--inner_steps", type=int, default=1000)
  ap.add_argument("--cg_steps", type=int, default=30)
  ap.add_argument("--n_bilevel", type=int, default=9)
  ap.add_argument(
    "--inner_reg",
    type=float,
    default=1e-4,
    help="their weight_decay / penalty inner_reg * ||theta||^2 / 2",
  )
  ap.add_argument("--repeats", type=int, default=1)
  ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
  args = ap.parse_args(argv)
  for f in ("bilevel_coreset.py", "models.py"):
    if not os.path.isfile(os.path.join(args.authors_repo, f)):
      raise SystemExit(
        f"--authors_repo={args.authors_repo!r} has no {f}; expected a checkout "
        "of zalanborsos/bilevel_coresets"
      )
  for f in ("pool_z.npy", "pool_bank.npy", "targets.npy", "labeled_idx.npy"):
    if not os.path.isfile(os.path.join(args.data, f)):
      raise SystemExit(f"--data={args.data!r} has no {f}; run benchmarks/selection_anchor.py")
  sys.path.insert(0, args.authors_repo)
  import torch
  import bilevel_coreset  # pylint: disable=import-error
  import models  # pylint: disable=import-error

  if args.threads:
    torch.set_num_threads(args.threads)

  pool_z = np.load(os.path.join(args.data, "pool_z.npy"))  # (P, m) float32
  pool_bank = np.load(os.path.join(args.data, "pool_bank.npy"))  # (P, A, m) float32
  targets = np.load(os.path.join(args.data, "targets.npy"))  # (P, c) label distributions
  lab = np.load(os.path.join(args.data, "labeled_idx.npy"))  # (L,)
  p, n_aug, m = pool_bank.shape
  c = targets.shape[1]
  # Their loss applies softmax to the target "logits" (their example passes 1000 * one-hot), so
  # the log of a distribution gives it back exactly; 1e-30 keeps one-hot rows finite.
  target_logits = torch.from_numpy(np.log(np.maximum(targets, 1e-30)).astype(np.float32))

  class Clean(torch.utils.data.Dataset):
    targets = list(range(p))  # only len() is used

    def __len__(self):
      return p

    def __getitem__(self, i):
      return torch.tensor([i, -1]), target_logits[i]

  class Augmented(Clean):
    """Each fetch of point i yields its next cached copy, as a random transform would."""

    def __init__(self):
      self.count = np.zeros(p, np.int64)

    def __getitem__(self, i):
      k = self.count[i] % n_aug
      self.count[i] += 1
      return torch.tensor([i, k]), target_logits[i]

  timers = {"inverse_hvp_s": 0.0, "feature_lookup_s": 0.0, "hvp_calls": 0}

  class Cached(bilevel_coreset.BilevelCoreset):
    """Their class with the kernel cached: features come from the precomputed tables."""

    def select_nystrom_batch(self, *unused, **unused_kw):
      pass

    def map_to_nystrom_features(self, x, kernel_fn_np):
      s = time.perf_counter()
      i, k = x[:, 0], x[:, 1]
      out = np.where((k < 0)[:, None], pool_z[i], pool_bank[i, np.maximum(k, 0)])
      timers["feature_lookup_s"] += time.perf_counter() - s
      return out.astype(np.float32)

    def hvp(self, loss, params, v):
      timers["hvp_calls"] += 1
      return super().hvp(loss, params, v)

    def inverse_hvp(self, loss, params, v):
      s = time.perf_counter()
      out = super().inverse_hvp(loss, params, v)
      timers["inverse_hvp_s"] += time.perf_counter() - s
      return out

  def loss_fn(pred, true, weights=None):
    # The loss of their batch_active_learning/nystrom_example.py (soft targets given as logits).
    per = -torch.sum(torch.log_softmax(pred, dim=1) * torch.softmax(true, dim=1), dim=1)
    return torch.mean(per) if weights is None else torch.mean(per * weights)

  def loader_creator_fn(dataset, shuffle=False):
    return torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=0, shuffle=shuffle)

  # Warm-up outside the timing: the first torch.optim.Adam imports torch._dynamo (~1 s).
  warm = torch.nn.Linear(2, 2)
  torch.optim.Adam(warm.parameters(), lr=1e-3).step()

  runs = []
  for rep in range(args.repeats):
    for key in timers:
      timers[key] = 0
    torch.manual_seed(rep)
    np.random.seed(rep)  # their val_inds draw
    model = models.LogisticRegression(m, c)
    with torch.no_grad():  # ours starts from w = 0 too
      model.fc.weight.zero_()
      model.fc.bias.zero_()
    bc = Cached(
      loss_fn, loss_fn, out_dim=c, max_inner_it=args.inner_steps, max_conj_grad_it=args.cg_steps
    )
    s = time.perf_counter()
    inds = bc.build_with_nystrom_proxy(
      Augmented(),
      Clean(),
      lab,
      args.n_bilevel,
      None,
      loader_creator_fn,
      model,
      nystrom_features_dim=m,
      val_size=p - len(lab),
      inner_reg=args.inner_reg,
      nr_presampled_transforms=n_aug,
      device="cpu",
    )
    total = time.perf_counter() - s
    runs.append(
      {
        "total_s": total,
        "picks": [int(v) for v in inds[len(lab) :]],
        "inverse_hvp_s": timers["inverse_hvp_s"],
        "feature_lookup_s": timers["feature_lookup_s"],
        "cg_matvecs": int(timers["hvp_calls"]),
        "threads": torch.get_num_threads(),
      }
    )
    print(json.dumps(runs[-1]), flush=True)
  result = {
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
    "settings": {
      "inner_steps": args.inner_steps,
      "cg_steps": args.cg_steps,
      "n_bilevel": args.n_bilevel,
      "inner_reg": args.inner_reg,
      "pool": p,
      "m": m,
      "c": c,
      "copies": n_aug,
      "labeled": len(lab),
    },
    "runs": runs,
  }
  with open(args.out, "w") as f:
    json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
