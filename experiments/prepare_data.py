r"""Validates and caches a dataset, prints its statistics, and plots example log-mels.

  python -m experiments.prepare_data --dataset=fsdd --workdir=runs/prepare_fsdd
  python -m experiments.prepare_data --dataset=speech_commands --data_root=/data \
      --workdir=runs/prepare_sc

First run decodes every clip (progress bar) into the waveform cache (FSDD: ~10 s on 2 cores);
later runs load the memory-mapped cache. Writes to the workdir:
  summary.json   per-split / per-class counts, durations before padding, flags, command;
  examples.png   log-mels of a few training clips, clean and with two augmentation draws.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
from absl import app, flags

_DATASET = flags.DEFINE_enum(
  "dataset", "fsdd", ["fsdd", "speech_commands", "speech_commands_sample"], "Dataset."
)
_DATA_ROOT = flags.DEFINE_string(
  "data_root", None, "Data root (default: $BILEVEL_JAX_DATA, else ../shared/data)."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder.", required=True)
_ON_ERROR = flags.DEFINE_enum(
  "on_error",
  "raise",
  ["raise", "skip"],
  "Bad files (unexpected names, unreadable, NaN/Inf or far outside [-1, 1]): 'raise' one "
  "error naming them all, or 'skip' them and list them in summary.json.",
)
_DOWNLOAD = flags.DEFINE_bool("download", False, "FSDD only: download it if absent.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for picking and augmenting the examples.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 5, "Clips shown in examples.png.")


def split_stats(split, class_names) -> dict:
  d = split.durations if split.durations is not None else np.zeros(0)
  counts = (
    np.bincount(split.labels, minlength=len(class_names))
    if len(split.files)
    else (np.zeros(len(class_names), int))
  )
  return {
    "num_clips": len(split.files),
    "num_speakers": len(set(split.speakers.tolist())),
    "per_class": {c: int(n) for c, n in zip(class_names, counts)},
    "duration_s": (
      {
        "min": float(d.min()),
        "mean": float(d.mean()),
        "median": float(np.median(d)),
        "max": float(d.max()),
        "frac_longer_than_1s": float(np.mean(d > 1.0)),
      }
      if d.size
      else None
    ),
  }


def print_stats(name: str, stats: dict) -> None:
  print(f"\n== {name} ==")
  splits = list(stats)
  header = f"{'class':>10} " + " ".join(f"{s:>10}" for s in splits)
  print(header)
  classes = list(next(iter(stats.values()))["per_class"])
  for c in classes:
    print(f"{c:>10} " + " ".join(f"{stats[s]['per_class'][c]:>10d}" for s in splits))
  print(f"{'total':>10} " + " ".join(f"{stats[s]['num_clips']:>10d}" for s in splits))
  print(f"{'speakers':>10} " + " ".join(f"{stats[s]['num_speakers']:>10d}" for s in splits))
  print("\nDurations before pad/crop to 1 s (seconds):")
  for s in splits:
    d = stats[s]["duration_s"]
    if d:
      print(
        f"  {s:>10}: min {d['min']:.3f}  mean {d['mean']:.3f}  median {d['median']:.3f}  "
        f"max {d['max']:.3f}  longer than 1 s: {100 * d['frac_longer_than_1s']:.1f}%"
      )


def _describe(p, i: int) -> str:
  parts = []
  if bool(p.apply_gain[i]):
    parts.append(f"gain x{float(p.gain[i]):.2f}")
  if bool(p.apply_speed[i]):
    parts.append(f"speed x{float(p.speed[i]):.2f}")
  if bool(p.apply_shift[i]):
    parts.append(f"shift {1000 * int(p.shift[i]) / 16000:+.0f} ms")
  if bool(p.apply_noise[i]):
    parts.append(f"noise {float(p.snr_db[i]):.0f} dB SNR")
  return "\n".join(parts) if parts else "(no augmentation)"


def plot_examples(path, dataset, noise, seed: int, num: int) -> dict:
  """Clean and augmented log-mels of `num` training clips of distinct classes."""
  import jax  # pylint: disable=import-outside-toplevel
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  from bilevel_jax import audio  # pylint: disable=import-outside-toplevel
  from bilevel_jax.utils import io  # pylint: disable=import-outside-toplevel

  split = dataset.train if len(dataset.train.files) else dataset.test
  rng = np.random.default_rng(seed)
  classes = rng.permutation(np.unique(split.labels))[:num]
  idx = np.array([rng.choice(np.flatnonzero(split.labels == c)) for c in classes])
  idx = np.sort(idx)
  x = np.asarray(split.waveforms[idx])  # (num, 16000)
  key = jax.random.key(seed)
  rows = [("clean", np.asarray(jax.jit(audio.featurize)(x)), None)]
  aug = jax.jit(audio.augment, static_argnames="return_params")
  for r, k in enumerate(jax.random.split(key, 2)):
    wav, params = aug(k, x, noise, return_params=True)
    rows.append((f"augmented #{r + 1}", np.asarray(jax.jit(audio.featurize)(wav)), params))
  fig, axes = plt.subplots(
    len(rows),
    len(idx),
    figsize=(2.4 * len(idx) + 1, 2.4 * len(rows)),
    squeeze=False,
    sharex=True,
    sharey=True,
    layout="constrained",
  )
  for r, (label, feats, params) in enumerate(rows):
    for j, i in enumerate(idx):
      ax = axes[r, j]
      im = ax.imshow(
        feats[j, :, :, 0],
        origin="lower",
        aspect="auto",
        vmin=0.0,
        vmax=1.3,
        cmap="magma",
        extent=(0, 1, 0, 32),
      )
      if r == 0:
        ax.set_title(f"'{dataset.class_names[split.labels[i]]}' ({split.speakers[i]})", fontsize=9)
      else:
        ax.text(
          0.03,
          0.97,
          _describe(params, j),
          transform=ax.transAxes,
          fontsize=7,
          va="top",
          color="white",
        )
      if r == len(rows) - 1:
        ax.set_xlabel("time (s)", fontsize=8)
      if j == 0:
        ax.set_ylabel(f"{label}\nmel band", fontsize=8)
      ax.tick_params(labelsize=7)
  fig.colorbar(im, ax=axes, shrink=0.6, label="(dB + 100) / 100")
  fig.suptitle(
    f"{dataset.name}: log-mel features (32 x 32), clean and two augmentation draws (seed {seed})",
    fontsize=10,
  )
  io.atomic_savefig(fig, path, dpi=110)  # unique temporary name: two runs may meet here
  plt.close(fig)
  return {"files": [split.files[i] for i in idx]}


def run(
  dataset_name: str,
  data_root: str | None,
  workdir: str,
  *,
  on_error: str = "raise",
  download: bool = False,
  seed: int = 0,
  num_examples: int = 5,
) -> dict:
  """Loads (validating and caching) the dataset and writes summary.json and examples.png."""
  import pathlib  # pylint: disable=import-outside-toplevel

  from bilevel_jax import data  # pylint: disable=import-outside-toplevel
  from bilevel_jax.data import core  # pylint: disable=import-outside-toplevel
  from bilevel_jax.utils import io  # pylint: disable=import-outside-toplevel

  workdir = pathlib.Path(workdir)
  ds = data.load_dataset(dataset_name, data_root, on_error=on_error, download=download)
  # Speech Commands carries its own noise folder; FSDD borrows it from the data root.
  noise = data.load_background_noise(ds.root if dataset_name != "fsdd" else data_root)
  stats = {
    s: split_stats(getattr(ds, s), ds.class_names)
    for s in core.SPLIT_ORDER
    if getattr(ds, s) is not None
  }
  print_stats(ds.name, stats)
  if ds.missing_classes:
    print(
      f"\nPartial copy: {len(ds.missing_classes)} of {len(ds.class_names)} classes have no "
      f"folder (their labels are kept, with no clips): {', '.join(ds.missing_classes)}"
    )
  if ds.skipped:
    print(f"\nSkipped {len(ds.skipped)} bad file(s):")
    for f, reason in ds.skipped:
      print(f"  {f}: {reason}")
  print(f"\nBackground noise: {noise.shape[0]} recordings x {noise.shape[1] / 16000:.1f} s")
  examples = plot_examples(workdir / "examples.png", ds, noise, seed, num_examples)
  summary = {
    "command": " ".join(["python -m experiments.prepare_data"] + sys.argv[1:]),
    "dataset": ds.name,
    "root": ds.root,
    "class_names": list(ds.class_names),
    "splits": stats,
    "skipped": [list(s) for s in ds.skipped],
    "missing_classes": list(ds.missing_classes),
    "noise_shape": list(noise.shape),
    "examples": examples,
    "flags": {
      "dataset": dataset_name,
      "data_root": data_root,
      "on_error": on_error,
      "download": download,
      "seed": seed,
      "num_examples": num_examples,
    },
  }
  io.atomic_write_json(workdir / "summary.json", summary)
  print(f"\nWrote {workdir / 'summary.json'} and {workdir / 'examples.png'}")
  return summary


def main(argv):
  del argv
  logging.getLogger("bilevel_jax").setLevel(logging.INFO)
  run(
    _DATASET.value,
    _DATA_ROOT.value,
    _WORKDIR.value,
    on_error=_ON_ERROR.value,
    download=_DOWNLOAD.value,
    seed=_SEED.value,
    num_examples=_NUM_EXAMPLES.value,
  )


if __name__ == "__main__":
  app.run(main)
