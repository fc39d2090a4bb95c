r"""Copies a finished run from its workdir (under runs/, git-ignored) into results/ (committed).

  python -m experiments.publish --run=runs/al_fsdd_cpu --to=results/active_learning/fsdd_cpu
  python -m experiments.publish --run=runs/bilevel_evidence --to=results/bilevel_evidence

Experiments write into their --workdir; results/ is only the published record. Copied: the
files a result folder keeps (JSON, markdown, LaTeX, PNG, logs named *.log), keeping the folder
structure; left behind: caches and model files (models/, logs/ with TensorBoard events, *.npz,
*.npy, locks, temporaries). Each file is written atomically. Active-learning result files
(format bilevel_jax.al/1) must be complete unless --partial (e.g. publishing a comparison that
is still running, as its README then says).
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Iterable

from bilevel_jax.utils import io

KEEP_SUFFIXES = (".json", ".md", ".tex", ".png", ".log", ".txt", ".csv")
SKIP_DIRS = ("models", "logs", "checkpoints", "ntk_cache")


def files_to_publish(run: pathlib.Path) -> list[pathlib.Path]:
  """Paths relative to `run` of the files a result folder keeps, sorted."""
  out = []
  for path in sorted(run.rglob("*")):
    rel = path.relative_to(run)
    if not path.is_file() or any(part in SKIP_DIRS for part in rel.parts[:-1]):
      continue
    if ".tmp" in path.name or path.suffix not in KEEP_SUFFIXES:
      continue
    out.append(rel)
  return out


def incomplete_results(run: pathlib.Path, files: Iterable[pathlib.Path]) -> list[str]:
  """Active-learning result files (format bilevel_jax.al/...) whose run has not finished."""
  bad = []
  for rel in files:
    if rel.suffix != ".json":
      continue
    record = io.read_json(run / rel)
    if (
      isinstance(record, dict)
      and str(record.get("format", "")).startswith("bilevel_jax.al/")
      and not record.get("complete", False)
    ):
      bad.append(str(rel))
  return bad


def publish(
  run: str | pathlib.Path, to: str | pathlib.Path, *, partial: bool = False, dry_run: bool = False
) -> list[pathlib.Path]:
  """Copies the result files of `run` into `to`; returns the destination paths."""
  run, to = pathlib.Path(run), pathlib.Path(to)
  if not run.is_dir():
    raise FileNotFoundError(f"--run={run} is not a folder (expected a run's workdir).")
  if run.resolve() == to.resolve():
    raise ValueError(f"--run and --to are the same folder ({run}).")
  files = files_to_publish(run)
  if not files:
    raise ValueError(f"--run={run} holds no result files ({', '.join(KEEP_SUFFIXES)}).")
  unfinished = incomplete_results(run, files)
  if unfinished and not partial:
    raise ValueError(
      f"--run={run} has {len(unfinished)} unfinished active-learning result(s) "
      f"(e.g. {unfinished[0]}); resume the run first or pass --partial."
    )
  written = []
  for rel in files:
    dest = to / rel
    written.append(dest)
    if dry_run:
      continue
    dest.parent.mkdir(parents=True, exist_ok=True)
    io.atomic_write_bytes(dest, (run / rel).read_bytes())
  return written


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--run", required=True, help="The run's workdir.")
  ap.add_argument("--to", required=True, help="Destination folder under results/.")
  ap.add_argument(
    "--partial", action="store_true", help="Allow incomplete active-learning results."
  )
  ap.add_argument("--dry_run", action="store_true", help="List what would be copied only.")
  args = ap.parse_args(argv)
  written = publish(args.run, args.to, partial=args.partial, dry_run=args.dry_run)
  for path in written:
    print(path)
  print(
    f"{'would copy' if args.dry_run else 'copied'} {len(written)} files from {args.run} "
    f"to {args.to}"
  )


if __name__ == "__main__":
  main()
