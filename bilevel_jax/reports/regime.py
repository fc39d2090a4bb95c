"""A strategy's gain over baselines as a function of how accurate the round model is.

Each (seed, round r) of the strategy gives one point: x = the round-r model's accuracy on the
pool (`pool_accuracy` in the round JSON: the model whose pseudo-labels and predictions the
round-r selection used) and y = the strategy's test accuracy at round r + 1 minus a baseline's
(same seed), in points. A selection rule that needs accurate pseudo-labels should gain more as x
grows. Observational: x grows with the round, so label count and model accuracy are confounded.
"""

from __future__ import annotations

import collections
from typing import Any, Sequence

import numpy as np
from scipy import stats

# Pool-accuracy bins (fractions), [lo, hi).
BINS = ((0.0, 0.5), (0.5, 0.7), (0.7, 1.01))


def _by_seed_round(records, strategy):
  out = collections.defaultdict(dict)
  for rec in records:
    if rec["strategy"] == strategy:
      for rnd in rec["rounds"]:
        out[int(rec["seed"])][int(rnd["round"])] = rnd
  return out


def gain_points(
  records: list[dict[str, Any]], strategy: str, baseline: str
) -> tuple[np.ndarray, np.ndarray]:
  """(x, y): x (n,) pool accuracy of `strategy`'s round-r model (fraction), y (n,) its test
  accuracy at round r + 1 minus `baseline`'s at round r + 1 (points), over every (seed, r) both
  have; rounds without `pool_accuracy` are left out."""
  ours, base = _by_seed_round(records, strategy), _by_seed_round(records, baseline)
  xs, ys = [], []
  for seed, rounds in sorted(ours.items()):
    for r, rnd in sorted(rounds.items()):
      nxt, other = rounds.get(r + 1), base.get(seed, {}).get(r + 1)
      if nxt is None or other is None or rnd.get("pool_accuracy") is None:
        continue
      xs.append(float(rnd["pool_accuracy"]))
      ys.append(100.0 * (float(nxt["test_accuracy"]) - float(other["test_accuracy"])))
  return np.asarray(xs), np.asarray(ys)


def gain_by_accuracy(
  records: list[dict[str, Any]],
  strategy: str,
  baselines: Sequence[str],
  bins: Sequence[tuple[float, float]] = BINS,
) -> dict[str, Any]:
  """{baseline: {n, spearman_rho, spearman_p, bins: [{lo, hi, n, mean_gain, wins, losses}]}}."""
  out = {}
  for baseline in baselines:
    x, y = gain_points(records, strategy, baseline)
    if len(x) == 0:
      continue
    rho, p = stats.spearmanr(x, y) if len(x) > 2 else (float("nan"), float("nan"))
    cells = []
    for lo, hi in bins:
      m = (x >= lo) & (x < hi)
      cells.append(
        {
          "lo": lo,
          "hi": hi,
          "n": int(m.sum()),
          "mean_gain": float(y[m].mean()) if m.any() else None,
          "wins": int((y[m] > 0).sum()),
          "losses": int((y[m] < 0).sum()),
        }
      )
    out[baseline] = {
      "n": int(len(x)),
      "spearman_rho": float(rho),
      "spearman_p": float(p),
      "bins": cells,
    }
  return out


def markdown(name: str, table: dict[str, Any]) -> str:
  """One row per baseline: gain (wins-losses) per pool-accuracy bin and Spearman's rho."""
  bins = next(iter(table.values()))["bins"] if table else []
  head = " | ".join(f"pool acc {c['lo']:.1f}-{min(c['hi'], 1.0):.1f}" for c in bins)
  lines = [f"| {name} minus | {head} | n | Spearman rho (p) |", "|---|" + "---|" * (len(bins) + 2)]

  def fmt(c):
    if not c["n"]:
      return "--"
    return f"{c['mean_gain']:+.1f} ({c['wins']}-{c['losses']}, n={c['n']})"

  for base, row in table.items():
    lines.append(
      f"| {base} | "
      + " | ".join(fmt(c) for c in row["bins"])
      + f" | {row['n']} | {row['spearman_rho']:+.2f} ({row['spearman_p']:.2g}) |"
    )
  return "\n".join(lines)
