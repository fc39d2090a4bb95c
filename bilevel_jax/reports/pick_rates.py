"""Per-round misclassified-pick rate against the pool error rate, per strategy (issue 14).

A strategy that labels where the model errs picks misclassified points at least as often as
the pool's error rate (ratio >= 1); the ratio falling below 1 means batches of points the
model already gets right. Values come from each round's `pick_diagnostics` block
(`bilevel_jax.al.diagnostics`). Rounds of older files without it fall back to their
`picks_misclassified` and `pool_accuracy` fields, whose error rate is over the whole training
set (labeled points included, at most L/N = 60/2690 = 2.2 points from the pool's rate); such
points are drawn hollow and counted in `approximate`. Rounds with neither are skipped.
"""

from __future__ import annotations

import collections
import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from bilevel_jax.reports import tables  # pylint: disable=g-import-not-at-top,wrong-import-position


def round_rates(entry: dict[str, Any]) -> tuple[float, float, bool] | None:
  """(misclassified-pick rate, pool error rate, exact) of one round, or None without data."""
  d = entry.get("pick_diagnostics")
  if d and d.get("pool_error_rate") is not None:
    return float(d["pick_misclassified_rate"]), float(d["pool_error_rate"]), True
  picks = entry.get("picks")
  if (
    picks
    and entry.get("picks_misclassified") is not None
    and entry.get("pool_accuracy") is not None
  ):
    return entry["picks_misclassified"] / len(picks), 1.0 - float(entry["pool_accuracy"]), False
  return None


def collect(records: list[dict[str, Any]]) -> dict[str, Any]:
  """{strategy: {num_labeled: {pick_rate, pool_error_rate, ratio (means over seeds), seeds,
  approximate}}} in the paper's strategy order; strategies without any data are left out."""
  per = collections.defaultdict(lambda: collections.defaultdict(list))
  for rec in records:
    for entry in rec.get("rounds", []):
      got = round_rates(entry)
      if got is not None:
        per[rec["strategy"]][int(entry["num_labeled"])].append(got)
  out = {}
  for name in tables.strategy_order(per):
    out[name] = {}
    for n in sorted(per[name]):
      v = np.asarray([(p, q) for p, q, _ in per[name][n]], np.float64)
      ratios = [p / q for p, q in v if q > 0]
      out[name][n] = {
        "pick_rate": float(v[:, 0].mean()),
        "pool_error_rate": float(v[:, 1].mean()),
        "ratio": float(np.mean(ratios)) if ratios else None,
        "seeds": len(v),
        "approximate": sum(not e for _, _, e in per[name][n]),
      }
  return out


def plot(rates: dict[str, Any], path: str | pathlib.Path, *, title: str = "") -> pathlib.Path:
  """Left: misclassified-pick rate (solid) and pool error rate (dashed) per strategy, means over
  seeds; right: their ratio (mean of per-seed ratios). Hollow markers: older files."""
  fig, (ax, ax_ratio) = plt.subplots(1, 2, figsize=(9.0, 3.6))
  approx_any = False
  for name, cells in rates.items():
    x = np.asarray(sorted(cells))
    pick = np.asarray([cells[n]["pick_rate"] for n in x])
    pool = np.asarray([cells[n]["pool_error_rate"] for n in x])
    ratio = np.asarray([np.nan if cells[n]["ratio"] is None else cells[n]["ratio"] for n in x])
    hollow = np.asarray([cells[n]["approximate"] > 0 for n in x])
    approx_any |= bool(hollow.any())
    label = tables.DISPLAY.get(name, name)
    (line,) = ax.plot(x, 100 * pick, lw=1.5, label=f"{label} picks")
    color = line.get_color()
    ax.plot(x, 100 * pool, ls="--", lw=1.0, color=color, label=f"{label} pool")
    ax_ratio.plot(x, ratio, lw=1.5, color=color, label=label)
    for a, y in ((ax, 100 * pick), (ax, 100 * pool), (ax_ratio, ratio)):
      a.scatter(x[~hollow], y[~hollow], s=12, color=color)
      a.scatter(x[hollow], y[hollow], s=14, facecolors="none", edgecolors=color)
  ax.set_xlabel("labels when the batch is picked")
  ax.set_ylabel("misclassified by the round's model (%)")
  ax_ratio.axhline(1.0, color="k", lw=0.6)
  ax_ratio.set_xlabel("labels when the batch is picked")
  ax_ratio.set_ylabel("pick rate / pool error rate")
  for a in (ax, ax_ratio):
    a.grid(alpha=0.3)
  ax.legend(fontsize=6, ncol=2)
  ax_ratio.legend(fontsize=6)
  note = (
    "hollow: older files, error over the whole training set (labeled included)"
    if approx_any
    else ""
  )
  if title or note:
    fig.suptitle("; ".join(t for t in (title, note) if t), fontsize=8)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(path, dpi=150)
  plt.close(fig)
  return path
