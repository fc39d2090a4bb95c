"""Figures 2 and 3 of the paper from AL results (matplotlib, Agg backend)."""

from __future__ import annotations

import pathlib
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from bilevel_jax.reports import tables  # pylint: disable=g-import-not-at-top,wrong-import-position
from bilevel_jax.utils import io  # pylint: disable=g-import-not-at-top,wrong-import-position


MAX_XTICKS = 12


def spread_description(table: dict[str, dict[int, tables.Cell]]) -> str:
  """What Figure 3's lines and bands are, honest about the number of seeds."""
  most = max(c.n for cells in table.values() for c in cells.values())
  if most == 1:
    return "one seed (n=1): single runs, no spread shown"
  return "mean over seeds ± 1 sample std (band; n per strategy in the legend)"


def label_ticks(budgets: list[int]) -> list[int]:
  """Integer x ticks at the label counts (every k-th one when there are many)."""
  budgets = sorted(set(budgets))
  step = -(-len(budgets) // MAX_XTICKS)
  return budgets[::step]


def figure3(
  table: dict[str, dict[int, tables.Cell]], path: str | pathlib.Path, *, title: str = ""
) -> pathlib.Path:
  """Test accuracy (%) vs number of labels per strategy: mean over seeds with a +-1 std band
  (sample std, ddof=1; no band for one seed); the legend gives the seeds per point
  (n=k), or the fewest of any point (n>=k) when rounds have different counts. The x ticks
  are the label counts of the rounds.

  Args:
    table: {strategy: {num_labeled: Cell}} from `tables.aggregate`.
    path: PNG to write.
    title: optional title; `spread_description(table)` says what the lines and bands are.
  """
  fig, ax = plt.subplots(figsize=(5.0, 3.6))
  for name, cells in table.items():
    x = np.asarray(sorted(cells))
    mean = np.asarray([cells[b].mean for b in x])
    std = np.asarray([cells[b].std for b in x])
    counts = {cells[b].n for b in x}
    seeds = f"n={counts.pop()}" if len(counts) == 1 else f"n>={min(counts)}"
    (line,) = ax.plot(
      x, mean, marker="o", ms=3, label=f"{tables.DISPLAY.get(name, name)} ({seeds})"
    )
    ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)
  ax.set_xticks(label_ticks([b for cells in table.values() for b in cells]))
  ax.set_xlabel("number of labeled samples")
  ax.set_ylabel("test accuracy (%)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  if title:
    ax.set_title(title, fontsize=9)
  fig.tight_layout()
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  io.atomic_savefig(fig, path, dpi=150)
  plt.close(fig)
  return path


def first_round_counts(npz: dict[str, np.ndarray]) -> dict[str, Any]:
  """What Figure 2 reports about the first-round picks.

  Args:
    npz: arrays saved by the AL loop at round 0: embeddings (N, E), probs (N, C), labels (N,),
      labeled_idx (L,), picks (b,), test_accuracy ().
  """
  pred = np.asarray(npz["probs"]).argmax(-1)
  labels = np.asarray(npz["labels"])
  picks = np.asarray(npz["picks"])
  return {
    "num_picks": int(len(picks)),
    "classes_covered": int(len(np.unique(labels[picks]))),
    "misclassified": int(np.sum(pred[picks] != labels[picks])),
    "picks": picks.tolist(),
    "pick_labels": labels[picks].tolist(),
    "pick_predictions": pred[picks].tolist(),
    "initial_pool": np.asarray(npz["labeled_idx"]).tolist(),
    "initial_model_test_accuracy": float(npz["test_accuracy"]),
    "initial_model_pool_accuracy": float(np.mean(pred == labels)),
  }


FIGURE2_POINTS_VERSION = 1  # bump when figure2_points' computation changes


def figure2_inputs_sha256(
  npz_path: str | pathlib.Path, *, seed: int = 0, perplexity: float = 30.0
) -> str:
  """sha256 of everything the t-SNE points depend on: the round-0 file's bytes, the t-SNE
  settings and FIGURE2_POINTS_VERSION (stored in the points as `inputs_sha256`)."""
  import hashlib  # pylint: disable=import-outside-toplevel
  import json  # pylint: disable=import-outside-toplevel

  h = hashlib.sha256(
    json.dumps(
      {"version": FIGURE2_POINTS_VERSION, "seed": seed, "perplexity": perplexity}, sort_keys=True
    ).encode()
  )
  with open(npz_path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def figure2_points(
  npz_path: str | pathlib.Path, *, seed: int = 0, perplexity: float = 30.0
) -> dict[str, Any]:
  """t-SNE of the round-0 model's last-layer embeddings, as a JSON-able dict.

  The round-0 file holds (N, E) embeddings (~0.7 MB for FSDD) and is not committed; these
  points (N x 2 coordinates, predictions, the initial pool and the picks) are, so that
  Figure 2 can be redrawn from committed results alone. Keys: xy (N, 2), pred (N,),
  num_classes, labeled_idx, picks, counts (see `first_round_counts`), source, inputs_sha256
  (`figure2_inputs_sha256`: a report reuses the points while it matches).
  """
  digest = figure2_inputs_sha256(npz_path, seed=seed, perplexity=perplexity)
  from sklearn.manifold import TSNE  # pylint: disable=g-import-not-at-top

  with np.load(npz_path) as f:
    npz = {k: f[k] for k in f.files}
  emb = np.asarray(npz["embeddings"], np.float64)
  perplexity = min(perplexity, (emb.shape[0] - 1) / 3.0)
  tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
  xy = tsne.fit_transform(emb)  # (N, 2)
  probs = np.asarray(npz["probs"])
  return {
    "xy": np.round(xy, 3).tolist(),
    "pred": probs.argmax(-1).tolist(),
    "num_classes": int(probs.shape[-1]),
    "labeled_idx": np.asarray(npz["labeled_idx"]).tolist(),
    "picks": np.asarray(npz["picks"]).tolist(),
    "counts": first_round_counts(npz),
    "tsne": {"perplexity": perplexity, "seed": seed},
    "source": str(npz_path),
    "inputs_sha256": digest,
  }


def figure2_caption(points: dict[str, Any]) -> str:
  """What Figure 2 shows, printed under it."""
  n, lab, picks = len(points["xy"]), len(points["labeled_idx"]), len(points["picks"])
  return (
    f"t-SNE of the round-0 model's last-layer embeddings of all {n} training-pool clips. "
    f"Dot colour: the class the round-0 model (trained on the {lab} initial labels) "
    f"predicts for the clip (legend at the right). Black squares: the {lab} initial "
    f"labeled clips; red stars: the {picks} clips picked in the first round."
  )


def plot_figure2(
  points: dict[str, Any],
  path: str | pathlib.Path,
  *,
  title: str = "",
  class_names: list[str] | None = None,
) -> None:
  """Draws Figure 2 from `figure2_points` output: points colored by predicted class (with a
  class legend), the initial labeled pool as black squares, the first-round picks as red
  stars, and a caption saying so (`figure2_caption`)."""
  import textwrap  # pylint: disable=import-outside-toplevel

  xy, pred = np.asarray(points["xy"], np.float64), np.asarray(points["pred"])
  num_classes, counts = points["num_classes"], points["counts"]
  fig, ax = plt.subplots(figsize=(6.2, 5.4))
  cmap = plt.get_cmap("tab10" if num_classes <= 10 else "nipy_spectral")

  def colour(k):
    return cmap(k / max(num_classes - 1, 1)) if num_classes > 10 else cmap(k % 10)

  ax.scatter(xy[:, 0], xy[:, 1], c=[colour(k) for k in pred], s=4, alpha=0.6, lw=0)
  names = class_names or [str(k) for k in range(num_classes)]
  handles = [
    matplotlib.lines.Line2D([], [], ls="", marker="o", ms=4, color=colour(k), label=names[k])
    for k in range(num_classes)
  ]
  class_legend = ax.legend(
    handles=handles,
    title="predicted\nclass",
    fontsize=6,
    title_fontsize=6,
    loc="upper left",
    bbox_to_anchor=(1.01, 1.0),
    ncols=1 if num_classes <= 12 else 2,
    frameon=False,
  )
  ax.add_artist(class_legend)
  lab = np.asarray(points["labeled_idx"])
  ax.scatter(
    xy[lab, 0],
    xy[lab, 1],
    marker="s",
    s=36,
    facecolors="none",
    edgecolors="k",
    lw=1.2,
    label="initial labeled pool",
  )
  picks = np.asarray(points["picks"])
  ax.scatter(
    xy[picks, 0],
    xy[picks, 1],
    marker="*",
    s=140,
    c="red",
    edgecolors="k",
    lw=0.6,
    label="first-round picks",
  )
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(fontsize=7, loc="best")
  acc = 100 * counts["initial_model_test_accuracy"]
  ax.set_title(
    title
    or (
      f"Figure 2: first-round picks cover {counts['classes_covered']} "
      f"classes, {counts['misclassified']}/{counts['num_picks']} "
      f"misclassified (initial model {acc:.0f}% test)"
    ),
    fontsize=8,
  )
  fig.text(
    0.02,
    0.01,
    "\n".join(textwrap.wrap(figure2_caption(points), 110)),
    fontsize=6,
    va="bottom",
    ha="left",
  )
  # Fixed margins: room for the class legend at the right and the caption below.
  fig.subplots_adjust(left=0.03, right=0.86, top=0.94, bottom=0.13)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  io.atomic_savefig(fig, path, dpi=150)
  plt.close(fig)
